"""Per-plan quotas (ingest rate, storage) resolved with the settings' overrides, and each tenant's storage.

The catalogue (`catalog.PLAN_QUOTAS`) holds the defaults; `SHIRONZI_PLAN_QUOTAS` overrides any field of any plan.
Raising a quota is a settings change or a plan change (an event-sourced tenant change): the stream ingestor
rereads both with its tenant directory, and `shironzi ingest replay-quarantine --reason quota_exceeded` then
lands what the old quota held back (`ingestion.replay`).

Storage is measured from the lake in one pass per table, never one per tenant: a dedicated tenant owns its
tables' bytes; a pooled table's bytes are apportioned by each tenant's share of its rows (one grouped count).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from shironzi.lake.discovery import discover_tables
from shironzi.lake.reads import open_table
from shironzi.metering.usage import table_bytes_by_tenant
from shironzi.settings import Settings, get_settings
from shironzi.tenancy.catalog import PLAN_QUOTAS, PLANS, PlanQuota
from shironzi.tenancy.registry import get_registry

GB = 1_000_000_000


def plan_quota(plan: str, settings: Settings | None = None) -> PlanQuota:
    """The quota of `plan`: the catalogue's, with the settings' overrides applied."""
    settings = settings or get_settings()
    base = PLAN_QUOTAS.get(plan, PLAN_QUOTAS["free"])
    overrides = settings.plan_quotas.get(plan)  # type: ignore[call-overload]
    if overrides is None:
        return base
    fields = overrides.model_dump(exclude_none=True) if hasattr(overrides, "model_dump") else dict(overrides)
    return dataclasses.replace(base, **{name: float(value) for name, value in fields.items()})


def plan_quotas(settings: Settings | None = None) -> dict[str, PlanQuota]:
    """Every plan's effective quota."""
    return {plan: plan_quota(plan, settings) for plan in PLANS}


def quota_frame(tenants: Iterable[Any], settings: Settings | None = None) -> Any:
    """`tenant_id, ingest_rate, ingest_burst, storage_bytes` for tenants with `tenant_id` and `plan` attributes
    (a `TenantInfo` directory): one join away from any batch of rows."""
    import polars as pl

    quotas = plan_quotas(settings)
    plans = pl.DataFrame(
        {"plan": list(quotas), "ingest_rate": [q.ingest_rate for q in quotas.values()],
         "ingest_burst": [q.ingest_burst for q in quotas.values()],
         "storage_bytes": [q.storage_gb * GB for q in quotas.values()]},
        schema={"plan": pl.String, "ingest_rate": pl.Float64, "ingest_burst": pl.Float64,
                "storage_bytes": pl.Float64},
    )
    items = list(tenants.values()) if isinstance(tenants, Mapping) else list(tenants)
    frame = pl.DataFrame({"tenant_id": [t.tenant_id for t in items], "plan": [t.plan for t in items]},
                         schema={"tenant_id": pl.String, "plan": pl.String})
    frame = frame.with_columns(pl.when(pl.col("plan").is_in(list(quotas))).then("plan").otherwise(pl.lit("free")))
    return frame.join(plans, on="plan", how="left").drop("plan")


def storage_by_tenant(settings: Settings | None = None) -> Any:
    """`tenant_id, storage_bytes`: each tenant's bytes across the lake's tenant tables (every region and layer;
    platform tables excluded), split as metering splits them (`table_bytes_by_tenant`: a dedicated table is its
    tenant's, a pooled table's single-tenant files are exact and its mixed files are shared by row count)."""
    import polars as pl


    settings = settings or get_settings()
    options = settings.storage_options or None
    parts = []
    for table in discover_tables(settings.resolved_lake_uri, include_platform=False):
        columns = [f.name for f in open_table(table.uri, storage_options=options).schema().fields]
        if table.tenant_id is None and "tenant_id" not in columns:
            continue
        parts.append(table_bytes_by_tenant(table.uri, tenant_id=table.tenant_id, settings=settings))
    if not parts:
        return pl.DataFrame(schema={"tenant_id": pl.String, "storage_bytes": pl.Float64})
    merged = pl.concat(parts, how="vertical_relaxed").drop_nulls("tenant_id")
    return (merged.group_by("tenant_id").agg(pl.col("bytes").sum().cast(pl.Float64).alias("storage_bytes"))
            .sort("tenant_id"))


def storage_over_quota(settings: Settings | None = None, *, tenants: Mapping[str, Any] | None = None) -> list[
        dict[str, Any]]:
    """The tenants whose storage is above their plan's quota: `tenant_id, storage_bytes, quota_bytes`."""
    import polars as pl

    settings = settings or get_settings()
    if tenants is None:
        tenants = get_registry(settings).tenant_directory()
    used = storage_by_tenant(settings)
    if used.is_empty():
        return []
    quotas = quota_frame(tenants, settings).select("tenant_id", pl.col("storage_bytes").alias("quota_bytes"))
    over = used.join(quotas, on="tenant_id", how="inner").filter(pl.col("storage_bytes") > pl.col("quota_bytes"))
    return over.sort("tenant_id").to_dicts()
