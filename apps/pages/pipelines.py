"""Pipelines (operators): ingestion throughput and lag, dbt run results, model versions and promotions."""

from __future__ import annotations

import datetime as dt

import altair as alt
import polars as pl
import streamlit as st

from apps import data
from apps.auth import registry, require_page
from apps.components import age, empty_state, freshness
from apps.theme import PALETTE

require_page("pipelines", audience="operator")
st.title("Pipelines")
lake = data.lake()
settings = registry().settings

st.subheader("Ingestion")
runs = data.ingest_runs(lake)
if runs.empty:
    empty_state("No ingestion runs recorded yet.")
else:
    frame = runs.data.with_columns(
        ((pl.col("finished_at") - pl.col("started_at")).dt.total_milliseconds() / 1000).alias("seconds"),
    ).with_columns((pl.col("landed") / pl.col("seconds").clip(lower_bound=0.001)).round(1).alias("rows_per_second"))
    ok = frame.filter(pl.col("status") != "failed")
    last_ok = ok["finished_at"].max() if not ok.is_empty() else None
    tiles = st.columns(4)
    tiles[0].metric("Runs", f"{frame.height:,}")
    tiles[1].metric("Failed runs", f"{frame.filter(pl.col('status') == 'failed').height:,}")
    tiles[2].metric("Median throughput", f"{(ok['rows_per_second'].median() or 0):,.0f} rows/s")
    tiles[3].metric("Ingest lag", age(last_ok) if isinstance(last_ok, dt.datetime) else "never",
                    help="Time since the last successful run finished.")
    chart = (
        alt.Chart(frame.select("finished_at", "rows_per_second", "source_kind", "status"))
        .mark_circle(size=80)
        .encode(x=alt.X("finished_at:T", title="Finished (UTC)", axis=alt.Axis(format="%b %d %H:%M")),
                y=alt.Y("rows_per_second:Q", title="Rows landed / s"),
                color=alt.Color("source_kind:N", title="Source", scale=alt.Scale(range=list(PALETTE))),
                shape=alt.Shape("status:N", title="Status"),
                tooltip=["finished_at:T", "source_kind:N", "status:N", alt.Tooltip("rows_per_second:Q", format=",")])
        .properties(height=240)
    )
    st.altair_chart(chart, width="stretch")
    st.dataframe(frame.select("started_at", "source_kind", "source_name", "status", "received", "landed",
                              "quarantined", "duplicates", "seconds", "rows_per_second", "error").head(50),
                 hide_index=True, width="stretch")
    freshness(runs, through=frame["finished_at"].max(), label="_platform/ingest/runs")

st.subheader("dbt run results")
results = [data.dbt_run_results(settings.home, region) for region in settings.regions]
dbt = pl.concat([r for r in results if not r.is_empty()], how="diagonal_relaxed") if any(
    not r.is_empty() for r in results) else pl.DataFrame()
if dbt.is_empty():
    empty_state("No dbt build has run yet.", "Run `shironzi transform`.")
else:
    failing = dbt.filter(pl.col("status").is_in(["error", "fail"]))
    dbt_tiles = st.columns(3)
    built = dbt.filter((pl.col("kind") == "model") & (pl.col("status") == "success")).height
    dbt_tiles[0].metric("Models built", f"{built}")
    dbt_tiles[1].metric("Tests passed", f"{dbt.filter(pl.col('status') == 'pass').height}")
    dbt_tiles[2].metric("Failures", f"{failing.height}")
    st.dataframe(dbt.sort("seconds", descending=True), hide_index=True, width="stretch")
    region = st.selectbox("Gold table history, region", settings.regions, key="gold_region")
    table = st.selectbox("Gold table", [data.GOLD_KPIS, data.GOLD_RETENTION, data.GOLD_USAGE, data.GOLD_CUSTOMERS],
                         key="gold_table")
    history = data.gold_history(lake, region, table)
    if history.empty:
        st.info(f"No {table} table in {region} yet.")
    else:
        st.dataframe(history.data, hide_index=True, width="stretch")

st.subheader("Model versions and promotions")
versions = data.model_versions(settings.resolved_mlflow_tracking_uri)
if versions.is_empty():
    empty_state("No model is registered yet.", "Run `shironzi models train all`.")
else:
    st.dataframe(versions.drop("metrics"), hide_index=True, width="stretch")
events = data.model_events(lake)
if events.is_empty():
    st.caption("No training runs, promotions or rollbacks in the audit log yet.")
else:
    st.dataframe(events, hide_index=True, width="stretch")
