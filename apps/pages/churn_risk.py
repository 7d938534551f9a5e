"""Churn risk: the risk distribution, at-risk customers with their reasons, filters and CSV export."""

from __future__ import annotations

import json

import altair as alt
import polars as pl
import streamlit as st

from apps import data
from apps.auth import analyst_page, record_export, record_subjects_shown, registry
from apps.components import empty_state, freshness
from apps.phi import shown_ids
from apps.theme import BAND_COLORS

BANDS = ["high", "medium", "low"]

ctx, tenant, words = analyst_page("churn_risk", "churn risk", modules=("churn_prediction",))

scores = data.latest_churn_scores(data.lake(), tenant.region, tenant.id)
if scores.empty:
    empty_state(f"No churn scores for {tenant.name} yet.",
                "Scores appear after training and a scoring run: `shironzi models train churn` then `shironzi score`.")
    st.stop()


def reason_labels(text: str | None) -> str:
    try:
        reasons = json.loads(text or "[]")
    except ValueError:
        return ""
    return "; ".join(f"{r.get('label') or r.get('feature')} ({float(r.get('contribution', 0)):+.2f})" for r in reasons)


def reason_features(text: str | None) -> list[str]:
    try:
        return [str(r.get("label") or r.get("feature")) for r in json.loads(text or "[]")]
    except ValueError:
        return []


frame = scores.data.with_columns(
    shown_ids(scores.data["customer_id"], tenant_id=tenant.id, scopes=ctx.viewer.scopes),  # PHI: phi:read only
    pl.col("top_reasons").map_elements(reason_labels, return_dtype=pl.String).alias("reasons"),
    pl.col("top_reasons").map_elements(reason_features, return_dtype=pl.List(pl.String)).alias("reason_list"),
)
score_date = frame["score_date"].max()
counts = {b: frame.filter(pl.col("risk_band") == b).height for b in BANDS}
tiles = st.columns(4)
tiles[0].metric(f"{words.customers.capitalize()} scored", f"{frame.height:,}")
for column, band_name in zip(tiles[1:], BANDS, strict=True):
    column.metric(f"{band_name.capitalize()} risk", f"{counts[band_name]:,}",
                  help="Bands: low < 0.3 ≤ medium < 0.6 ≤ high (calibrated probability).")

st.subheader("Risk distribution")
histogram = (
    alt.Chart(frame.select("churn_probability", "risk_band"))
    .mark_bar()
    .encode(
        x=alt.X("churn_probability:Q", bin=alt.Bin(step=0.05, extent=[0, 1]), title="Churn probability"),
        y=alt.Y("count():Q", title=words.customers.capitalize()),
        color=alt.Color("risk_band:N", title="Risk band", scale=alt.Scale(domain=BANDS,
                        range=[BAND_COLORS[b] for b in BANDS])),
        tooltip=[alt.Tooltip("count():Q", title=words.customers.capitalize()), alt.Tooltip("risk_band:N")],
    )
    .properties(height=260)
)
st.altair_chart(histogram, width="stretch")

st.subheader(f"At-risk {words.customers}")
left, middle, right = st.columns(3)
bands = left.multiselect("Risk band", BANDS, default=["high", "medium"], key="churn_bands")
minimum = middle.slider("Minimum probability", 0.0, 1.0, 0.0, 0.05, key="churn_min")
all_reasons = sorted({r for rs in frame["reason_list"].to_list() for r in rs})
wanted = right.multiselect("Top reason", all_reasons, key="churn_reasons")
shown = frame.filter(pl.col("risk_band").is_in(bands) & (pl.col("churn_probability") >= minimum))
if wanted:
    shown = shown.filter(pl.col("reason_list").list.eval(pl.element().is_in(wanted)).list.any())
table = shown.select(
    pl.col("customer_id").alias(words.customer.capitalize()),
    (pl.col("churn_probability") * 100).round(1).alias("Churn probability (%)"),
    pl.col("risk_band").alias("Band"),
    pl.col("reasons").alias("Top reasons"),
)
if table.is_empty():
    st.info("No scored customers match these filters.")
else:
    st.dataframe(table, hide_index=True, width="stretch")
    record_subjects_shown(ctx, shown["customer_id"].to_list(), what="at-risk customers")
if registry().is_enabled(tenant.id, "data_export"):
    csv = shown.select("customer_id", "score_date", "churn_probability", "risk_band", "top_reasons",
                       "model_name", "model_version").write_csv()
    st.download_button("Download CSV", csv, file_name=f"{tenant.slug}-churn-{score_date}.csv", mime="text/csv",
                       key="churn_csv", on_click=record_export,
                       args=(ctx, shown["customer_id"].to_list()), kwargs={"what": "churn scores CSV"})
else:
    st.caption(f"CSV export needs the `data_export` module (off for {tenant.name}).")
st.caption(f"Scored {score_date} by {frame['model_name'][0]} v{frame['model_version'][0]}; "
           f"features as of {frame['feature_timestamp'].max()}.")
freshness(scores, through=score_date, label="predictions/churn_scores")
