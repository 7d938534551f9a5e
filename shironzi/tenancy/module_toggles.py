"""Per-tenant module toggles: switching modules on and off under the dependency rules, and the cached
`is_enabled` check that gates the API and the pipelines."""

from __future__ import annotations

import time
from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shironzi.errors import InvalidStateError
from shironzi.settings import Settings
from shironzi.tenancy import catalog
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.events import ProjectionState, TenantEvent
from shironzi.tenancy.invalidation import Invalidation
from shironzi.tenancy.models import tenant_modules, tenants
from shironzi.tenancy.store import DIRECTORY_SCAN, RegistryStore, keyed_rows, require_live


class ModuleToggles(RegistryStore):
    """The module part of `Registry`, with its per-tenant cache of enabled modules."""

    def __init__(self, engine: Engine, *, settings: Settings | None = None) -> None:
        super().__init__(engine, settings=settings)
        self._module_cache: dict[str, tuple[float, frozenset[str]]] = {}

    def modules(self, tenant_id: str) -> list[str]:
        """The modules switched on for a tenant, in catalogue order."""
        return [m for m in catalog.MODULES if m in self._enabled_set(tenant_id, fresh=True)]

    def is_enabled(self, tenant_id: str, module: str) -> bool:
        """Whether a module is on for a tenant (cached for settings.module_cache_ttl_seconds)."""
        if module not in catalog.MODULES:
            catalog.check_module(module)
        return module in self._enabled_set(tenant_id)

    def _enabled_set(self, tenant_id: str, *, fresh: bool = False) -> frozenset[str]:
        ttl = self.settings.module_cache_ttl_seconds
        if not fresh and ttl > 0:
            hit = self._module_cache.get(tenant_id)
            if hit is not None and hit[0] >= time.monotonic():
                return hit[1]
        with self._hot_reads.connect() as conn:
            tid = self._tenant_row(conn, tenant_id)["id"]
            enabled: frozenset[str] = frozenset(
                conn.execute(
                    sa.select(tenant_modules.c.module).where(tenant_modules.c.tenant_id == tid)
                ).scalars()
            )
        if ttl > 0:
            self._module_cache[tenant_id] = (time.monotonic() + ttl, enabled)
        return enabled

    def tenants_with_module(self, module: str, *, statuses: Iterable[str] = ("active",),
                            among: Iterable[str] | None = None) -> list[str]:
        """Ids of the tenants (by default only active ones) that have `module` on: pipelines skip the rest.

        `among` narrows the answer to those ids, read by key (KEYED_READ_BATCH per query): a job's chunk checks its
        own 500 tenants, not the 100,000 rows of every tenant with the module (once per chunk, that was quadratic).
        Past DIRECTORY_SCAN ids one read of every row is cheaper."""
        catalog.check_module(module)
        wanted = [catalog._one_of("status", s, catalog.STATUSES) for s in statuses]
        query = (
            sa.select(tenant_modules.c.tenant_id)
            .join(tenants, tenants.c.id == tenant_modules.c.tenant_id)
            .where(tenant_modules.c.module == module, tenants.c.status.in_(wanted))
            .order_by(tenant_modules.c.tenant_id)
        )
        with self.engine.connect() as conn:
            ids = None if among is None else sorted(set(among))
            if ids is None or len(ids) > DIRECTORY_SCAN:
                every: list[str] = list(conn.execute(query).scalars())
                return every if ids is None else sorted(set(every).intersection(ids))
            return [row[0] for row in keyed_rows(conn, query, tenant_modules.c.tenant_id, ids)]

    def enable_module(self, ctx: TenantContext, tenant_id: str, module: str) -> list[str]:
        """Switch a module on; its dependencies must already be on. Returns the enabled modules."""
        return self._switch_module(ctx, tenant_id, module, on=True)

    def disable_module(self, ctx: TenantContext, tenant_id: str, module: str) -> list[str]:
        """Switch a module off; refused while enabled modules depend on it. Returns the enabled modules."""
        return self._switch_module(ctx, tenant_id, module, on=False)

    def _switch_module(self, ctx: TenantContext, tenant_id: str, module: str, *, on: bool) -> list[str]:
        module = catalog.check_module(module)

        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            ((tid, row),) = state.tenants.items()
            require_live(tid, row)
            enabled = state.enabled_modules(tid)
            if (module in enabled) == on:
                raise InvalidStateError(
                    f"module {module!r} is {'already' if on else 'not'} enabled for tenant {tid!r}",
                    tenant=tid,
                    module=module,
                )
            if on:
                catalog.check_can_enable(tid, module, enabled)
            else:
                catalog.check_can_disable(tid, module, enabled)
            return [self._event(ctx, "module_enabled" if on else "module_disabled", tid, module=module)]

        state, _ = self._commit(decide, tenant=tenant_id, ctx=ctx)
        return _catalogue_order(m for (_, m) in state.modules)

    def apply_invalidation(self, change: Invalidation) -> None:
        super().apply_invalidation(change)
        if change.everything:
            self._module_cache.clear()
            return
        for name in (*change.tenants, *change.slugs):
            self._module_cache.pop(name, None)


def _catalogue_order(modules: Iterable[str]) -> list[str]:
    present = set(modules)
    return [m for m in catalog.MODULES if m in present]
