"""Overview: KPI tiles with period-over-period deltas and the 28-day forecast against the actuals."""

from __future__ import annotations

import datetime as dt

import altair as alt
import polars as pl
import streamlit as st

from apps import data
from apps.auth import analyst_page
from apps.components import empty_state, freshness, money, pct_change
from apps.theme import ACTUAL_COLOR, FORECAST_COLOR

ctx, tenant, words = analyst_page("overview", "overview", modules=("analytics",))

kpis = data.daily_kpis(data.lake(), tenant.region, tenant.id)
if kpis.empty:
    empty_state(f"No daily KPIs for {tenant.name} yet.")
    st.stop()

frame = kpis.data
first, last = frame["event_date"].min(), frame["event_date"].max()
assert isinstance(first, dt.date) and isinstance(last, dt.date)
default_start = max(first, last - dt.timedelta(days=27))
picked = st.date_input(
    "Period", value=(default_start, last), min_value=first, max_value=last, key="overview_period",
    help="KPIs sum (or average) over this period; deltas compare it with the period of the same length "
    "just before it.",
)
start, end = (picked if isinstance(picked, tuple) and len(picked) == 2 else (default_start, last))
length = (end - start).days + 1
previous_start, previous_end = start - dt.timedelta(days=length), start - dt.timedelta(days=1)


def window(lo: dt.date, hi: dt.date) -> pl.DataFrame:
    return frame.filter(pl.col("event_date").is_between(lo, hi))


def summarise(rows: pl.DataFrame) -> dict[str, float]:
    if rows.is_empty():
        return {"active": 0.0, "revenue": 0.0, "new": 0.0, "churn": 0.0, "core": 0.0}
    active = float(rows["active_customers"].mean() or 0.0)
    closed = float(rows["closed_customers"].sum() or 0)
    return {
        "active": active,
        "revenue": float(rows["revenue"].sum() or 0.0),
        "new": float(rows["new_customers"].sum() or 0),
        "churn": closed / active if active else 0.0,
        "core": float(rows["core_actions"].sum() or 0),
    }


now_, before = summarise(window(start, end)), summarise(window(previous_start, previous_end))
has_previous = not window(previous_start, previous_end).is_empty()


def delta(key: str) -> str | None:
    return pct_change(now_[key], before[key]) if has_previous else None


tiles = st.columns(5)
tiles[0].metric(f"Daily active {words.customers}", f"{now_['active']:,.1f}", delta("active"),
                help=f"Average distinct {words.customers} active per day.")
tiles[1].metric(words.revenue.capitalize(), money(now_["revenue"]), delta("revenue"))
tiles[2].metric(f"New {words.customers}", f"{now_['new']:,.0f}", delta("new"))
tiles[3].metric(
    "Churn rate", f"{now_['churn']:.2%}",
    None if not has_previous else f"{(now_['churn'] - before['churn']) * 100:+.2f} pp",
    delta_color="inverse", help=f"{words.customers.capitalize()} who closed their account in the period, "
    f"over the average daily active {words.customers}.",
)
tiles[4].metric(words.core_action.capitalize(), f"{now_['core']:,.0f}", delta("core"))
if not has_previous:
    st.caption("No data before this period, so no deltas.")

st.subheader("28-day forecast")
kpi_labels = {"active_customers": f"Active {words.customers}", "revenue": words.revenue.capitalize()}
kpi = st.radio("KPI", list(kpi_labels), format_func=kpi_labels.get, horizontal=True, key="overview_kpi")
forecasts = data.latest_forecasts(data.lake(), tenant.region, tenant.id)
actuals = window(start, end).select(pl.col("event_date").alias("date"), pl.col(kpi).cast(pl.Float64).alias("value"))
layers: list[alt.Chart] = []
x = alt.X("date:T", title="Date")
y_title = kpi_labels[kpi] + (" (per day)" if kpi == "revenue" else "")
if not actuals.is_empty():
    layers.append(
        alt.Chart(actuals.with_columns(pl.lit("actual").alias("series")))
        .mark_line(color=ACTUAL_COLOR, strokeWidth=2)
        .encode(x=x, y=alt.Y("value:Q", title=y_title),
                tooltip=[alt.Tooltip("date:T"), alt.Tooltip("value:Q", format=",.1f", title="actual")])
    )
future = forecasts.data.filter(pl.col("kpi") == kpi) if not forecasts.empty else pl.DataFrame()
if not future.is_empty():
    future = future.select(pl.col("forecast_date").alias("date"), "yhat", "yhat_lower", "yhat_upper")
    base = alt.Chart(future)
    layers.append(base.mark_area(color=FORECAST_COLOR, opacity=0.2).encode(
        x=x, y=alt.Y("yhat_lower:Q", title=y_title), y2="yhat_upper:Q"))
    layers.append(base.mark_line(color=FORECAST_COLOR, strokeDash=[6, 3], strokeWidth=2).encode(
        x=x, y="yhat:Q",
        tooltip=[alt.Tooltip("date:T"), alt.Tooltip("yhat:Q", format=",.1f", title="forecast"),
                 alt.Tooltip("yhat_lower:Q", format=",.1f", title="80% low"),
                 alt.Tooltip("yhat_upper:Q", format=",.1f", title="80% high")]))
if layers:
    st.altair_chart(alt.layer(*layers).properties(height=340), width="stretch")
    st.caption("Solid: actuals. Dashed: forecast, with its 80 % interval shaded.")
if future.is_empty():
    empty_state(
        "No forecast yet for this tenant.",
        "Forecasts need the `trend_forecast` module and a scoring run (`shironzi score`).",
    )
else:
    generated = forecasts.data["generated_date"].max()
    st.caption(f"Forecast generated {generated} by {forecasts.data['model_name'][0]} "
               f"v{forecasts.data['model_version'][0]}.")
freshness(kpis, through=last, label=f"{data.GOLD_KPIS}")
