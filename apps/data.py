"""The dashboards' read side: gold, prediction, quarantine, run-log, audit and model-registry reads.

Every tenant read passes `tenant_id` to the kernel's lake reader, which pushes `tenant_id = T` into the
Delta scan (partition and min/max pruning), so a page can only ever receive that tenant's rows.
Reads are cached with `st.cache_data` for `settings.dashboard_cache_ttl_seconds`; the lake URI is part
of every cache key, so two lakes never share an entry.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import polars as pl
import streamlit as st

from shironzi.alerts.rules import STORAGE_QUOTA_RULE
from shironzi.audit.erasure import receipts_table_uri
from shironzi.audit.log import read_audit_events
from shironzi.errors import TableNotFoundError
from shironzi.lake import history, read_polars, scan_polars, table_exists, table_uri, table_version
from shironzi.lake.discovery import discover_tables
from shironzi.lake.groups import LakeGroup, region_groups, tenant_group
from shironzi.lake.paths import Layer, platform_uri
from shironzi.metering.cost import month_bounds, monthly_costs
from shironzi.metering.usage import usage_uri
from shironzi.observability import stage
from shironzi.settings import get_settings
from shironzi.tenancy import get_registry

log = logging.getLogger("shironzi.apps")
TTL = get_settings().dashboard_cache_ttl_seconds

GOLD_KPIS = "fct_tenant_daily_kpis"
GOLD_RETENTION = "fct_cohort_retention"
GOLD_USAGE = "fct_tenant_usage"
GOLD_CUSTOMERS = "dim_customers"
CHURN_SCORES = "churn_scores"
FORECASTS = "forecasts"
MODEL_NAMES = ("shironzi-churn", "shironzi-trend")


@dataclass(frozen=True)
class Frame:
    """A read result with what the page needs to be honest about freshness."""

    data: pl.DataFrame
    version: int | None
    read_at: dt.datetime

    @property
    def empty(self) -> bool:
        return self.data.is_empty()


_R = TypeVar("_R")


def logged(read: Callable[..., _R]) -> Callable[..., _R]:
    """Log one stage summary line per lake read (cache misses only: it sits under `st.cache_data`)."""

    @functools.wraps(read)
    def wrapper(*args: Any, **kwargs: Any) -> _R:
        with stage(f"dashboard.{read.__name__}", args=[a for a in args[1:] if isinstance(a, str)]) as summary:
            result = read(*args, **kwargs)
            if isinstance(result, Frame):
                summary.rows, summary.table_version = result.data.height, result.version
            elif isinstance(result, pl.DataFrame):
                summary.rows = result.height
        return result

    return wrapper


def lake() -> str:
    return get_settings().resolved_lake_uri


def _tenant_table(lake_uri: str, region: str, layer: Layer, table: str, tenant_id: str | None = None) -> str:
    """A table of the region: the pooled one, or (for a dedicated tenant) the tenant's own."""
    group = LakeGroup.pooled(region) if tenant_id is None else tenant_group(tenant_id, region=region)
    return group.table_uri(lake_uri, layer=layer, table=table)


def _gold(lake_uri: str, region: str, table: str, tenant_id: str | None = None) -> str:
    return _tenant_table(lake_uri, region, "gold", table, tenant_id)


def _region_gold(lake_uri: str, region: str, table: str) -> list[str]:
    """Every copy of a gold table in a region: the pooled one, then each dedicated tenant's own."""
    return [group.table_uri(lake_uri, layer="gold", table=table) for group in region_groups(region)]


def _read_region(lake_uri: str, region: str, table: str) -> Frame:
    """An operator read of a gold table across the region's pooled and dedicated copies (the version shown is
    the pooled table's)."""
    frames = [_read(uri, tenant_id=None) for uri in _region_gold(lake_uri, region, table)]
    parts = [f.data for f in frames if not f.empty]
    data = pl.concat(parts, how="diagonal_relaxed") if len(parts) > 1 else (parts[0] if parts else pl.DataFrame())
    return Frame(data, frames[0].version, frames[0].read_at)


def _version(uri: str) -> int | None:
    try:
        return table_version(uri)
    except TableNotFoundError:
        return None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _read(
    uri: str,
    *,
    tenant_id: str | None,
    columns: Sequence[str] | None = None,
    filters: list[tuple[str, str, Any]] | None = None,
) -> Frame:
    """One Delta read (tenant-scoped when `tenant_id` is given); a missing table is an empty frame."""
    if not table_exists(uri):
        return Frame(pl.DataFrame(), None, _now())
    frame = read_polars(uri, columns=columns, filters=filters, tenant_id=tenant_id)
    return Frame(frame, _version(uri), _now())


