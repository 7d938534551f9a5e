"""Placement flips: the registry half of an online tenant move (`shironzi.tenancy.moves` does the data).

A flip is one `placement_changed` event: the tenant's placement, its lake namespace and its placement epoch
(+1) change together. Writers fence on the epoch: `placement_overlay()` is the placement of every tenant that
was ever moved (`placement_epoch > 0`), read by a lander under its tables' shared leases just before it commits
(`ingestion.bronze.BronzeLander`), while the mover flips under the source table's exclusive lease.
"""

from __future__ import annotations

from typing import NamedTuple

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shironzi.errors import InvalidStateError
from shironzi.tenancy import catalog
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.events import ProjectionState, TenantEvent
from shironzi.tenancy.models import tenants
from shironzi.tenancy.onboarding import TenantOnboarding
from shironzi.tenancy.records import Tenant
from shironzi.tenancy.store import require_live


class PlacementState(NamedTuple):
    """Where a moved tenant's rows go now, and the epoch of that decision."""

    region: str
    placement: str
    epoch: int


class TenantPlacement(TenantOnboarding):
    """The placement part of `Registry` (on top of onboarding, whose `lake_namespace` it reuses)."""

    def placement_epoch(self, tenant_id: str) -> int:
        """The tenant's current placement epoch (0 until its first move)."""
        with self.engine.connect() as conn:
            row = self._tenant_row(conn, tenant_id)
        return int(row["placement_epoch"])

    def placement_overlay(self) -> dict[str, PlacementState]:
        """Region, placement and epoch of every tenant ever moved: one indexed read, small (moves are rare)."""
        query = sa.select(tenants.c.id, tenants.c.region, tenants.c.placement, tenants.c.placement_epoch).where(
            tenants.c.placement_epoch > 0
        )
        with self._hot_reads.connect() as conn:
            return {str(r[0]): PlacementState(str(r[1]), str(r[2]), int(r[3])) for r in conn.execute(query)}

    def flip_placement(
        self, ctx: TenantContext, tenant_id: str, *, placement: str, expected_epoch: int, **details: object
    ) -> Tenant:
        """Flip a live tenant's placement (epoch + 1); refused when another flip got there first."""
        ctx.require_admin("changing a tenant's placement")
        placement = catalog.check_placement(placement)

        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            ((tid, row),) = state.tenants.items()
            require_live(tid, row, allow_suspended=False)
            if row["placement"] == placement:
                raise InvalidStateError(f"tenant {tid!r} is already {placement}", tenant=tid, placement=placement)
            if int(row["placement_epoch"]) != expected_epoch:
                raise InvalidStateError(
                    f"tenant {tid!r} moved meanwhile (epoch {row['placement_epoch']}, expected {expected_epoch})",
                    tenant=tid,
                )
            namespace = self.lake_namespace(tenant_id=tid, region=row["region"], placement=placement)
            payload = {"from": row["placement"], "to": placement, "epoch": expected_epoch + 1,
                       "lake_namespace": namespace, **details}
            return [self._event(ctx, "placement_changed", tid, **payload)]

        state, _ = self._commit(decide, tenant=tenant_id, ctx=ctx)
        return Tenant.from_row(next(iter(state.tenants.values())))
