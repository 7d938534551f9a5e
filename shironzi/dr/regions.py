"""Regions as failure domains: each region's lake, its peer, residency, and the DR state in the registry.

A region's data lives in its own lake (`SHIRONZI_REGION_LAKES`; default: the folder `{lake}/{region}` of the
embedded lake). Its replica lives in the peer region's lake under `_replica/{region}`, shaped like a whole
lake, so a process promoted in the peer runs on it as it would on the original (`SHIRONZI_LAKE_URI`).

The `regions` table of the registry holds, per region, its state (`active`, `failing_over`, `failed_over`,
`failing_back`), the region whose lake serves its tenants, and an epoch that every failover or failback bumps.
Writers fence on the epoch (`shironzi.lake.fencing`); readers route by the serving region (`serving_lake`).
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa

from shironzi.errors import InvalidInputError, InvalidStateError
from shironzi.settings import RegionLake, Settings, get_settings
from shironzi.tenancy import TenantContext, get_registry
from shironzi.tenancy.db import write_transaction
from shironzi.tenancy.events import EventType, append_events, new_event, utcnow
from shironzi.tenancy.models import regions
from shironzi.tenancy.records import TenantInfo

RegionStateName = Literal["active", "failing_over", "failed_over", "failing_back"]
REPLICA_DIR = "_replica"


@dataclass(frozen=True)
class RegionState:
    region: str
    state: str
    epoch: int
    serving_region: str
    changed_at: datetime | None


# --- configuration ------------------------------------------------------------------------------------


def check_region(settings: Settings, region: str) -> str:
    if region not in settings.regions:
        raise InvalidInputError(f"unknown region {region!r}; regions are {', '.join(settings.regions)}",
                                field="region")
    return region


def peer_region(settings: Settings, region: str) -> str:
    """The region holding `region`'s replica."""
    check_region(settings, region)
    peer = settings.region_peers.get(region)
    if peer is None or peer not in settings.regions or peer == region:
        raise InvalidInputError(f"region {region!r} has no peer region (SHIRONZI_REGION_PEERS)", field="region")
    return peer


def jurisdiction(settings: Settings, region: str) -> str:
    return settings.region_jurisdictions.get(region, region)


def is_residency_restricted(settings: Settings, info: TenantInfo) -> bool:
    return any(entry in (info.plan, f"{info.industry}/{info.plan}") for entry in settings.residency_plans)


def replica_region(settings: Settings, info: TenantInfo) -> str | None:
    """Where a tenant's rows are replicated: the home region's peer, unless the tenant's plan keeps its data in
    its jurisdiction and the peer lies outside it (then none)."""
    peer = settings.region_peers.get(info.region)
    if peer is None:
        return None
    if is_residency_restricted(settings, info) and jurisdiction(settings, peer) != jurisdiction(settings, info.region):
        return None
    return peer


def allowed_regions(settings: Settings, info: TenantInfo) -> frozenset[str]:
    """The regions whose lakes may hold a tenant's rows: home and (if any) replica."""
    replica = replica_region(settings, info)
    return frozenset({info.region} | ({replica} if replica else set()))


def region_lake(settings: Settings, region: str) -> RegionLake:
    """The region's own lake (its primary copy)."""
    configured = settings.region_lakes.get(check_region(settings, region))
    if configured is not None:
        return configured
    return RegionLake(uri=settings.resolved_lake_uri, storage_options=settings.storage_options)


def replica_lake(settings: Settings, region: str) -> RegionLake:
    """The replica of `region`'s lake inside its peer's lake."""
    peer = region_lake(settings, peer_region(settings, region))
    return RegionLake(uri=f"{peer.uri.rstrip('/')}/{REPLICA_DIR}/{region}", storage_options=peer.storage_options,
                      kafka_bootstrap=peer.kafka_bootstrap)


def region_bootstrap(settings: Settings, region: str) -> str | None:
    """The region's broker (its own, else the platform's)."""
    return region_lake(settings, region).kafka_bootstrap or settings.kafka_bootstrap


