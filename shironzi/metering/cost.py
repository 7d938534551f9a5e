"""The cost model: what serving each tenant costs the platform in a month, from its metered usage and its plan's
unit prices (`SHIRONZI_PLAN_COSTS`), and the margin against the plan's price.

    cost = events / 1e6 * per_million_events + gb_month * per_gb_month + api_requests / 1e3 * per_thousand_api_calls
    gb_month = sum over the month's metered days of bytes_total / 1e9, divided by the days in the month
    margin = plan_price - cost

Vectorised over every tenant: one group-by of the usage rows, one join with the plans.
"""

from __future__ import annotations

import calendar
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from shironzi.errors import InvalidInputError
from shironzi.metering.usage import USAGE_COLUMNS, read_usage
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import get_registry

if TYPE_CHECKING:
    import polars as pl

BYTES_PER_GB = 1_000_000_000
COST_COLUMNS: tuple[str, ...] = (
    "tenant_id", "plan", "events_landed", "gb_month", "api_requests", "compute_seconds", "cost_events",
    "cost_storage", "cost_api", "cost", "plan_price", "margin",
)


def month_bounds(month: date) -> tuple[date, date]:
    """The first and last day of `month`'s calendar month."""
    last = calendar.monthrange(month.year, month.month)[1]
    return month.replace(day=1), month.replace(day=last)


def plan_prices(settings: Settings) -> pl.DataFrame:
    import polars as pl

    rows = [{"plan": plan, **cost.model_dump()} for plan, cost in sorted(settings.plan_costs.items())]
    return pl.DataFrame(rows, schema={"plan": pl.String, "plan_price": pl.Float64, "per_million_events": pl.Float64,
                                      "per_gb_month": pl.Float64, "per_thousand_api_calls": pl.Float64})


def monthly_costs(
    usage: pl.DataFrame | pl.LazyFrame, plans: pl.DataFrame, *, month: date, settings: Settings | None = None
) -> pl.DataFrame:
    """Each tenant's cost and margin for `month` from its usage rows in that month and `plans` (tenant_id, plan).
    A plan without a cost model is an error naming it."""
    import polars as pl

    settings = settings or get_settings()
    first, last = month_bounds(month)
    prices = plan_prices(settings)
    unknown = sorted(set(plans["plan"].unique().to_list()) - set(prices["plan"].to_list()))
    if unknown:
        raise InvalidInputError(f"no cost model for plan(s) {', '.join(unknown)}: set SHIRONZI_PLAN_COSTS",
                                plans=unknown)
    days = (last - first).days + 1
    per_tenant = (
        usage.lazy().filter(pl.col("day").is_between(first, last))
        .group_by("tenant_id")
        .agg(pl.col("events_landed").sum(), (pl.col("bytes_total").sum() / BYTES_PER_GB / days).alias("gb_month"),
             pl.col("api_requests").sum(), pl.col("compute_seconds").sum())
    )
    return (
        plans.lazy().select("tenant_id", "plan").join(per_tenant, on="tenant_id", how="left")
        .with_columns(pl.col("events_landed", "api_requests").fill_null(0),
                      pl.col("gb_month", "compute_seconds").fill_null(0.0))
        .join(prices.lazy(), on="plan", how="left")
        .with_columns((pl.col("events_landed") / 1e6 * pl.col("per_million_events")).alias("cost_events"),
                      (pl.col("gb_month") * pl.col("per_gb_month")).alias("cost_storage"),
                      (pl.col("api_requests") / 1e3 * pl.col("per_thousand_api_calls")).alias("cost_api"))
        .with_columns((pl.col("cost_events") + pl.col("cost_storage") + pl.col("cost_api")).alias("cost"))
        .with_columns((pl.col("plan_price") - pl.col("cost")).alias("margin"))
        .select(COST_COLUMNS)
        .collect()
    )


def usage_totals(usage: pl.DataFrame) -> dict[str, Any]:
    """The sums of one tenant's usage rows: the figures a report or the API shows."""

    metrics = [c for c in USAGE_COLUMNS if c not in ("tenant_id", "day", "collected_at")]
    sums = {c: (usage[c].sum() if usage.height else 0) for c in metrics}
    sums = {c: (round(float(v), 3) if c.startswith("compute_seconds") else int(v)) for c, v in sums.items()}
    if usage.height:  # storage is a level, not a flow: the newest day's bytes
        newest = usage.sort("day").tail(1)
        sums.update({c: int(newest[c][0]) for c in metrics if c.startswith("bytes_")})
    return sums


def tenant_usage_report(
    tenant_id: str, *, start: date, end: date, settings: Settings | None = None
) -> dict[str, Any]:
    """One tenant's usage over [start, end]: its daily rows, their totals, and the cost of each calendar month
    the range touches (priced by its current plan). The CLI, the admin API and the tenant API all show this."""
    import polars as pl


    settings = settings or get_settings()
    tenant = get_registry(settings).get_tenant(tenant_id)
    rows = read_usage(start=start, end=end, tenant_id=tenant.id, settings=settings)
    plans = pl.DataFrame({"tenant_id": [tenant.id], "plan": [tenant.plan]})
    months, cursor = [], start.replace(day=1)
    while cursor <= end:
        cost = monthly_costs(rows, plans, month=cursor, settings=settings).row(0, named=True)
        months.append({"month": f"{cursor:%Y-%m}", **{k: v for k, v in cost.items() if k != "tenant_id"}})
        cursor = month_bounds(cursor)[1] + timedelta(days=1)
    return {
        "tenant_id": tenant.id, "slug": tenant.slug, "plan": tenant.plan, "start": start.isoformat(),
        "end": end.isoformat(), "days_metered": rows.height, "totals": usage_totals(rows),
        "months": months, "daily": [{**r, "day": r["day"].isoformat(), "collected_at": r["collected_at"].isoformat()}
                                    for r in rows.to_dicts()],
    }


def month_to_date(tenant_id: str, *, today: date | None = None, settings: Settings | None = None) -> dict[str, Any]:
    """One tenant's metered usage from the first of the month to `today` (default: the current UTC day)."""

    end = today or datetime.now(UTC).date()
    start = end.replace(day=1)
    rows = read_usage(start=start, end=end, tenant_id=tenant_id, settings=settings)
    totals = usage_totals(rows)
    return {"start": start, "end": end, "days_metered": rows.height,
            **{k: totals[k] for k in ("events_landed", "bytes_total", "api_requests", "compute_seconds")}}
