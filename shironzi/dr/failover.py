"""Failover and failback of a region, fenced by the registry's epoch.

Failover of region A (peer B):
1. refuse, changing nothing, when A is unknown, has no peer, is not `active` (a failover is in progress or done)
   or when B is not serving itself (the peer is down too);
2. `failing_over`, epoch + 1: from now on A's writers' commits are refused (`shironzi.lake.fencing`);
3. a last catch-up pass of A's lake into the replica when A's storage still answers (else its unshipped commits
   are re-ingested from the topic: the replica's `txn` positions are where ingestion resumes);
4. `failed_over`, serving region B: reads of A's tenants route to the replica (`serving_lake`), and A's
   ingestors restart in B on the replica lake.

Failback of A: refused while the replica's changes have not been shipped back to within
`dr_failback_max_lag_versions` (unless forced); then `failing_back`, epoch + 1 (fencing the writers in B), a
final reverse pass (A's commits that never reached the replica are moved aside), and `active` in A again.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from shironzi.dr.regions import check_region, peer_region, region_lake, region_states, replica_lake, transition
from shironzi.dr.replicate import RegionPass, region_lag, replicate_region
from shironzi.errors import InvalidStateError, ShironziError
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import TenantContext

logger = logging.getLogger("shironzi.dr")


@dataclass
class SwitchResult:
    """What a failover or failback did."""

    region: str
    serving_region: str
    epoch: int
    seconds: float
    caught_up: int | None  # versions the last pass shipped; None when the other side did not answer
    serving_lake: str


def _catch_up(region: str, direction: str, settings: Settings) -> RegionPass | None:
    try:
        return replicate_region(region, direction=direction, settings=settings)  # type: ignore[arg-type]
    except (OSError, ShironziError) as exc:
        if direction == "reverse":
            raise
        logger.warning("failover: last catch-up failed; unshipped commits are re-ingested from the topic",
                       extra={"fields": {"region": region, "error": str(exc)}})
        return None


def failover(region: str, *, ctx: TenantContext, settings: Settings | None = None) -> SwitchResult:
    """Fence region `region`, ship what its lake still answers, and serve its tenants from its peer."""
    settings = settings or get_settings()
    check_region(settings, region)
    peer = peer_region(settings, region)
    started = time.monotonic()
    with stage("dr_failover", region=region, peer=peer) as summary:
        states = region_states(settings)
        if states[peer].state != "active" or states[peer].serving_region != peer:
            raise InvalidStateError(
                f"cannot fail {region!r} over to {peer!r}: the peer is {states[peer].state} itself", region=region)
        fenced = transition(settings, region, expect=("active",), to="failing_over", serving_region=region,
                            event="region_failover_started", ctx=ctx, peer=peer)
        caught = _catch_up(region, "forward", settings)
        done = transition(settings, region, expect=("failing_over",), to="failed_over", serving_region=peer,
                          event="region_failed_over", ctx=ctx, bump_epoch=False, peer=peer,
                          caught_up=None if caught is None else caught.versions)
        summary.rows = 0 if caught is None else caught.versions
        summary.extra.update(epoch=fenced.epoch, caught_up=summary.rows)
    return SwitchResult(region, peer, done.epoch, time.monotonic() - started,
                        None if caught is None else caught.versions, replica_lake(settings, region).uri)


def failback(region: str, *, ctx: TenantContext, force: bool = False, settings: Settings | None = None) -> SwitchResult:
    """Ship the replica's outage writes back to the region's own lake, fence the peer's writers, flip back."""
    settings = settings or get_settings()
    check_region(settings, region)
    peer = peer_region(settings, region)
    started = time.monotonic()
    with stage("dr_failback", region=region, peer=peer) as summary:
        state = region_states(settings)[region]
        if state.state != "failed_over":
            raise InvalidStateError(f"region {region!r} is {state.state}; failback needs it failed_over",
                                    region=region)
        lags = region_lag(region, direction="reverse", settings=settings)
        worst = max(lags, key=lambda lag: lag.lag_versions, default=None)
        bound = settings.dr_failback_max_lag_versions
        if worst is not None and worst.lag_versions > bound and not force:
            raise InvalidStateError(
                f"failback of {region!r} refused: {worst.relative} lags {worst.lag_versions} versions behind the "
                f"replica (bound {bound}); let `shironzi dr replicate` catch up, or pass --force", region=region)
        transition(settings, region, expect=("failed_over",), to="failing_back", serving_region=peer,
                   event="region_failback_started", ctx=ctx, peer=peer)
        try:
            caught = replicate_region(region, direction="reverse", settings=settings)
        except BaseException:
            transition(settings, region, expect=("failing_back",), to="failed_over", serving_region=peer,
                       event="region_failed_over", ctx=ctx, peer=peer, reason="failback pass failed")
            raise
        done = transition(settings, region, expect=("failing_back",), to="active", serving_region=region,
                          event="region_failed_back", ctx=ctx, bump_epoch=False, peer=peer,
                          caught_up=caught.versions)
        summary.rows = caught.versions
        summary.extra.update(epoch=done.epoch, forced=force)
    return SwitchResult(region, region, done.epoch, time.monotonic() - started, caught.versions,
                        region_lake(settings, region).uri)