# --- state in the registry ------------------------------------------------------------------------------


def _default_state(region: str) -> RegionState:
    return RegionState(region, "active", 0, region, None)


def _read_state(conn: sa.Connection, region: str, *, lock: bool = False) -> RegionState:
    query = sa.select(regions).where(regions.c.region == region)
    row = conn.execute(query.with_for_update() if lock else query).mappings().first()
    if row is None:
        return _default_state(region)
    return RegionState(row["region"], row["state"], row["epoch"], row["serving_region"], row["changed_at"])


def region_states(settings: Settings | None = None) -> dict[str, RegionState]:
    """Every configured region's current state (fresh from the registry)."""
    settings = settings or get_settings()
    with get_registry(settings).engine.connect() as conn:
        stored = {row["region"]: row for row in conn.execute(sa.select(regions)).mappings()}
    return {
        r: RegionState(r, row["state"], row["epoch"], row["serving_region"], row["changed_at"]) if row else
        _default_state(r)
        for r in settings.regions
        for row in [stored.get(r)]
    }


def transition(
    settings: Settings,
    region: str,
    *,
    expect: tuple[str, ...],
    to: RegionStateName,
    serving_region: str,
    event: EventType,
    ctx: TenantContext,
    bump_epoch: bool = True,
    **payload: object,
) -> RegionState:
    """Move a region from one of `expect` states to `to` in one registry transaction (with its event); refuse
    with a clear error, changing nothing, when the region is in another state."""
    ctx.require_admin(f"region {event}")
    check_region(settings, region)
    with write_transaction(get_registry(settings).engine) as conn:
        current = _read_state(conn, region, lock=True)
        if current.state not in expect:
            raise InvalidStateError(
                f"region {region!r} is {current.state} (epoch {current.epoch}); {event} needs it "
                f"{' or '.join(expect)}", region=region, state=current.state)
        after = RegionState(region, to, current.epoch + (1 if bump_epoch else 0), serving_region, utcnow())
        values = {"state": after.state, "epoch": after.epoch, "serving_region": after.serving_region,
                  "changed_at": after.changed_at}
        if current.changed_at is None:
            conn.execute(regions.insert().values(region=region, **values))
        else:
            conn.execute(regions.update().where(regions.c.region == region).values(**values))
        append_events(conn, [new_event(event, tenant_id=None, actor=ctx.actor, purpose=ctx.purpose,
                                       payload={"region": region, "state": to, "epoch": after.epoch,
                                                "serving_region": serving_region, **payload})])
    forget_states()
    return after


# --- routing: which lake serves a region's tenants ------------------------------------------------------

_cache: tuple[float, str, dict[str, RegionState]] | None = None
_cache_lock = threading.Lock()


def forget_states() -> None:
    global _cache
    with _cache_lock:
        _cache = None


def cached_states(settings: Settings) -> dict[str, RegionState]:
    """Region states cached for `dr_state_cache_seconds` (routing reads; fencing reads fresh)."""
    global _cache
    url = settings.resolved_database_url
    cached = _cache
    if cached is not None and cached[0] >= time.monotonic() and cached[1] == url:
        return cached[2]
    try:
        states = region_states(settings)
    except (sa.exc.SQLAlchemyError, OSError):  # registry unreachable: degrade to the last known routing
        logging.getLogger("shironzi.dr").warning("region states unreadable; routing by the last known ones")
        return cached[2] if cached is not None and cached[1] == url else {}
    with _cache_lock:
        _cache = (time.monotonic() + settings.dr_state_cache_seconds, url, states)
    return states


def serving_lake(settings: Settings, region: str) -> RegionLake:
    """The lake that serves `region`'s tenants now: its own, or its replica in the peer after a failover."""
    state = cached_states(settings).get(region)
    if state is not None and state.serving_region != region:
        return replica_lake(settings, region)
    return region_lake(settings, region)
