"""API keys: format, salted-hash storage, scopes, expiry, revocation and the verification cache."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import UTC, datetime, timedelta

import pytest

from shironzi.errors import (
    ExpiredKeyError,
    InvalidInputError,
    InvalidKeyError,
    MalformedKeyError,
    PermissionDeniedError,
    RevokedKeyError,
    TenantInactiveError,
    TenantSuspendedError,
)
from shironzi.settings import Settings
from shironzi.tenancy import Registry, TenantContext
from shironzi.tenancy.keys import KeyCheckCache
from tests.shironzi.tenancy._fixtures import snapshot

KEY_FORMAT = re.compile(r"^shz_[a-z2-7]{10}_[A-Za-z0-9-]{32}$")


def _tenant(registry: Registry, admin: TenantContext, slug: str = "keyed") -> tuple[str, str]:
    tenant, key = registry.provision_tenant(admin, slug=slug, name="K", industry="ecommerce")
    return tenant.id, key


def test_key_format_and_only_a_salted_hash_is_stored(registry: Registry, admin: TenantContext) -> None:
    tid, first = _tenant(registry, admin)
    record, second = registry.issue_key(admin, tid, scopes=["read", "write"], label="etl")
    for key in (first, second):
        assert KEY_FORMAT.match(key), key
    prefix, secret = second.split("_")[1:]
    assert record.prefix == prefix and record.scopes == ("read", "write") and record.label == "etl"

    dump = repr(snapshot(registry))
    assert secret not in dump and second not in dump and first.split("_")[2] not in dump
    rows = {r[0]: r for r in snapshot(registry)["api_keys"]}
    assert rows[prefix][2] != hashlib.sha256(secret.encode()).hexdigest()  # salted, not a bare digest
    assert len({r[3] for r in rows.values()}) == len(rows)  # a different salt per key


def test_verify_returns_principal_and_rejects_wrong_or_unknown(
    registry: Registry, admin: TenantContext
) -> None:
    tid, _ = _tenant(registry, admin)
    expires = datetime.now(UTC) + timedelta(days=3)
    record, key = registry.issue_key(admin, tid, scopes=["read"], expires_at=expires)
    principal = registry.verify_key(key)
    assert (principal.key_prefix, principal.tenant_id, principal.scopes, principal.is_admin) == (
        record.prefix,
        tid,
        ("read",),
        False,
    )
    assert abs((principal.expires_at - expires).total_seconds()) < 1e-3  # type: ignore[operator]

    wrong_secret = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    with pytest.raises(InvalidKeyError):
        registry.verify_key(wrong_secret)
    unknown_prefix = "shz_aaaaaaaaaa_" + key.split("_")[2]
    with pytest.raises(InvalidKeyError):
        registry.verify_key(unknown_prefix)


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "nope",
        "shz_",
        "shz_abc_def",
        "sk_aaaaaaaaaa_" + "a" * 32,
        "shz_AAAAAAAAAA_" + "a" * 32,
        "shz_aaaaaaaaaa_" + "a" * 31,
        "shz_aaaaaaaaaa_" + "a" * 31 + "_",
        "shz_aaaaaaaaa1_" + "a" * 32,
    ],
)
def test_malformed_keys_are_refused_before_any_lookup(registry: Registry, raw: str) -> None:
    before = snapshot(registry)
    with pytest.raises(MalformedKeyError):
        registry.verify_key(raw)
    assert snapshot(registry) == before


def test_platform_admin_keys_have_no_tenant(registry: Registry, admin: TenantContext) -> None:
    record, key = registry.issue_key(admin, None, scopes=["admin"], label="ops")
    assert record.tenant_id is None and record.is_admin
    principal = registry.verify_key(key)
    assert principal.is_admin and principal.tenant_id is None and principal.scopes == ("admin",)
    assert [k.prefix for k in registry.list_keys(None)] == [record.prefix]
    with pytest.raises(InvalidInputError, match="admin scope"):
        registry.issue_key(admin, None, scopes=["read"])
    tid, _ = _tenant(registry, admin)
    with pytest.raises(PermissionDeniedError):
        registry.revoke_key(TenantContext.for_tenant(tid, actor="x", purpose="y"), record.prefix)


def test_revocation_is_immediate_in_the_revoking_instance(registry: Registry, admin: TenantContext) -> None:
    tid, _ = _tenant(registry, admin)
    record, key = registry.issue_key(admin, tid, scopes=["read"])
    registry.verify_key(key)  # now cached
    revoked = registry.revoke_key(
        TenantContext.for_tenant(tid, actor="owner", purpose="rotate"), record.prefix
    )
    assert revoked.revoked_at is not None
    with pytest.raises(RevokedKeyError):
        registry.verify_key(key)
    assert registry.events(tid)[-1].type == "key_revoked" and registry.events(tid)[-1].actor == "owner"


def test_revocation_reaches_another_instance_within_the_ttl(registry: Registry, admin: TenantContext) -> None:
    ttl = 2.0
    worker = Registry.from_settings(Settings(key_cache_ttl_seconds=ttl))  # another process's registry
    try:
        tid, _ = _tenant(registry, admin)
        record, key = registry.issue_key(admin, tid, scopes=["read"])
        cached_at = time.monotonic()
        assert worker.verify_key(key).key_prefix == record.prefix
        registry.revoke_key(admin, record.prefix)
        assert time.monotonic() - cached_at < ttl, "machine too slow to observe the TTL window"
        assert worker.verify_key(key).key_prefix == record.prefix  # stale but inside the TTL
        time.sleep(ttl - (time.monotonic() - cached_at) + 0.05)
        with pytest.raises(RevokedKeyError):
            worker.verify_key(key)
    finally:
        worker.close()


def test_cache_holds_only_hashes_of_keys(registry: Registry, admin: TenantContext) -> None:
    tid, key = _tenant(registry, admin)
    registry.verify_key(key)
    with pytest.raises(InvalidKeyError):
        registry.verify_key(key[:-1] + ("x" if key[-1] != "x" else "y"))
    entries = registry.key_cache._entries
    assert hashlib.sha256(key.encode()).digest() in entries and len(entries) == 2
    secret = key.split("_")[2]
    assert all(isinstance(k, bytes) and len(k) == 32 for k in entries)
    assert secret not in repr(entries) and key not in repr(entries)


def test_expired_key_is_refused_even_from_the_cache(registry: Registry, admin: TenantContext) -> None:
    tid, _ = _tenant(registry, admin)
    _, key = registry.issue_key(
        admin, tid, scopes=["read"], expires_at=datetime.now(UTC) + timedelta(seconds=0.5)
    )
    assert registry.verify_key(key).tenant_id == tid
    time.sleep(0.6)
    before = snapshot(registry)
    with pytest.raises(ExpiredKeyError):
        registry.verify_key(key)
    assert snapshot(registry) == before
    with pytest.raises(InvalidInputError, match="past"):
        registry.issue_key(admin, tid, scopes=["read"], expires_at=datetime.now(UTC) - timedelta(minutes=1))


def test_suspended_or_offboarded_tenant_keys_are_refused(registry: Registry, admin: TenantContext) -> None:
    tid, key = _tenant(registry, admin)
    registry.verify_key(key)
    registry.suspend(admin, tid)
    with pytest.raises(TenantSuspendedError):
        registry.verify_key(key)
    registry.resume(admin, tid)
    assert registry.verify_key(key).tenant_id == tid
    registry.offboard(admin, tid)
    with pytest.raises(TenantInactiveError):
        registry.verify_key(key)


def test_bad_scopes_are_refused(registry: Registry, admin: TenantContext) -> None:
    tid, _ = _tenant(registry, admin)
    before = snapshot(registry)
    for scopes in ([], ["superuser"], ["read", "delete"]):
        with pytest.raises(InvalidInputError):
            registry.issue_key(admin, tid, scopes=scopes)
    assert snapshot(registry) == before


def test_full_key_cache_evicts_only_the_coldest_entries() -> None:
    cache = KeyCheckCache(60.0, max_entries=4)
    keys = [bytes([i]) * 32 for i in range(6)]
    for key in keys[:4]:
        cache.put(key, outcome="ok", prefix=key.hex()[:10], principal=None, tenant_status="active")
    assert cache.get(keys[0]) is not None  # a hot key: used again, so now the most recent
    cache.put(keys[4], outcome="ok", prefix="p4", principal=None, tenant_status="active")
    cache.put(keys[5], outcome="ok", prefix="p5", principal=None, tenant_status="active")
    assert len(cache) == 4  # bounded, and never cleared whole
    assert cache.get(keys[1]) is None and cache.get(keys[2]) is None  # the two coldest went
    assert all(cache.get(k) is not None for k in (keys[0], keys[3], keys[4], keys[5]))
