"""The placement policy: which tenants to promote to dedicated tables and which to demote to the pool.

    promote: events/day > promote_events_per_day OR bytes/day > promote_gb, on each of the last promote_days
    demote:  events/day < demote_events_per_day AND bytes/day < demote_gb, on each of the last demote_days
             (hysteresis: the demotion thresholds sit below the promotion ones), never for a tenant whose plan
             requires dedicated placement (enterprise tenants of regulated industries)

The thresholds come from the YAML file `SHIRONZI_PLACEMENT_POLICY_FILE` (keys: the `PlacementPolicy` fields),
else the built-in defaults. Usage figures come through `PlacementInputs`: today `BronzeUsageInputs` counts each
tenant's bronze events per day (one grouped read per bronze table) and apportions the table's bytes by row
share; when metering (issue 23a) lands, an implementation reading `_platform/usage` replaces it, nothing else.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from shironzi.errors import InvalidInputError, ShironziError
from shironzi.lake.groups import region_groups
from shironzi.lake.reads import read_polars, table_exists
from shironzi.lake.table_log import add_actions
from shironzi.metering.usage import read_usage
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.moves import MoveProgress, move_tenant, requires_dedicated
from shironzi.tenancy.registry import get_registry

if TYPE_CHECKING:
    import polars as pl

GB = 1024**3
USAGE_COLUMNS = ("tenant_id", "day", "events", "bytes")


@dataclass(frozen=True)
class PlacementPolicy:
    """Promotion and demotion thresholds (per tenant per day) and the cap on moves per run."""

    promote_events_per_day: int = 1_000_000
    promote_gb: float = 50.0
    promote_days: int = 3
    demote_events_per_day: int = 100_000
    demote_gb: float = 5.0
    demote_days: int = 14
    max_moves_per_run: int = 5

    def __post_init__(self) -> None:
        for name in ("promote_days", "demote_days", "max_moves_per_run"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"placement policy: {name} must be at least 1", field=name)
        if not (0 <= self.demote_events_per_day <= self.promote_events_per_day
                and 0 <= self.demote_gb <= self.promote_gb):
            raise InvalidInputError("placement policy: the demotion thresholds must not exceed the promotion "
                                    "thresholds (hysteresis)", field="demote_events_per_day")

    @classmethod
    def load(cls, settings: Settings | None = None) -> PlacementPolicy:
        """The policy of `settings.placement_policy_file`, else the defaults."""
        path = (settings or get_settings()).placement_policy_file
        if path is None:
            return cls()
        import yaml  # type: ignore[import-untyped]

        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise InvalidInputError(f"cannot read the placement policy {path}: {exc}") from exc
        known = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(raw, dict) or set(raw) - known:
            unknown = sorted(set(raw) - known) if isinstance(raw, dict) else raw
            raise InvalidInputError(f"placement policy {path}: unknown keys {unknown}; expected {sorted(known)}")
        try:
            return cls(**raw)
        except TypeError as exc:
            raise InvalidInputError(f"placement policy {path}: {exc}") from exc


class PlacementInputs(Protocol):
    """Per-tenant daily usage: a frame of `tenant_id, day, events, bytes` for days in [start, end]."""

    def daily_usage(self, start: date, end: date) -> pl.DataFrame: ...


class BronzeUsageInputs:
    """Events per tenant per day counted in bronze (each region's pooled table and every dedicated one: one
    grouped read per table), bytes apportioned from the table's file statistics by row share."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()

    def daily_usage(self, start: date, end: date) -> pl.DataFrame:
        import polars as pl


        opts = self.settings.storage_options
        parts = []
        for region in self.settings.regions:
            for group in region_groups(region, self.settings):
                uri = group.uri(self.settings, layer="bronze", table="events")
                if not table_exists(uri, storage_options=opts):
                    continue
                files = add_actions(uri, storage_options=opts)
                records = sum(v or 0 for v in files.column("num_records").to_pylist())
                per_row = sum(files.column("size_bytes").to_pylist()) / records if records else 0.0
                rows = read_polars(uri, columns=["tenant_id", "event_date"], storage_options=opts,
                                   filters=[("event_date", ">=", start), ("event_date", "<=", end)])
                parts.append(rows.group_by("tenant_id", "event_date").len("events").select(
                    "tenant_id", pl.col("event_date").alias("day"), pl.col("events").cast(pl.Int64),
                    (pl.col("events") * per_row).cast(pl.Int64).alias("bytes")))
        if not parts:
            return pl.DataFrame(schema={"tenant_id": pl.String, "day": pl.Date, "events": pl.Int64,
                                        "bytes": pl.Int64})
        return pl.concat(parts).group_by("tenant_id", "day").agg(pl.col("events").sum(), pl.col("bytes").sum())