# --- analyst reads (always one tenant) ----------------------------------------------------------------


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def daily_kpis(lake_uri: str, region: str, tenant_id: str) -> Frame:
    frame = _read(_gold(lake_uri, region, GOLD_KPIS, tenant_id), tenant_id=tenant_id)
    return Frame(frame.data.sort("event_date") if not frame.empty else frame.data, frame.version, frame.read_at)


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def latest_forecasts(lake_uri: str, region: str, tenant_id: str) -> Frame:
    """The newest generated forecast of each KPI."""
    uri = _tenant_table(lake_uri, region, "predictions", FORECASTS, tenant_id)
    frame = _read(uri, tenant_id=tenant_id)
    if frame.empty:
        return frame
    latest = frame.data.group_by("kpi").agg(pl.col("generated_date").max().alias("_latest"))
    data = (
        frame.data.join(latest, on="kpi")
        .filter(pl.col("generated_date") == pl.col("_latest"))
        .drop("_latest")
        .sort("kpi", "forecast_date")
    )
    return Frame(data, frame.version, frame.read_at)


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def cohort_retention(lake_uri: str, region: str, tenant_id: str) -> Frame:
    return _read(_gold(lake_uri, region, GOLD_RETENTION, tenant_id), tenant_id=tenant_id)


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def latest_churn_scores(lake_uri: str, region: str, tenant_id: str) -> Frame:
    """The tenant's scores of its newest score_date."""
    uri = _tenant_table(lake_uri, region, "predictions", CHURN_SCORES, tenant_id)
    if not table_exists(uri):
        return Frame(pl.DataFrame(), None, _now())
    newest = scan_polars(uri, tenant_id=tenant_id).select(pl.col("score_date").max()).collect().item()
    if newest is None:
        return Frame(pl.DataFrame(), _version(uri), _now())
    frame = _read(uri, tenant_id=tenant_id, filters=[("score_date", "=", newest)])
    return Frame(frame.data.sort("churn_probability", descending=True), frame.version, frame.read_at)


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def customer_count(lake_uri: str, region: str, tenant_id: str) -> int:
    uri = _gold(lake_uri, region, GOLD_CUSTOMERS, tenant_id)
    if not table_exists(uri):
        return 0
    return int(scan_polars(uri, tenant_id=tenant_id).select(pl.len()).collect().item())


def bronze_uri(lake_uri: str, region: str, placement: str, tenant_id: str) -> str:
    return LakeGroup.of_tenant(tenant_id, region=region, placement=placement).table_uri(lake_uri, layer="bronze",
                                                                                       table="events")


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def source_freshness(lake_uri: str, region: str, placement: str, tenant_id: str) -> Frame:
    """Per source: rows landed, newest event and newest landing time (from the tenant's bronze rows)."""
    uri = bronze_uri(lake_uri, region, placement, tenant_id)
    if not table_exists(uri):
        return Frame(pl.DataFrame(), None, _now())
    data = (
        scan_polars(uri, tenant_id=tenant_id)
        .group_by("source")
        .agg(
            pl.len().alias("rows_landed"),
            pl.col("event_time").max().alias("newest_event"),
            pl.col("ingested_at").max().alias("last_landed_at"),
        )
        .sort("source")
        .collect()
    )
    return Frame(data, _version(uri), _now())


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def feature_freshness(lake_uri: str, region: str, tenant_id: str) -> Frame:
    """Per offline feature view of the tenant's region: the tenant's rows and its newest snapshot."""

    rows = []
    for table in discover_tables():
        if table.platform or table.region != region or table.layer != "features" or table.tenant_id not in (
            None, tenant_id
        ):
            continue
        scan = scan_polars(table.uri, tenant_id=tenant_id)
        names = scan.collect_schema().names()
        if "feature_timestamp" not in names:
            continue
        stats = scan.select(
            pl.len().alias("rows"),
            (pl.col("snapshot_date").max() if "snapshot_date" in names else pl.lit(None)).alias("newest_snapshot"),
            pl.col("feature_timestamp").max().alias("newest_feature_time"),
        ).collect().row(0, named=True)
        if stats["rows"]:
            rows.append({"view": table.name, **stats})
    return Frame(pl.DataFrame(rows).sort("view") if rows else pl.DataFrame(), None, _now())


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def usage(lake_uri: str, region: str, tenant_id: str | None) -> Frame:
    """Metering per day (one tenant, or every tenant of the region for operators, dedicated ones included)."""
    if tenant_id is None:
        return _read_region(lake_uri, region, GOLD_USAGE)
    return _read(_gold(lake_uri, region, GOLD_USAGE, tenant_id), tenant_id=tenant_id)


