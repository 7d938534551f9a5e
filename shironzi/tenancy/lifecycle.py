"""A tenant's life after provisioning: plan changes and the status transitions (suspend, resume, offboard,
delete)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection

from shironzi.errors import InvalidStateError
from shironzi.tenancy import catalog
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.events import ProjectionState, TenantEvent
from shironzi.tenancy.records import Tenant
from shironzi.tenancy.store import RegistryStore, require_live


class TenantLifecycle(RegistryStore):
    """The plan and status part of `Registry`."""

    def change_plan(self, ctx: TenantContext, tenant_id: str, plan: str) -> Tenant:
        """Move a tenant to another plan and switch on that plan's default modules it lacks."""
        ctx.require_admin("changing a tenant's plan")
        plan = catalog.check_plan(plan)

        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            ((tid, row),) = state.tenants.items()
            require_live(tid, row)
            if row["plan"] == plan:
                raise InvalidStateError(
                    f"tenant {tid!r} is already on the {plan} plan", tenant=tid, plan=plan
                )
            events = [self._event(ctx, "plan_changed", tid, **{"from": row["plan"], "to": plan})]
            enabled = state.enabled_modules(tid)
            for module in catalog.PLAN_DEFAULT_MODULES[plan]:
                if module not in enabled:
                    catalog.check_can_enable(tid, module, enabled)
                    enabled.add(module)
                    events.append(self._event(ctx, "module_enabled", tid, module=module))
            return events

        state, _ = self._commit(decide, tenant=tenant_id, ctx=ctx)
        return Tenant.from_row(next(iter(state.tenants.values())))

    def _transition(
        self, ctx: TenantContext, tenant_id: str, *, event_type: Any, target: str, **payload: Any
    ) -> Tenant:
        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            ((tid, row),) = state.tenants.items()
            catalog.check_transition(tid, row["status"], target)
            return [self._event(ctx, event_type, tid, **{k: v for k, v in payload.items() if v is not None})]

        state, _ = self._commit(decide, tenant=tenant_id, ctx=ctx)
        return Tenant.from_row(next(iter(state.tenants.values())))

    def suspend(self, ctx: TenantContext, tenant_id: str, *, reason: str | None = None) -> Tenant:
        """Suspend an active tenant: its keys stop authenticating (in running API workers within ~1 s)."""
        ctx.require_admin("suspending a tenant")
        return self._transition(ctx, tenant_id, event_type="suspended", target="suspended", reason=reason)

    def resume(self, ctx: TenantContext, tenant_id: str) -> Tenant:
        """Reactivate a suspended tenant, or cancel an offboarding; a deleted tenant cannot come back."""
        ctx.require_admin("resuming a tenant")
        return self._transition(ctx, tenant_id, event_type="resumed", target="active")

    def offboard(self, ctx: TenantContext, tenant_id: str, *, reason: str | None = None) -> Tenant:
        """Start offboarding: keys stop working, data is kept until erasure completes."""
        ctx.require_admin("offboarding a tenant")
        return self._transition(
            ctx, tenant_id, event_type="offboarding_started", target="offboarding", reason=reason
        )

    def complete_offboarding(self, ctx: TenantContext, tenant_id: str) -> Tenant:
        """Mark an offboarding tenant deleted (after its data has been erased elsewhere); final."""
        ctx.require_admin("completing an offboarding")
        return self._transition(ctx, tenant_id, event_type="tenant_deleted", target="deleted")
