"""Data health: freshness per source, rows landed, quarantined records by reason, the last runs and the tenant's
data anomalies."""

from __future__ import annotations

import datetime as dt

import altair as alt
import polars as pl
import streamlit as st

from apps import data
from apps.auth import require_page
from apps.components import age, empty_state, freshness
from apps.theme import ACTUAL_COLOR, PALETTE

ctx = require_page("data_health", audience="analyst")
assert ctx.tenant is not None
tenant, words = ctx.tenant, ctx.words
st.title(f"{tenant.name}: data health")
lake = data.lake()
now = dt.datetime.now(dt.UTC)

st.subheader("Freshness per source")
sources = data.source_freshness(lake, tenant.region, tenant.placement, tenant.id)
if sources.empty:
    empty_state(f"No events have landed for {tenant.name} yet.")
else:
    st.dataframe(
        sources.data.with_columns(
            pl.col("last_landed_at").map_elements(lambda t: age(t, now), return_dtype=pl.String).alias("lag")
        ).rename({"source": "Source", "rows_landed": "Rows landed", "newest_event": "Newest event",
                  "last_landed_at": "Last landed", "lag": "Since last landing"}),
        hide_index=True, width="stretch",
    )
    freshness(sources, through=sources.data["last_landed_at"].max(), label="bronze/events")

st.subheader("Feature freshness")
features = data.feature_freshness(lake, tenant.region, tenant.id)
if features.empty:
    empty_state("No offline features for this tenant yet.",
                "They are built by `shironzi features materialize` for tenants with churn or forecast modules.")
else:
    st.dataframe(
        features.data.with_columns(
            pl.col("newest_feature_time").map_elements(lambda t: age(t, now), return_dtype=pl.String).alias("lag")
        ).rename({"view": "Feature view", "rows": "Rows", "newest_snapshot": "Newest snapshot",
                  "newest_feature_time": "Features as of", "lag": "Age"}),
        hide_index=True, width="stretch",
    )

st.subheader("Rows landed per day")
usage = data.usage(lake, tenant.region, tenant.id)
if usage.empty:
    empty_state("No usage metering yet.", "It is built by `shironzi transform` (fct_tenant_usage).")
else:
    chart = (
        alt.Chart(usage.data.select("usage_date", "rows_ingested", "events"))
        .mark_bar(color=ACTUAL_COLOR)
        .encode(x=alt.X("usage_date:T", title="Event date"), y=alt.Y("rows_ingested:Q", title="Rows landed"),
                tooltip=[alt.Tooltip("usage_date:T", title="Date"), alt.Tooltip("rows_ingested:Q", format=","),
                         alt.Tooltip("events:Q", title="Events after dedup", format=",")])
        .properties(height=220)
    )
    st.altair_chart(chart, width="stretch")

st.subheader("Quarantined records by reason")
quarantine = data.quarantine_by_reason(lake, tenant.region, tenant.id)
if quarantine.empty:
    st.success("No quarantined records for this tenant.")
else:
    bars = (
        alt.Chart(quarantine.data)
        .mark_bar()
        .encode(y=alt.Y("reason_code:N", title="Reason", sort="-x", axis=alt.Axis(labelLimit=240)),
                x=alt.X("records:Q", title="Records"),
                color=alt.Color("reason_code:N", legend=None, scale=alt.Scale(range=list(PALETTE))),
                tooltip=[alt.Tooltip("reason_code:N", title="Reason"), alt.Tooltip("records:Q", format=","),
                         alt.Tooltip("last_seen:T", title="Last seen")])
        .properties(height=alt.Step(34))
    )
    st.altair_chart(bars, width="stretch")
    st.caption("Raw payloads stay in the quarantine table; an operator can inspect them.")

st.subheader("Last pipeline runs")
runs = data.ingest_runs(lake)
if runs.empty:
    empty_state("No ingestion runs recorded yet.")
else:
    # Runs are platform-wide: a tenant sees when and how they ran, never other tenants' row counts.
    st.dataframe(
        runs.data.head(10).select(
            pl.col("started_at").alias("Started"), pl.col("finished_at").alias("Finished"),
            pl.col("source_kind").alias("Kind"), pl.col("status").alias("Status"),
        ),
        hide_index=True, width="stretch",
    )

st.subheader("Anomalies")
anomalies = data.tenant_anomalies(lake, tenant.id)
if anomalies.empty:
    st.success("No anomalies found in this tenant's data.")
else:
    st.dataframe(
        anomalies.data.with_columns(pl.col("kind").str.replace_all("_", " "), pl.col("score").round(1),
                                    pl.col("expected").round(0))
        .rename({"event_date": "Day", "kind": "Kind", "score": "Score", "expected": "Expected",
                 "observed": "Observed"}),
        hide_index=True, width="stretch",
    )
    st.caption("Found by the per-tenant detector: each day against the same weekday of the previous weeks, "
               "with the trend (`shironzi monitor tenants detect`).")
