"""Models (operators): the champion's metrics over time, drift (PSI per feature), per-tenant-size AUC."""

from __future__ import annotations

import json
import re

import altair as alt
import polars as pl
import streamlit as st

from apps import data
from apps.auth import registry, require_page
from apps.components import empty_state
from apps.theme import PALETTE

SIZE = re.compile(r"^auc[_.:/](?:bucket[_.:/]|tenant_size[_.:/])?(small|medium|large|xlarge)$")
DEFAULT_METRICS = ("auc", "pr_auc", "calibration_error", "log_loss", "smape")
PSI = re.compile(r"^psi[_.:/](.+)$")

require_page("models", audience="operator")
st.title("Models")
settings = registry().settings
versions = data.model_versions(settings.resolved_mlflow_tracking_uri)
if versions.is_empty():
    empty_state("No model is registered yet.", "Run `shironzi models train all`, then `shironzi models promote`.")
    st.stop()

model = st.selectbox("Model", sorted(versions["model"].unique().to_list()), key="model_name")
mine = versions.filter(pl.col("model") == model).sort("registered_at")
metrics = [
    {"version": row["version"], "registered_at": row["registered_at"], "metric": key, "value": value}
    for row in mine.iter_rows(named=True)
    for key, value in json.loads(row["metrics"]).items()
]
champion = mine.filter(pl.col("aliases").str.contains("champion"))
if champion.is_empty():
    st.warning(f"{model} has no champion alias yet: `shironzi models promote {model}`.")
else:
    row = champion.row(0, named=True)
    st.caption(f"Champion: version **{row['version']}** (registered {row['registered_at']:%Y-%m-%d %H:%M} UTC, "
               f"run `{row['run_id']}`).")

headline = [m for m in metrics if not SIZE.match(m["metric"]) and not PSI.match(m["metric"])]
st.subheader("Metrics over versions")
if not headline:
    st.info("The registered versions logged no metrics.")
else:
    frame = pl.DataFrame(headline)
    names = sorted(frame["metric"].unique().to_list())
    chosen = st.multiselect("Metrics", names, default=[m for m in names if m in DEFAULT_METRICS] or names[:3],
                            key="model_metrics")
    frame = frame.filter(pl.col("metric").is_in(chosen))
    chart = (
        alt.Chart(frame)
        .mark_line(point=True)
        .encode(x=alt.X("version:O", title="Version (in registration order)",
                        sort=alt.EncodingSortField("registered_at"), axis=alt.Axis(labelAngle=0)),
                y=alt.Y("value:Q", title="Value"),
                color=alt.Color("metric:N", title="Metric", scale=alt.Scale(range=list(PALETTE))),
                tooltip=["version:N", alt.Tooltip("registered_at:T", title="Registered", format="%Y-%m-%d %H:%M"),
                         "metric:N", alt.Tooltip("value:Q", format=".4f")])
        .properties(height=260)
    )
    st.altair_chart(chart, width="stretch")

champion_metrics = json.loads(champion.row(0, named=True)["metrics"]) if not champion.is_empty() else {}
left, right = st.columns(2)
with left:
    st.subheader("Drift (PSI per feature)")
    psi = [{"feature": m.group(1), "psi": v} for k, v in champion_metrics.items() if (m := PSI.match(k))]
    if not psi:
        st.info("No drift figures yet: monitoring logs `psi_<feature>` metrics on the champion run.")
    else:
        frame = pl.DataFrame(psi).with_columns(
            pl.when(pl.col("psi") >= 0.25).then(pl.lit("shifted (≥ 0.25)"))
            .when(pl.col("psi") >= 0.1).then(pl.lit("moderate (0.1-0.25)"))
            .otherwise(pl.lit("stable (< 0.1)")).alias("level")
        )
        st.altair_chart(
            alt.Chart(frame).mark_bar().encode(
                y=alt.Y("feature:N", sort="-x", title="Feature", axis=alt.Axis(labelLimit=240)),
                x=alt.X("psi:Q", title="PSI"),
                color=alt.Color("level:N", title="Drift", legend=alt.Legend(orient="right"), scale=alt.Scale(
                    domain=["stable (< 0.1)", "moderate (0.1-0.25)", "shifted (≥ 0.25)"],
                    range=["#10b981", "#eab308", "#ef4444"])),
                tooltip=["feature:N", alt.Tooltip("psi:Q", format=".3f")],
            ).properties(height=alt.Step(34)),
            width="stretch",
        )
with right:
    st.subheader("AUC by tenant size")
    sizes = [{"size": m.group(1), "auc": v} for k, v in champion_metrics.items() if (m := SIZE.match(k))]
    if not sizes:
        st.info("The champion logged no per-tenant-size AUC (`auc_bucket_small`, `_medium`, `_large`).")
    else:
        order = ["small", "medium", "large", "xlarge"]
        st.altair_chart(
            alt.Chart(pl.DataFrame(sizes)).mark_bar(color=PALETTE[0], clip=True).encode(
                x=alt.X("size:N", sort=order, title="Tenant size", axis=alt.Axis(labelAngle=0)),
                y=alt.Y("auc:Q", title="AUC", scale=alt.Scale(domain=[0.5, 1.0], clamp=True)),
                tooltip=["size:N", alt.Tooltip("auc:Q", format=".3f")],
            ).properties(height=220),
            width="stretch",
        )
st.subheader("Versions")
st.dataframe(mine, hide_index=True, width="stretch")
