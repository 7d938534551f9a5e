"""Tenants (operators): counts by plan, industry, region and placement; the biggest tenants; usage; each
tenant's monthly cost and margin (filtered on the server: the table never holds every tenant)."""

from __future__ import annotations

import datetime as dt

import altair as alt
import polars as pl
import streamlit as st

from apps import data
from apps.auth import registry, require_page
from apps.components import empty_state, freshness, money
from apps.theme import PALETTE
from shironzi.tenancy.catalog import PLANS

COST_PAGE_ROWS = 100


def cost_section() -> None:
    """Cost and margin per tenant for a month, from `_platform/usage` and the plans' cost model."""
    st.subheader("Monthly cost and margin")
    today = dt.datetime.now(dt.UTC).date()
    index = today.year * 12 + today.month - 1
    months = [f"{(index - i) // 12:04d}-{(index - i) % 12 + 1:02d}" for i in range(12)]
    month_col, plan_col, region_col, slug_col, order_col = st.columns(5)
    month = month_col.selectbox("Month", months, key="cost_month")
    plan = plan_col.selectbox("Plan", ["all", *PLANS], key="cost_plan")
    region = region_col.selectbox("Region", ["all", *registry().settings.regions], key="cost_region")
    prefix = slug_col.text_input("Slug starts with", key="cost_slug", max_chars=63)
    order = order_col.selectbox("Order", list(data.COST_ORDERS), key="cost_order")
    page = data.tenant_costs(data.lake(), month, None if plan == "all" else plan,
                             None if region == "all" else region, prefix, order, COST_PAGE_ROWS)
    if page.rows.is_empty():
        empty_state("No metered usage for these tenants and month.", "It is written by `shironzi usage collect`.")
        return
    totals = st.columns(3)
    totals[0].metric("Tenants matched", f"{page.matched:,}")
    totals[1].metric("Platform cost", money(page.cost), help="Events, GB-months and API calls at the plan's prices.")
    totals[2].metric("Margin", money(page.margin), help="Plan prices minus the platform cost.")
    st.dataframe(
        page.rows.select("slug", "plan", "region", "placement", "events_landed", pl.col("gb_month").round(4),
                         "api_requests", pl.col("cost").round(2), pl.col("plan_price").round(2),
                         pl.col("margin").round(2)),
        hide_index=True, width="stretch",
    )
    st.caption(f"The first {page.rows.height:,} of {page.matched:,} tenants ({order}); narrow with the filters.")



require_page("tenants", audience="operator")
st.title("Tenants")
directory = registry().tenant_directory()
if not directory:
    empty_state("No tenants yet.", "Create one with `shironzi tenants create` or run `shironzi demo`.")
    st.stop()
tenants = pl.DataFrame([t._asdict() for t in directory.values()])
st.metric("Tenants", f"{tenants.height:,}", help="Every tenant in the registry, whatever its status.")

columns = st.columns(4)
for column, field in zip(columns, ("plan", "industry", "region", "placement"), strict=True):
    counts = tenants.group_by(field).agg(pl.len().alias("tenants")).sort("tenants", descending=True)
    chart = (
        alt.Chart(counts)
        .mark_bar()
        .encode(x=alt.X(f"{field}:N", title=None, sort="-y", axis=alt.Axis(labelAngle=-30)),
                y=alt.Y("tenants:Q", title="Tenants"),
                color=alt.Color(f"{field}:N", legend=None, scale=alt.Scale(range=list(PALETTE))),
                tooltip=[f"{field}:N", alt.Tooltip("tenants:Q", format=",")])
        .properties(height=200, title=f"By {field}")
    )
    column.altair_chart(chart, width="stretch")

st.subheader("Usage per tenant (fct_tenant_usage)")
lake = data.lake()
frames = [data.usage(lake, region, None) for region in registry().settings.regions]
usage = pl.concat([f.data for f in frames if not f.empty], how="diagonal_relaxed") if any(
    not f.empty for f in frames) else pl.DataFrame()
if usage.is_empty():
    empty_state("No usage metering yet.", "It is built by `shironzi transform`.")
    cost_section()
    st.stop()
newest = usage["usage_date"].max()
days = st.slider("Days", 1, 90, 30, key="usage_days")
window = usage.filter(pl.col("usage_date") > pl.lit(newest) - pl.duration(days=days))
per_tenant = (
    window.group_by("tenant_id")
    .agg(pl.col("rows_ingested").sum().alias("rows_ingested"), pl.col("payload_bytes").sum().alias("payload_bytes"),
         pl.col("events").sum().alias("events"), pl.col("active_customers").max().alias("peak_daily_active"),
         pl.col("last_ingested_at").max().alias("last_ingested_at"))
    .join(tenants.select("tenant_id", "slug", "plan", "industry", "region", "placement"), on="tenant_id", how="left")
    .sort("events", descending=True)
    .with_columns((pl.col("payload_bytes") / 1_048_576).round(2).alias("payload_mib"))
)
st.subheader("Biggest tenants")
top = per_tenant.head(10)
st.altair_chart(
    alt.Chart(top).mark_bar(color=PALETTE[0]).encode(
        y=alt.Y("slug:N", title="Tenant", sort="-x"), x=alt.X("events:Q", title=f"Events (last {days} days)"),
        tooltip=["slug:N", "plan:N", alt.Tooltip("events:Q", format=","), alt.Tooltip("rows_ingested:Q", format=",")],
    ).properties(height=alt.Step(28)),
    width="stretch",
)
st.dataframe(
    per_tenant.select("slug", "plan", "industry", "region", "placement", "events", "rows_ingested", "payload_mib",
                      "peak_daily_active", "last_ingested_at"),
    hide_index=True, width="stretch",
)
freshness(next(f for f in frames if not f.empty), through=newest, label=data.GOLD_USAGE)
cost_section()