@dataclass(frozen=True)
class CostPage:
    """One filtered page of tenant costs: at most `limit` rows, and the figures of every tenant that matched."""

    rows: pl.DataFrame
    matched: int
    cost: float
    margin: float
    version: int | None


COST_ORDERS = {"lowest margin": ("margin", False), "highest cost": ("cost", True), "slug": ("slug", False)}


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def tenant_costs(lake_uri: str, month: str, plan: str | None, region: str | None, slug_prefix: str, order: str,
                 limit: int) -> CostPage:
    """Each tenant's cost and margin for `month` (YYYY-MM) from `_platform/usage`, filtered by plan, region and
    slug prefix and sorted here, on the server: the page gets at most `limit` rows, whatever the tenant count."""
    first, last = month_bounds(dt.date.fromisoformat(f"{month}-01"))
    tenants = pl.DataFrame([t._asdict() for t in get_registry().tenant_directory().values()],
                           schema={"tenant_id": pl.String, "slug": pl.String, "industry": pl.String,
                                   "region": pl.String, "plan": pl.String, "placement": pl.String,
                                   "status": pl.String})
    if plan:
        tenants = tenants.filter(pl.col("plan") == plan)
    if region:
        tenants = tenants.filter(pl.col("region") == region)
    if slug_prefix:
        tenants = tenants.filter(pl.col("slug").str.starts_with(slug_prefix.strip().lower()))
    uri = usage_uri(get_settings())
    if tenants.is_empty() or not table_exists(uri):
        return CostPage(pl.DataFrame(), tenants.height, 0.0, 0.0, None)
    usage = scan_polars(uri, filters=[("day", ">=", first), ("day", "<=", last)]).filter(
        pl.col("tenant_id").is_in(tenants["tenant_id"].implode()))
    costs = monthly_costs(usage, tenants.select("tenant_id", "plan"), month=first).join(
        tenants.select("tenant_id", "slug", "region", "placement"), on="tenant_id")
    column, descending = COST_ORDERS[order]
    top = costs.sort(column, descending=descending, nulls_last=True).head(limit)
    return CostPage(top, costs.height, float(costs["cost"].sum()), float(costs["margin"].sum()), _version(uri))


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def quarantine_by_reason(lake_uri: str, region: str, tenant_id: str) -> Frame:
    """Quarantined records that claimed this tenant, by reason code (payloads are never shown)."""
    uri = table_uri(lake_uri, layer="quarantine", table="events", region=region)
    if not table_exists(uri):
        return Frame(pl.DataFrame(), None, _now())
    data = (
        scan_polars(uri, tenant_id=tenant_id)
        .group_by("reason_code")
        .agg(pl.len().alias("records"), pl.col("quarantined_at").max().alias("last_seen"))
        .sort("records", descending=True)
        .collect()
    )
    return Frame(data, _version(uri), _now())


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def tenant_anomalies(lake_uri: str, tenant_id: str, limit: int = 200) -> Frame:
    """This tenant's data anomalies found by the detector (`_platform/monitoring/anomalies`), newest first: the
    read is scoped to its tenant_id, so no other tenant's rows reach the page."""
    uri = platform_uri(lake_uri, "monitoring", "anomalies")
    frame = _read(uri, tenant_id=tenant_id, columns=["event_date", "kind", "score", "expected", "observed"])
    if frame.empty:
        return frame
    data = frame.data.sort(["event_date", "score"], descending=[True, True]).head(limit)
    return Frame(data, frame.version, frame.read_at)


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def tenant_notices(lake_uri: str, tenant_id: str) -> Frame:
    """This tenant's open alerts that its own dashboards show as notices (storage above the plan's quota): a
    read of `_platform/alerts` scoped to its tenant_id."""
    frame = _read(platform_uri(lake_uri, "alerts"), tenant_id=tenant_id, columns=["rule", "status", "summary"],
                  filters=[("rule", "=", STORAGE_QUOTA_RULE)])
    if frame.empty:
        return frame
    return Frame(frame.data.filter(pl.col("status").is_in(["firing", "silenced"])), frame.version, frame.read_at)


