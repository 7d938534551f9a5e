"""The offline store: Spark feature pipelines that append snapshots to Delta feature tables.

    result = build_features()                       # every view, weekly snapshots, gated tenants, incremental

Feature tables live at `{lake}/{region}/features/{view.table}` (a dedicated tenant's under its own root),
one row per entity and snapshot date with its `feature_timestamp`. A run computes, per tenant, only the
snapshot dates after the last one already in each table, up to the newest event date in bronze (or
`until`), so history accumulates for training and reruns add nothing. Only tenants with a feature-consuming
module (`churn_prediction` or `trend_forecast`) are built.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any, Literal

from feature_store.definitions import FEATURE_TIMESTAMP, SNAPSHOT_DATE, FeatureView
from feature_store.registry import resolve_views
from feature_store.views import BASE_VIEWS
from shironzi.errors import InvalidInputError
from shironzi.lake import read_arrow, read_batches, table_exists
from shironzi.lake.groups import LakeGroup, lake_groups
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import get_registry
from transformations.jobs.snapshot_sql import SqlOutput, run_snapshot_sql, tenant_event_bounds
from transformations.spark import get_spark, lake_access

if TYPE_CHECKING:
    import pyarrow as pa
    from pyspark.sql import SparkSession

Cadence = Literal["daily", "weekly"]
FEATURE_MODULES: tuple[str, ...] = ("churn_prediction", "trend_forecast")
WEEKLY_ANCHOR = date(1970, 1, 4)  # a Sunday: weekly snapshots fall on Sundays
CADENCE_DAYS: dict[str, int] = {"daily": 1, "weekly": 7}


@dataclass
class BuildResult:
    """What one offline build wrote."""

    rows: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    snapshots: dict[str, int] = field(default_factory=dict)
    tenants: list[str] = field(default_factory=list)
    skipped_tenants: list[str] = field(default_factory=list)

    @property
    def total_rows(self) -> int:
        return sum(self.rows.values())


def feature_timestamp_for(snapshot_date: date) -> datetime:
    """The instant a snapshot becomes known: the last microsecond of its day (UTC)."""
    return datetime.combine(snapshot_date, time.max, tzinfo=UTC)


def snapshot_dates(first: date, last: date, *, cadence: Cadence, after: date | None = None) -> list[date]:
    """The cadence grid's dates in [first, last] and after `after` (daily: every day; weekly: Sundays)."""
    if cadence not in CADENCE_DAYS:
        raise InvalidInputError(f"cadence must be one of {', '.join(CADENCE_DAYS)}, got {cadence!r}")
    step = CADENCE_DAYS[cadence]
    start = max(first, after + timedelta(days=1)) if after else first
    offset = (start - WEEKLY_ANCHOR).days % step
    day = start + timedelta(days=(step - offset) % step)
    out = []
    while day <= last:
        out.append(day)
        day += timedelta(days=step)
    return out


def gated_tenants(settings: Settings | None = None) -> list[str]:
    """Tenants with a feature-consuming module on (the rest get no feature rows)."""

    registry = get_registry(settings)
    return sorted({t for module in FEATURE_MODULES for t in registry.tenants_with_module(module)})


def last_snapshots(uri: str, tenant_ids: Sequence[str]) -> dict[str, date]:
    """tenant_id -> the newest snapshot_date already in a feature table (missing table: none)."""

    if not table_exists(uri):
        return {}
    table = read_arrow(uri, columns=["tenant_id", SNAPSHOT_DATE], filters=[("tenant_id", "in", list(tenant_ids))])
    if table.num_rows == 0:
        return {}
    latest = table.group_by("tenant_id").aggregate([(SNAPSHOT_DATE, "max")])
    return dict(zip(latest.column("tenant_id").to_pylist(), latest.column(f"{SNAPSHOT_DATE}_max").to_pylist(),
                    strict=True))


def snapshot_table(plan: dict[str, list[date]]) -> pa.Table:
    """(tenant_id, snapshot_date, feature_timestamp) rows for a per-tenant plan."""
    import pyarrow as pa

    tenants, dates = [], []
    for tenant_id, days in sorted(plan.items()):
        tenants += [tenant_id] * len(days)
        dates += days
    return pa.table({
        "tenant_id": pa.array(tenants, pa.string()),
        SNAPSHOT_DATE: pa.array(dates, pa.date32()),
        FEATURE_TIMESTAMP: pa.array([feature_timestamp_for(d) for d in dates], pa.timestamp("us", tz="UTC")),
    })


