"""Tenants (operators): counts by plan, industry, region and placement; the biggest tenants; usage."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from apps import data
from apps.auth import registry, require_page
from apps.components import empty_state, freshness
from apps.theme import PALETTE

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
