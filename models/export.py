"""`shironzi score export`: one tenant's batch predictions (churn scores or forecasts) as CSV or Parquet.

The read goes through the tenant's lake group (its dedicated root, and its region's pooled tables where rows
written before a placement move may still live), filtered by `tenant_id`: no other tenant's row leaves."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Literal

import polars as pl

from models.predictions import CHURN_SCORES_TABLE, FORECASTS_TABLE
from shironzi.audit.disclosures import record_disclosure
from shironzi.errors import InvalidInputError, NotFoundError
from shironzi.lake.groups import LakeGroup
from shironzi.lake.reads import read_polars, table_exists
from shironzi.settings import Settings, get_settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.registry import get_registry

ExportFormat = Literal["csv", "parquet"]
EXPORT_TABLES = {CHURN_SCORES_TABLE: "score_date", FORECASTS_TABLE: "generated_date"}


@dataclass(frozen=True)
class ExportResult:
    """What was exported: rows, the slice's date and where it went (None: standard output)."""

    rows: int
    day: date
    path: Path | None


def tenant_predictions(tenant: str, table: str, *, day: date | None = None,
                       settings: Settings | None = None) -> tuple[pl.DataFrame, date]:
    """One tenant's rows of a predictions table for `day` (default: its newest slice)."""
    settings = settings or get_settings()
    if table not in EXPORT_TABLES:
        raise InvalidInputError(f"unknown predictions table {table!r}: use {' or '.join(EXPORT_TABLES)}")
    found = get_registry(settings).get_tenant(tenant)
    groups = (LakeGroup.of_tenant(found.id, region=found.region, placement=found.placement),
              LakeGroup.pooled(found.region))
    options = settings.storage_options or None
    uris = [u for u in dict.fromkeys(g.uri(settings, layer="predictions", table=table) for g in groups)
            if table_exists(u, storage_options=options)]
    frames = [read_polars(u, tenant_id=found.id, storage_options=options) for u in uris]
    rows = pl.concat(frames, how="diagonal_relaxed") if frames else pl.DataFrame()
    if rows.is_empty():
        raise NotFoundError(f"no {table} yet for tenant {found.slug!r}: run `shironzi score` first",
                            tenant=found.slug)
    rows = rows.filter(pl.col("tenant_id") == found.id)  # belt and braces: the read filtered already
    column = EXPORT_TABLES[table]
    newest = rows.get_column(column).max()
    chosen = day or (newest if isinstance(newest, date) else None)
    if chosen is None:
        raise NotFoundError(f"no dated {table} for tenant {found.slug!r}", tenant=found.slug)
    rows = rows.filter(pl.col(column) == chosen)
    if rows.is_empty():
        raise NotFoundError(f"no {table} of tenant {found.slug!r} for {chosen}", tenant=found.slug)
    keys = ["customer_id"] if table == CHURN_SCORES_TABLE else ["kpi", "horizon_day"]
    return rows.sort(keys), chosen


def export_predictions(tenant: str, table: str, *, fmt: ExportFormat, out: Path | None = None,
                       day: date | None = None, settings: Settings | None = None,
                       actor: str = "cli:score-export") -> ExportResult:
    """Write one tenant's predictions slice as CSV or Parquet to `out` (CSV only: standard output); the
    export is audited with the customers it carried (the accounting of disclosures)."""
    if fmt not in ("csv", "parquet"):
        raise InvalidInputError(f"unknown export format {fmt!r}: use csv or parquet")
    if fmt == "parquet" and out is None:
        raise InvalidInputError("a Parquet export needs --out FILE")
    rows, chosen = tenant_predictions(tenant, table, day=day, settings=settings)
    subjects = rows.get_column("customer_id").to_list() if "customer_id" in rows.columns else []
    record_disclosure(TenantContext.admin(actor=actor, purpose="score_export"), "data_exported",
                      tenant_id=str(rows.get_column("tenant_id")[0]), subject_ids=subjects,
                      resource=f"export:{table}", details={"format": fmt, "rows": rows.height, "day": chosen})
    if fmt == "parquet":
        rows.write_parquet(out)  # type: ignore[arg-type]
    elif out is None:
        sys.stdout.write(rows.write_csv())
    else:
        rows.write_csv(out)
    return ExportResult(rows.height, chosen, out)