# --- platform reads (operators) -----------------------------------------------------------------------


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def ingest_runs(lake_uri: str, limit: int = 200) -> Frame:
    """The newest ingestion run-log rows (platform-wide: the rows carry no tenant)."""
    uri = platform_uri(lake_uri, "ingest", "runs")
    frame = _read(uri, tenant_id=None)
    if frame.empty:
        return frame
    return Frame(frame.data.sort("started_at", descending=True).head(limit), frame.version, frame.read_at)


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def region_kpis(lake_uri: str, region: str) -> Frame:
    """Every tenant's daily KPIs in one region, dedicated tenants included (operators only)."""
    return _read_region(lake_uri, region, GOLD_KPIS)


def dbt_run_results(home: Path, region: str) -> pl.DataFrame:
    """The last `dbt build` of a region: one row per node from dbt's run_results.json; the builds of its dedicated
    tenants follow, their `region` shown as `<region>/tenants/<tenant_id>`."""
    work = home / "dbt" / region
    builds = [(region, work), *((f"{region}/tenants/{d.name}", d) for d in sorted((work / "tenants").glob("*")))]
    frames = [_run_results(scope, path / "target" / "run_results.json") for scope, path in builds]
    frames = [f for f in frames if not f.is_empty()]
    return pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()


def _run_results(scope: str, path: Path) -> pl.DataFrame:
    if not path.exists():
        return pl.DataFrame()
    document = json.loads(path.read_text())
    generated = document.get("metadata", {}).get("generated_at")
    rows = [
        {
            "region": scope,
            "node": str(item.get("unique_id", "")).split(".", 2)[-1],
            "kind": str(item.get("unique_id", "")).split(".", 1)[0],
            "status": str(item.get("status")),
            "seconds": float(item.get("execution_time") or 0.0),
            "message": item.get("message") or "",
            "generated_at": generated,
        }
        for item in document.get("results", [])
    ]
    return pl.DataFrame(rows)


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def gold_history(lake_uri: str, region: str, table: str, limit: int = 50) -> Frame:
    uri = _gold(lake_uri, region, table)
    if not table_exists(uri):
        return Frame(pl.DataFrame(), None, _now())
    return Frame(_history_frame(history(uri, limit)), _version(uri), _now())


def _history_frame(commits: list[dict[str, Any]]) -> pl.DataFrame:
    rows = [
        {
            "version": int(c["version"]),
            "time": c["timestamp"],
            "operation": str(c.get("operation") or ""),
            "engine": str(c.get("engineInfo") or c.get("clientVersion") or ""),
            "rows_written": _metric(c, "num_added_rows", "num_output_rows", "numOutputRows"),
            "metadata": json.dumps(c.get("userMetadata") or {}, default=str, sort_keys=True),
        }
        for c in commits
    ]
    return pl.DataFrame(rows, schema_overrides={"rows_written": pl.Int64})


def _metric(commit: dict[str, Any], *names: str) -> int | None:
    metrics = commit.get("operationMetrics") or {}
    for name in names:
        if metrics.get(name) is not None:
            try:
                return int(metrics[name])
            except (TypeError, ValueError):
                continue
    return None


# --- compliance reads ---------------------------------------------------------------------------------


def lake_tables(lake_uri: str, tenant_id: str | None) -> list[tuple[str, str]]:
    """(relative path, uri) of every Delta table a viewer may see the history of: all for admins; for a
    tenant, the pooled tables of its region layers plus its own dedicated root (never platform tables)."""

    found = []
    for table in discover_tables():
        if tenant_id is not None and (table.platform or table.tenant_id not in (None, tenant_id)):
            continue
        found.append((table.relative, table.uri))
    return sorted(found)


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def table_history(lake_uri: str, uri: str, limit: int = 100) -> Frame:
    if not table_exists(uri):
        return Frame(pl.DataFrame(), None, _now())
    return Frame(_history_frame(history(uri, limit)), _version(uri), _now())


@logged
def audit_events(
    *,
    tenant_id: str | None,
    actor: str | None = None,
    action: str | None = None,
    start: dt.date | None = None,
    end: dt.date | None = None,
    limit: int = 500,
) -> pl.DataFrame:
    """Audit rows newest first, filtered in the scan (tenant_id is forced for tenant viewers)."""

    filters: list[tuple[str, str, Any]] = []
    if tenant_id is not None:
        filters.append(("tenant_id", "=", tenant_id))
    if actor:
        filters.append(("actor", "=", actor))
    if action:
        filters.append(("action", "=", action))
    if start:
        filters.append(("event_date", ">=", start))
    if end:
        filters.append(("event_date", "<=", end))
    table = read_audit_events(filters=filters or None)
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    if frame.is_empty():
        return frame
    columns = ["event_time", "actor", "actor_kind", "is_admin", "tenant_id", "action", "resource", "purpose",
               "outcome", "request_id", "details"]
    return frame.select(columns).sort("event_time", descending=True).head(limit)


