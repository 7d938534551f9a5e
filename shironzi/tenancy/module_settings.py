"""Per-tenant module settings (today: the churn_prediction windows), event-sourced like every tenant change.

A `module_settings_changed` event carries the values it sets; a module's current settings are the fold of
its events (no projection table: a tenant has a handful of them, read by one indexed query). Pipelines read
every tenant's settings of a module in one query (`module_settings_of`), never one query per tenant.

    registry.set_module_settings(ctx, "acme-shop", "churn_prediction", {"inactivity_days": 60})
    registry.module_settings("acme-shop", "churn_prediction")   # {"inactivity_days": 60}
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shironzi.errors import InvalidInputError, InvalidStateError
from shironzi.tenancy import catalog
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.events import ProjectionState, TenantEvent
from shironzi.tenancy.models import tenant_events
from shironzi.tenancy.store import RegistryStore, require_live

SETTINGS_EVENT = "module_settings_changed"
# module -> setting -> (smallest, largest) allowed integer value
MODULE_SETTINGS: dict[str, dict[str, tuple[int, int]]] = {
    "churn_prediction": {"inactivity_days": (7, 365), "horizon_days": (7, 365)},
}


def check_module_settings(module: str, values: Mapping[str, Any]) -> dict[str, int | None]:
    """Validated settings of a module (None clears a setting back to its default)."""
    known = MODULE_SETTINGS.get(catalog.check_module(module))
    if not known:
        raise InvalidInputError(f"module {module!r} has no settings")
    if not values:
        raise InvalidInputError(f"no setting given; {module} has: {', '.join(known)}")
    out: dict[str, int | None] = {}
    for name, value in values.items():
        if name not in known:
            raise InvalidInputError(f"module {module!r} has no setting {name!r}; it has: {', '.join(known)}")
        if value is None:
            out[name] = None
            continue
        low, high = known[name]
        try:
            number = int(str(value))
        except ValueError:
            raise InvalidInputError(f"{module}.{name} must be a whole number of days, got {value!r}") from None
        if not low <= number <= high:
            raise InvalidInputError(f"{module}.{name} must be between {low} and {high}, got {number}")
        out[name] = number
    return out


def _fold(events: list[dict[str, Any]]) -> dict[str, int]:
    current: dict[str, int] = {}
    for payload in events:
        for name, value in payload.get("settings", {}).items():
            if value is None:
                current.pop(name, None)
            else:
                current[name] = int(value)
    return current


class ModuleSettings(RegistryStore):
    """The module-settings part of `Registry`."""

    def set_module_settings(self, ctx: TenantContext, tenant_id: str, module: str,
                            values: Mapping[str, Any]) -> dict[str, int]:
        """Record new settings of a module that is on for the tenant; returns its settings after the change."""
        checked = check_module_settings(module, values)

        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            ((tid, row),) = state.tenants.items()
            require_live(tid, row)
            if module not in state.enabled_modules(tid):
                raise InvalidStateError(f"module {module!r} is not enabled for tenant {tid!r}", tenant=tid,
                                        module=module)
            return [self._event(ctx, SETTINGS_EVENT, tid, module=module, settings=checked)]

        state, _ = self._commit(decide, tenant=tenant_id, ctx=ctx)
        ((tid, _row),) = state.tenants.items()
        return self.module_settings(tid, module)

    def module_settings(self, tenant_id: str, module: str) -> dict[str, int]:
        """A tenant's current settings of a module (empty: every setting at its default)."""
        catalog.check_module(module)
        with self.engine.connect() as conn:
            tid = self._tenant_row(conn, tenant_id)["id"]
        return self.module_settings_of(module, [tid]).get(tid, {})

    def module_settings_of(self, module: str, tenant_ids: list[str] | None = None) -> dict[str, dict[str, int]]:
        """Every tenant's (or the given tenants') non-default settings of a module, in one query."""
        catalog.check_module(module)
        query = (sa.select(tenant_events.c.tenant_id, tenant_events.c.payload)
                 .where(tenant_events.c.type == SETTINGS_EVENT).order_by(tenant_events.c.sequence))
        if tenant_ids is not None:
            query = query.where(tenant_events.c.tenant_id.in_(tenant_ids))
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        with self.engine.connect() as conn:
            for tid, payload in conn.execute(query).all():
                if isinstance(payload, dict) and payload.get("module") == module:
                    by_tenant.setdefault(str(tid), []).append(payload)
        folded = {tid: _fold(events) for tid, events in by_tenant.items()}
        return {tid: values for tid, values in folded.items() if values}