class MeteredUsageInputs:
    """Usage from metering's `_platform/usage` table (`shironzi usage collect`): the events a tenant landed each
    day and the bytes it stored in every layer, one partition-pruned read for every tenant."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()

    def daily_usage(self, start: date, end: date) -> pl.DataFrame:
        import polars as pl


        return read_usage(start=start, end=end, settings=self.settings).select(
            "tenant_id", "day", pl.col("events_landed").cast(pl.Int64).alias("events"),
            pl.col("bytes_total").cast(pl.Int64).alias("bytes"))


def default_inputs(start: date, end: date, settings: Settings) -> PlacementInputs:
    """Metering's usage table once it covers the window's last day, else bronze counted directly (a platform
    that has not metered yet, or stopped metering, still gets a policy)."""
    metered = MeteredUsageInputs(settings)
    if metered.daily_usage(end, end).height:
        return metered
    return BronzeUsageInputs(settings)


@dataclass(frozen=True)
class PlannedMove:
    """One move the policy asks for, with its reason and the figures behind it."""

    tenant_id: str
    slug: str
    from_placement: str
    to_placement: str
    reason: str
    figures: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def plan_placement(
    *,
    as_of: date | None = None,
    policy: PlacementPolicy | None = None,
    inputs: PlacementInputs | None = None,
    settings: Settings | None = None,
) -> list[PlannedMove]:
    """The moves the policy asks for on `as_of` (default today, UTC): promotions first, biggest first."""

    settings = settings or get_settings()
    policy = policy or PlacementPolicy.load(settings)
    as_of = as_of or datetime.now(UTC).date()
    span = max(policy.promote_days, policy.demote_days)
    inputs = inputs or default_inputs(as_of - timedelta(days=span - 1), as_of, settings)
    with stage("placement.plan", as_of=as_of.isoformat(), inputs=type(inputs).__name__) as summary:
        usage = inputs.daily_usage(as_of - timedelta(days=span - 1), as_of)
        directory = get_registry(settings).tenant_directory(fresh=True)
        planned = [*_promotions(usage, directory, policy, as_of), *_demotions(usage, directory, policy, as_of)]
        summary.rows = len(planned)
        summary.extra.update(tenants_with_usage=usage.get_column("tenant_id").n_unique() if usage.height else 0)
    return planned


def _window(usage: pl.DataFrame, as_of: date, days: int) -> pl.DataFrame:
    import polars as pl

    return usage.filter(pl.col("day") > as_of - timedelta(days=days), pl.col("day") <= as_of)


def _promotions(usage: pl.DataFrame, directory: dict[str, Any], policy: PlacementPolicy,
                as_of: date) -> list[PlannedMove]:
    import polars as pl

    over = pl.col("events") > policy.promote_events_per_day
    over_bytes = pl.col("bytes") > policy.promote_gb * GB
    found = (
        _window(usage, as_of, policy.promote_days)
        .group_by("tenant_id")
        .agg((over | over_bytes).sum().alias("days_over"), pl.col("events").min().alias("min_events"),
             pl.col("bytes").min().alias("min_bytes"))
        .filter(pl.col("days_over") >= policy.promote_days)
        .sort("min_events", descending=True)
    )
    out = []
    for tenant_id, _, min_events, min_bytes in found.iter_rows():
        info = directory.get(tenant_id)
        if info is None or info.placement != "pooled" or info.status != "active":
            continue
        out.append(PlannedMove(
            tenant_id, info.slug, "pooled", "dedicated",
            f"above {policy.promote_events_per_day:,} events/day or {policy.promote_gb:g} GB/day on each of the "
            f"last {policy.promote_days} days",
            {"days": policy.promote_days, "min_events_per_day": int(min_events),
             "min_gb_per_day": round(min_bytes / GB, 3)}))
    return out


def _demotions(usage: pl.DataFrame, directory: dict[str, Any], policy: PlacementPolicy,
               as_of: date) -> list[PlannedMove]:
    import polars as pl

    window = _window(usage, as_of, policy.demote_days).group_by("tenant_id").agg(
        pl.col("events").max().alias("max_events"), pl.col("bytes").max().alias("max_bytes"))
    peaks = {t: (int(e), int(b)) for t, e, b in window.iter_rows()}
    out = []
    for tenant_id, info in sorted(directory.items()):
        if info.placement != "dedicated" or info.status != "active" or requires_dedicated(info.plan, info.industry):
            continue
        max_events, max_bytes = peaks.get(tenant_id, (0, 0))  # a day without events counts as 0
        if max_events < policy.demote_events_per_day and max_bytes < policy.demote_gb * GB:
            out.append(PlannedMove(
                tenant_id, info.slug, "dedicated", "pooled",
                f"below {policy.demote_events_per_day:,} events/day and {policy.demote_gb:g} GB/day on each of "
                f"the last {policy.demote_days} days",
                {"days": policy.demote_days, "max_events_per_day": max_events,
                 "max_gb_per_day": round(max_bytes / GB, 3)}))
    return out


@dataclass
class ApplyResult:
    """What `apply_placement` did: the receipts of the moves made, the failures, the moves left for later."""

    moved: list[dict[str, Any]]
    failed: list[dict[str, Any]]
    deferred: list[dict[str, Any]]
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def apply_placement(
    ctx: TenantContext,
    *,
    max_moves: int | None = None,
    as_of: date | None = None,
    policy: PlacementPolicy | None = None,
    inputs: PlacementInputs | None = None,
    settings: Settings | None = None,
    progress: MoveProgress | None = None,
) -> ApplyResult:
    """Plan, then carry out at most `max_moves` moves (default: the policy's cap); a failed move is reported
    and the others go on."""
    ctx.require_admin("applying the placement policy")
    settings = settings or get_settings()
    policy = policy or PlacementPolicy.load(settings)
    cap = policy.max_moves_per_run if max_moves is None else max_moves
    if cap < 0:
        raise InvalidInputError(f"max moves must not be negative, got {cap}", field="max_moves")
    started = time.perf_counter()
    planned = plan_placement(as_of=as_of, policy=policy, inputs=inputs, settings=settings)
    result = ApplyResult([], [], [p.as_dict() for p in planned[cap:]], 0.0)
    for move in planned[:cap]:
        try:
            receipt = move_tenant(ctx, move.tenant_id, placement=move.to_placement, settings=settings,
                                  progress=progress)
        except ShironziError as exc:
            result.failed.append({**move.as_dict(), "error": exc.message})
            continue
        result.moved.append({**move.as_dict(), "move_id": receipt.move_id, "rows": receipt.rows,
                             "seconds": round(receipt.seconds, 3)})
    result.seconds = time.perf_counter() - started
    return result