def build_features(
    views: Sequence[str] | None = None,
    *,
    tenant_ids: Sequence[str] | None = None,
    cadence: Cadence = "weekly",
    until: date | None = None,
    settings: Settings | None = None,
    spark: SparkSession | None = None,
    progress: Any = None,
) -> BuildResult:
    """Compute the missing snapshots of `views` (default: all) on Spark and append them to Delta.

    `tenant_ids` defaults to the tenants with churn_prediction or trend_forecast on; passing ids still
    drops the ones without such a module. `progress(message)` is called before each Spark job.
    """

    settings = settings or get_settings()
    chosen = resolve_views(views)
    allowed = set(gated_tenants(settings))
    if tenant_ids is None:
        directory = get_registry(settings).tenant_directory(fresh=True)
        wanted = sorted(t for t, info in directory.items() if info.status == "active")
    else:
        wanted = sorted(set(tenant_ids))
    result = BuildResult(tenants=[t for t in wanted if t in allowed],
                         skipped_tenants=[t for t in wanted if t not in allowed])
    with stage("features:offline", cadence=cadence, views=len(chosen)) as summary, lake_access(settings):
        summary.extra["tenants"] = len(result.tenants)
        summary.extra["skipped_tenants"] = len(result.skipped_tenants)
        for group in lake_groups(result.tenants, settings):
            bronze = group.uri(settings, layer="bronze", table="events")
            if not table_exists(bronze):
                continue
            spark = spark or get_spark(settings)
            if progress:
                progress(f"{group.region}/{group.placement}: event bounds")
            bounds = tenant_event_bounds(spark, [bronze], tenant_ids=group.tenant_ids)
            if not bounds:
                continue
            horizon = min(until, max(b[1] for b in bounds.values())) if until else max(b[1] for b in bounds.values())
            # Views with the same per-tenant plan run in one Spark job (they share the base views).
            jobs: dict[tuple[tuple[str, tuple[date, ...]], ...], list[FeatureView]] = defaultdict(list)
            for view in chosen:
                target = group.uri(settings, layer="features", table=view.table)
                done = last_snapshots(target, list(bounds))
                plan = {t: snapshot_dates(first, horizon, cadence=cadence, after=done.get(t))
                        for t, (first, _) in bounds.items()}
                key = tuple(sorted((t, tuple(d)) for t, d in plan.items() if d))
                if key:
                    jobs[key].append(view)
            for key, job_views in jobs.items():
                plan = {t: list(days) for t, days in key}
                if progress:
                    progress(f"{group.region}/{group.placement}: {', '.join(v.name for v in job_views)}")
                outputs = [SqlOutput(v.name, v.transformation, group.uri(settings, layer="features", table=v.table),
                                     tuple(v.columns)) for v in job_views]
                written = run_snapshot_sql(spark, bronze_uris=[bronze], tenant_ids=sorted(plan),
                                           snapshots=snapshot_table(plan), base_views=BASE_VIEWS, outputs=outputs)
                for out in written:
                    result.rows[out.name] = result.rows.get(out.name, 0) + out.rows
                    result.snapshots[out.name] = result.snapshots.get(out.name, 0) + sum(map(len, plan.values()))
                    if out.version is not None:
                        owner = group.region if group.placement == "pooled" else f"{group.region}/{group.tenant_id}"
                        result.versions[f"{owner}/{out.name}"] = out.version
        summary.rows = result.total_rows
        summary.table_version = dict(result.versions) or None
    return result


def feature_table_uris(view: FeatureView, tenant_ids: Iterable[str], settings: Settings | None = None, *,
                       groups: Sequence[LakeGroup] | None = None) -> list[str]:
    """The existing offline tables that may hold `tenant_ids`' rows of `view` (`groups`: their lake groups,
    when the caller already has them)."""

    settings = settings or get_settings()
    groups = lake_groups(tenant_ids, settings) if groups is None else groups
    uris = [g.uri(settings, layer="features", table=view.table) for g in groups]
    return [u for u in dict.fromkeys(uris) if table_exists(u)]


def read_feature_table(
    view: FeatureView,
    tenant_ids: Sequence[str],
    *,
    features: Sequence[str] | None = None,
    settings: Settings | None = None,
    snapshot_date: bool = True,
    groups: Sequence[LakeGroup] | None = None,
) -> pa.Table:
    """Every offline row of `view` for `tenant_ids` (join keys, timestamps and the chosen features).

    `snapshot_date=False` leaves that column out; `groups` are the tenants' lake groups when the caller
    already has them (one registry look-up for many views).
    """
    import pyarrow as pa

    columns = [*view.join_keys, *([SNAPSHOT_DATE] if snapshot_date else []), FEATURE_TIMESTAMP,
               *(features or view.feature_names)]
    parts = [read_arrow(uri, columns=columns, filters=[("tenant_id", "in", list(tenant_ids))])
             for uri in feature_table_uris(view, tenant_ids, settings, groups=groups)]
    if not parts:
        return empty_feature_table(view, columns)
    return pa.concat_tables(parts, promote_options="permissive") if len(parts) > 1 else parts[0]


def offline_batches(view: FeatureView, tenant_ids: Sequence[str], *, settings: Settings | None = None,
                    groups: Sequence[LakeGroup] | None = None) -> list[Any]:
    """`read_feature_table`'s rows as streams, one record-batch reader per offline table (an empty table when there
    is none): for a consumer that aggregates as it reads, so the rows are never held together."""
    columns = [*view.join_keys, SNAPSHOT_DATE, FEATURE_TIMESTAMP, *view.feature_names]
    readers = [read_batches(uri, columns=columns, filters=[("tenant_id", "in", list(tenant_ids))])
               for uri in feature_table_uris(view, tenant_ids, settings, groups=groups)]
    return readers or [empty_feature_table(view, columns)]


def empty_feature_table(view: FeatureView, columns: Sequence[str]) -> pa.Table:
    import pyarrow as pa

    types = {"tenant_id": pa.string(), "customer_id": pa.string(), SNAPSHOT_DATE: pa.date32(),
             FEATURE_TIMESTAMP: pa.timestamp("us", tz="UTC")}
    types.update({f.name: pa.int64() if f.dtype == "int64" else pa.float64() for f in view.features})
    return pa.schema([(c, types[c]) for c in columns]).empty_table()