@logged
def erasure_requests(tenant_id: str | None) -> pl.DataFrame:
    """Erasure requests (from the audit log) joined to their signed receipts, newest first."""

    events = audit_events(tenant_id=tenant_id, limit=100_000)
    started = (
        events.filter(pl.col("action").is_in(["subject_erasure_started", "tenant_erasure_started"]))
        if not events.is_empty()
        else pl.DataFrame()
    )
    uri = receipts_table_uri()
    receipts = (
        read_polars(uri, tenant_id=tenant_id) if table_exists(uri) else pl.DataFrame()
    )
    rows: dict[str, dict[str, Any]] = {}
    for event in started.iter_rows(named=True) if not started.is_empty() else []:
        rows[event["request_id"]] = {
            "request_id": event["request_id"],
            "kind": "tenant" if event["action"].startswith("tenant") else "subject",
            "tenant_id": event["tenant_id"],
            "requested_by": event["actor"],
            "requested_at": event["event_time"],
            "status": "in progress or failed (no receipt)",
            "receipt": None,
        }
    for receipt in receipts.iter_rows(named=True) if not receipts.is_empty() else []:
        body = json.loads(receipt["receipt"])
        entry = rows.setdefault(receipt["request_id"], {"request_id": receipt["request_id"]})
        entry.update(
            kind=receipt["kind"],
            tenant_id=receipt["tenant_id"],
            requested_by=entry.get("requested_by") or body.get("requested_by"),
            requested_at=entry.get("requested_at") or receipt["created_at"],
            status="erased and verified" if receipt["ok"] else "verification failed",
            receipt=receipt["receipt"],
            tables=len(body.get("tables", [])),
            rows_deleted=sum(int(t.get("rows_deleted", 0)) for t in body.get("tables", [])),
            completed_at=receipt["created_at"],
        )
    if not rows:
        return pl.DataFrame()
    return pl.DataFrame(list(rows.values())).sort("requested_at", descending=True, nulls_last=True)


# --- the model registry (MLflow) ------------------------------------------------------------------------


_MODEL_NAMES = ("shironzi-churn", "shironzi-trend")


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def model_versions(tracking_uri: str) -> pl.DataFrame:
    """Every registered version of the Shironzi models: when, its aliases and the metrics of its run.

    Read through MLflow's client, so the embedded SQLite store and a tracking server both work; the server
    process imports mlflow at start (`apps.warm_start`), so a page does not pay for it."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    rows = []
    try:
        for name in _MODEL_NAMES:
            found = client.search_model_versions(f"name = '{name}'")
            if not found:
                continue
            alias_of: dict[str, list[str]] = {}
            for alias, number in (client.get_registered_model(name).aliases or {}).items():
                alias_of.setdefault(str(number), []).append(alias)
            for version in found:
                metrics = client.get_run(version.run_id).data.metrics if version.run_id else {}
                rows.append(
                    {
                        "model": name,
                        "version": str(version.version),
                        "registered_at": dt.datetime.fromtimestamp(version.creation_timestamp / 1000, tz=dt.UTC),
                        "aliases": ", ".join(sorted(alias_of.get(str(version.version), []))),
                        "run_id": version.run_id,
                        "metrics": json.dumps(metrics, sort_keys=True),
                    }
                )
    except MlflowException as exc:  # nothing trained yet, or the tracking server is unreachable
        log.warning("model registry at %s unavailable: %s", tracking_uri, exc)
        return pl.DataFrame()
    if not rows:
        return pl.DataFrame()
    return pl.DataFrame(rows).sort("model", pl.col("version").cast(pl.Int64))


@st.cache_data(ttl=TTL, show_spinner=False)
@logged
def model_events(lake_uri: str) -> pl.DataFrame:
    """Training runs, promotions and rollbacks from the audit log (resource `model:<name>`)."""
    del lake_uri

    frame = pl.from_arrow(read_audit_events(flush=False))
    assert isinstance(frame, pl.DataFrame)
    if frame.is_empty():
        return frame
    return (
        frame.filter(pl.col("resource").str.starts_with("model:"))
        .select("event_time", "action", "resource", "actor", "outcome", "details")
        .sort("event_time", descending=True)
    )

