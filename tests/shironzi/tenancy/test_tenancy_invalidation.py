"""A registry change made through one Registry reaches another one's caches (another process in production)
within about a second: by the polled event log (SQLite and PostgreSQL) or by Redis pub/sub."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from shironzi.errors import RevokedKeyError, TenantSuspendedError
from shironzi.tenancy import Registry, TenantContext
from shironzi.tenancy import invalidation as inv
from shironzi.tenancy.invalidation import Invalidation, RegistryWatcher


def _within(seconds: float, condition: Callable[[], bool]) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, f"not within {seconds}s"
        time.sleep(0.05)
    return time.monotonic() - started


def _raises(fn: Callable[[], object], error: type[Exception]) -> bool:
    try:
        fn()
    except error:
        return True
    return False


@pytest.mark.parametrize("channel", ["poll", "redis"])
def test_changes_reach_another_registrys_caches_within_two_seconds(
    registry: Registry, admin: TenantContext, channel: str, request: pytest.FixtureRequest
) -> None:
    settings = registry.settings
    if channel == "redis":
        settings = settings.model_copy(update={"redis_url": request.getfixturevalue("redis_url")})
        registry.settings = settings  # the writer publishes
    settings = settings.model_copy(update={"key_cache_ttl_seconds": 60.0, "module_cache_ttl_seconds": 300.0})
    other = Registry.from_settings(settings, run_migrations=False)
    seen: list[Invalidation] = []
    watcher = RegistryWatcher(other, on_change=seen.append)
    assert watcher.backend == channel
    tenant, key = registry.provision_tenant(admin, slug="watched", name="W", industry="ecommerce", plan="enterprise")
    _, second = registry.issue_key(admin, tenant.id, scopes=["read"])
    watcher.start()
    try:
        time.sleep(0.3)  # subscribed / first poll done
        assert other.verify_key(key).tenant_id == tenant.id and other.is_enabled(tenant.id, "trend_forecast")
        registry.revoke_key(admin, key.split("_")[1])
        _within(2.0, lambda: _raises(lambda: other.verify_key(key), RevokedKeyError))
        registry.disable_module(admin, tenant.id, "trend_forecast")
        _within(2.0, lambda: not other.is_enabled(tenant.id, "trend_forecast"))
        assert other.verify_key(second).tenant_id == tenant.id
        registry.suspend(admin, tenant.id)
        _within(2.0, lambda: _raises(lambda: other.verify_key(second), TenantSuspendedError))
        assert any(tenant.id in change.tenants for change in seen)
    finally:
        watcher.stop()
        other.close()


def test_a_change_committed_right_after_start_is_seen_however_late_the_poll_thread_runs(
    registry: Registry, admin: TenantContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream ingestor's CI race: a placement flip committed just after `start()` but before the poll
    thread first ran became part of the thread's baseline and was never applied. The thread here starts only
    after the change is committed; the baseline read by `start()` still makes the change visible."""
    held: list[threading.Thread] = []
    start_thread = threading.Thread.start

    class HeldThread(threading.Thread):
        def start(self) -> None:
            held.append(self)

    monkeypatch.setattr(inv.threading, "Thread", HeldThread)
    tenant, _ = registry.provision_tenant(admin, slug="late", name="L", industry="ecommerce")
    other = Registry.from_settings(registry.settings, run_migrations=False)
    seen: list[Invalidation] = []
    watcher = RegistryWatcher(other, on_change=seen.append)
    watcher.start()
    try:
        registry.suspend(admin, tenant.id)
        (thread,) = held
        start_thread(thread)  # the poll thread runs only now
        _within(3.0, lambda: any(tenant.id in change.key_tenants for change in seen))
    finally:
        watcher.stop()
        other.close()


def test_a_bulk_of_new_events_drops_every_cache_instead_of_reading_them(
    registry: Registry, admin: TenantContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inv, "MAX_EVENTS_READ", 2)
    other = Registry.from_settings(registry.settings, run_migrations=False)
    watcher = RegistryWatcher(other)
    try:
        last = watcher._poll_once(None)
        tenant, key = registry.provision_tenant(admin, slug="bulk", name="B", industry="ecommerce")
        other.verify_key(key)
        assert len(other.key_cache) == 1
        assert watcher._poll_once(last) > last
        assert len(other.key_cache) == 0
    finally:
        other.close()


def test_an_invalidation_survives_the_wire() -> None:
    change = Invalidation(tenants=("t_a",), slugs=("a",), key_tenants=("t_a",), prefixes=("p",))
    assert Invalidation.from_json(change.to_json()) == change
    assert Invalidation.from_json(Invalidation(everything=True).to_json()).everything


def test_one_invalidation_reaches_the_caches_of_every_registry_part(
    registry: Registry, admin: TenantContext
) -> None:
    """The store, module and key parts each hold a cache; one `apply_invalidation` must drop all three."""
    settings = registry.settings.model_copy(update={"key_cache_ttl_seconds": 300.0, "module_cache_ttl_seconds": 300.0})
    other = Registry.from_settings(settings, run_migrations=False)  # no watcher: it hears nothing by itself
    try:
        tenant, key = registry.provision_tenant(admin, slug="parts", name="P", industry="ecommerce")
        assert other.verify_key(key).tenant_id == tenant.id and other.is_enabled(tenant.id, "notifications")
        assert other.tenant_directory()[tenant.id].status == "active"
        registry.disable_module(admin, tenant.id, "notifications")
        registry.suspend(admin, tenant.id)
        assert other.verify_key(key).tenant_id == tenant.id and other.is_enabled(tenant.id, "notifications")
        assert other.tenant_directory()[tenant.id].status == "active"  # all three still cached

        other.apply_invalidation(Invalidation(everything=True))
        with pytest.raises(TenantSuspendedError):
            other.verify_key(key)
        assert not other.is_enabled(tenant.id, "notifications")
        assert other.tenant_directory()[tenant.id].status == "suspended"
    finally:
        other.close()
