"""The operator's tenant search: a registry query with a limit (never a list of every tenant), by id, slug prefix
and slug or name substring, on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest

from shironzi.errors import InvalidInputError
from shironzi.tenancy import Registry, TenantContext

TENANTS = 5_000


@pytest.fixture
def crowded(registry: Registry, admin: TenantContext) -> Registry:
    specs = [
        registry.validate_spec(slug=f"{word}-{n:05d}", name=f"{word.title()} Shop {n}", industry="ecommerce")
        for n in range(TENANTS)
        for word in (("acme", "zenith", "orbit", "delta")[n % 4],)
    ]
    registry.provision_many(admin, specs)
    return registry


def test_search_returns_at_most_the_limit_and_finds_by_prefix_id_and_name(
    crowded: Registry, admin: TenantContext
) -> None:
    started = time.perf_counter()
    found = crowded.search_tenants("acme-", limit=20)
    seconds = time.perf_counter() - started
    assert len(found) == 20 and all(t.slug.startswith("acme-") for t in found)
    assert [t.slug for t in found] == sorted(t.slug for t in found)  # prefix hits in slug order
    assert seconds < 1.0, seconds
    assert [t.slug for t in crowded.search_tenants("ZENITH-0000", limit=5)] == [f"zenith-0000{n}" for n in (1, 5, 9)]
    assert [t.slug for t in crowded.search_tenants("  Orbit   SHOP 4242 ")] == ["orbit-04242"]  # spaces squeezed
    named = crowded.search_tenants("Shop 4243")  # substring of the name, case-insensitive
    assert [t.slug for t in named] == ["delta-04243"]
    one = crowded.get_tenant("orbit-00002")
    assert [t.id for t in crowded.search_tenants(one.id)] == [one.id]
    assert len(crowded.search_tenants("", limit=50)) == 50
    assert crowded.search_tenants("no-such-tenant") == []
    assert crowded.search_tenants("%") == [] and crowded.search_tenants("_") == []  # wildcards are literal
    crowded.offboard(admin, "orbit-00002")
    assert crowded.search_tenants("orbit-00002") == []  # offboarded: not live
    assert [t.slug for t in crowded.search_tenants("orbit-00002", statuses=None)] == ["orbit-00002"]


def test_search_limit_is_bounded(registry: Registry) -> None:
    for bad in (0, 201):
        with pytest.raises(InvalidInputError):
            registry.search_tenants("a", limit=bad)


def test_tenant_infos_reads_only_the_asked_tenants_and_is_always_current(
    crowded: Registry, admin: TenantContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scoring chunk of tenants reads their rows by key (three IN batches here), not the whole directory once
    per chunk (quadratic in tenants at 100k); past DIRECTORY_SCAN ids one directory read answers the same."""
    from shironzi.tenancy import store

    directory = crowded.tenant_directory(fresh=True)
    asked = sorted(directory)[::4][:1_200] + ["t_no_such_tenant"]
    with monkeypatch.context() as patched:
        patched.setattr(type(crowded), "tenant_directory", lambda *_, **__: pytest.fail("read every tenant"))
        keyed = crowded.tenant_infos(asked)
    assert keyed == {t: directory[t] for t in asked[:-1]}
    monkeypatch.setattr(store, "DIRECTORY_SCAN", 10)
    assert crowded.tenant_infos(asked) == keyed
    monkeypatch.undo()
    crowded.tenant_directory()  # a warm cache
    crowded.offboard(admin, asked[0])
    assert crowded.tenant_infos([asked[0]])[asked[0]].status != directory[asked[0]].status  # never cached


def test_tenants_with_module_among_reads_the_asked_tenants_by_key(
    crowded: Registry, admin: TenantContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scoring chunk checks its own tenants' module by key (three IN batches here), not the rows of every tenant
    with the module once per chunk; past DIRECTORY_SCAN ids one read of every row answers the same."""
    from sqlalchemy import event

    from shironzi.tenancy import store

    every = crowded.tenants_with_module("churn_prediction")
    asked = [*every[::4][:1_200], "t_no_such_tenant"]
    crowded.disable_module(admin, asked[1], "churn_prediction")
    statements: list[str] = []
    listen = lambda *args: statements.append(args[2])  # noqa: E731 - before_cursor_execute(conn, cursor, sql, ...)
    event.listen(crowded.engine, "before_cursor_execute", listen)
    try:
        keyed = crowded.tenants_with_module("churn_prediction", among=asked)
    finally:
        event.remove(crowded.engine, "before_cursor_execute", listen)
    assert keyed == sorted(set(asked[:-1]) - {asked[1]})
    selects = [s for s in statements if s.lstrip().upper().startswith("SELECT")]
    assert len(selects) == 3 and all(" IN " in s for s in selects)
    monkeypatch.setattr(store, "DIRECTORY_SCAN", 10)
    monkeypatch.setattr("shironzi.tenancy.module_toggles.DIRECTORY_SCAN", 10)
    assert crowded.tenants_with_module("churn_prediction", among=asked) == keyed
    assert crowded.tenants_with_module("churn_prediction", among=[]) == []
