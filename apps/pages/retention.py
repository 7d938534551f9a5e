"""Retention: the monthly cohort retention heatmap."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from apps import data
from apps.auth import analyst_page
from apps.components import empty_state, freshness
from apps.theme import HEATMAP_SCHEME

ctx, tenant, words = analyst_page("retention", "retention", modules=("analytics",))

cohorts = data.cohort_retention(data.lake(), tenant.region, tenant.id)
if cohorts.empty:
    empty_state(f"No cohort retention for {tenant.name} yet.")
    st.stop()

frame = cohorts.data.with_columns(
    pl.col("cohort_month").dt.strftime("%Y-%m").alias("cohort"),
    (pl.col("retention_rate") * 100).round(1).alias("retained_pct"),
).sort("cohort_month", "months_since_signup")
st.caption(
    f"Share of each monthly signup cohort of {words.customers} still active N months after signing up."
)
base = alt.Chart(frame).encode(
    x=alt.X("months_since_signup:O", title="Months since signup"),
    y=alt.Y("cohort:O", title="Signup cohort", sort="ascending"),
)
heat = base.mark_rect().encode(
    color=alt.Color("retained_pct:Q", title="Retained (%)", scale=alt.Scale(scheme=HEATMAP_SCHEME, domain=[0, 100])),
    tooltip=[
        alt.Tooltip("cohort:O", title="Cohort"),
        alt.Tooltip("months_since_signup:O", title="Month"),
        alt.Tooltip("cohort_size:Q", title=f"Cohort {words.customers}", format=","),
        alt.Tooltip("retained_customers:Q", title=f"Retained {words.customers}", format=","),
        alt.Tooltip("retained_pct:Q", title="Retained (%)", format=".1f"),
    ],
)
labels = base.mark_text(fontSize=11).encode(
    text=alt.Text("retained_pct:Q", format=".0f"),
    color=alt.condition("datum.retained_pct > 60", alt.value("white"), alt.value("#111827")),
)
rows = frame["cohort"].n_unique()
st.altair_chart((heat + labels).properties(height=max(160, 32 * rows)), width="stretch")
sizes = frame.filter(pl.col("months_since_signup") == 0).select(
    pl.col("cohort").alias("Cohort"), pl.col("cohort_size").alias(f"{words.customers.capitalize()} in cohort")
)
st.dataframe(sizes, hide_index=True)
freshness(cohorts, through=frame["cohort_month"].max(), label=data.GOLD_RETENTION)
