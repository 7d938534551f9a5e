"""Platform health (operators): stage metrics, the lake's tables, open alerts, and the tenants with anomalies
today, each a link to that tenant's Data health page. The same report as `shironzi monitor status`."""

from __future__ import annotations

import polars as pl
import streamlit as st

from apps.auth import require_page, select_tenant
from apps.components import empty_state
from monitoring.status import platform_health
from shironzi.settings import get_settings

require_page("platform_health", audience="operator")
st.title("Platform health")
health = platform_health(get_settings())
now = health.generated_at


def _since(epoch: float | None) -> str:
    if not epoch:
        return "never"
    minutes = int((now.timestamp() - epoch) // 60)
    return f"{minutes // 60} h {minutes % 60} min ago" if minutes >= 60 else f"{minutes} min ago"


tiles = st.columns(4)
tiles[0].metric("Stages reporting", f"{len(health.stages)}")
tiles[1].metric("Stages with failures", f"{len(health.failed_stages)}")
tiles[2].metric("Open alerts", f"{health.alerts.height}")
tiles[3].metric("Tenants with anomalies today", f"{health.anomalies.height}")

st.subheader("Stages")
if health.monitor_error:
    empty_state(f"Stage metrics are unavailable: {health.monitor_error}.",
                "Run `shironzi monitor serve` and point SHIRONZI_MONITOR_URL at it.")
elif not health.stages:
    empty_state("No stage has reported to the monitor yet.")
else:
    st.dataframe(pl.DataFrame([{"Stage": s.stage, "Succeeded": s.succeeded, "Failed": s.failed,
                                "Last success": _since(s.last_success)} for s in health.stages]),
                 hide_index=True, width="stretch")

st.subheader("Open alerts")
if health.alerts.is_empty():
    st.success("No open alerts.")
else:
    st.dataframe(health.alerts, hide_index=True, width="stretch")

st.subheader(f"Tenants with anomalies today ({now:%Y-%m-%d})")
if health.anomalies.is_empty():
    st.success("No tenant has an anomaly today.")
else:
    header = st.columns([3, 3, 1, 2])
    for column, title in zip(header, ("Tenant", "Anomalies", "Score", ""), strict=True):
        column.markdown(f"**{title}**")
    for row in health.anomalies.iter_rows(named=True):
        tenant, kinds, score, link = st.columns([3, 3, 1, 2])
        tenant.write(f"`{row['tenant_id']}`")
        kinds.write(row["kinds"])
        score.write(f"{row['score']:.2f}")
        if link.button("Data health", key=f"health-{row['tenant_id']}", icon=":material/health_and_safety:"):
            select_tenant(row["tenant_id"])
            st.switch_page("pages/data_health.py")

st.subheader("Lake tables")
if health.lake.is_empty():
    empty_state("No Delta tables in the lake yet.")
else:
    st.dataframe(health.lake.rename({"region": "Region", "layer": "Layer", "table": "Table", "placement": "Placement",
                                     "version": "Version", "files": "Data files", "small_file_ratio": "Small files",
                                     "tables": "Tables"}),
                 hide_index=True, width="stretch",
                 column_config={"Small files": st.column_config.ProgressColumn(format="percent", min_value=0,
                                                                               max_value=1)})
st.caption(f"Report of {now:%Y-%m-%d %H:%M:%S} UTC, read when the page loaded: the same as `shironzi monitor status`.")
