"""Releases (operators): each model rollout's waves, their state and canary-analysis figures, and the tenants
that do not follow `stable`."""

from __future__ import annotations

import altair as alt
import polars as pl
import streamlit as st

from apps.auth import registry, require_page
from apps.components import empty_state
from apps.theme import PALETTE

WAVE_STATES = ("pending", "analysing", "passed", "failed", "rolled_back")
STATE_COLORS = [PALETTE[7], PALETTE[0], PALETTE[2], PALETTE[4], PALETTE[1]]

require_page("releases", audience="operator")
st.title("Releases")
reg = registry()
rollouts = reg.rollouts(limit=50)
channels = reg.tenant_channels(fresh=True)
st.metric("Tenants off `stable`", f"{len(channels):,}",
          help="Tenants on the canary channel or pinned to a model version (`shironzi tenants channel`).")
if not rollouts:
    empty_state("No model rollout yet.", "Start one with `shironzi releases start churn <version>`.")
    st.stop()

summary = pl.DataFrame([{"rollout": r["id"], "model": r["model"], "baseline": r["baseline"],
                         "candidate": r["candidate"], "status": r["status"], "updated": r["updated_at"]}
                        for r in rollouts])
st.dataframe(summary, hide_index=True, width="stretch")

chosen = st.selectbox("Rollout", [r["id"] for r in rollouts], key="rollout_id")
rollout = next(r for r in rollouts if r["id"] == chosen)
st.caption(f"**{rollout['model']}**: version {rollout['baseline']} → {rollout['candidate']}, "
           f"{rollout['status']}" + (f" — {rollout['reason']}" if rollout.get("reason") else ""))

def _figure(wave: dict, name: str) -> float | None:
    return ((wave.get("analysis") or {}).get("figures") or {}).get(name)


rows = []
for index, wave in enumerate(rollout["waves"]):
    analysis = wave.get("analysis") or {}
    brier_old, brier_new = _figure(wave, "brier_baseline"), _figure(wave, "brier_candidate")
    rows.append({"order": index, "wave": wave["name"], "state": wave["state"], "tenants": analysis.get("tenants"),
                 "rows": analysis.get("rows"), "psi": _figure(wave, "psi"),
                 "brier_delta": None if brier_old is None or brier_new is None else brier_new - brier_old,
                 "failures": "; ".join(analysis.get("failures", [])) or None})
waves = pl.DataFrame(rows, schema_overrides={"psi": pl.Float64, "brier_delta": pl.Float64, "tenants": pl.Int64,
                                              "rows": pl.Int64})
chart = (
    alt.Chart(waves)
    .mark_bar()
    .encode(x=alt.X("wave:N", sort=None, title="Wave"), y=alt.value(30),
            color=alt.Color("state:N", scale=alt.Scale(domain=list(WAVE_STATES), range=STATE_COLORS)),
            tooltip=["wave:N", "state:N", "tenants:Q", "psi:Q", "brier_delta:Q", "failures:N"])
    .properties(height=60, title="Waves")
)
st.altair_chart(chart, width="stretch")
st.dataframe(waves.drop("order"), hide_index=True, width="stretch")
