"""Small building blocks shared by the pages: freshness captions, empty states, formatting."""

from __future__ import annotations

import datetime as dt
from typing import Any

import streamlit as st

from apps.data import TTL, Frame
from apps.theme import NO_DATA_HINT


def empty_state(what: str, hint: str = NO_DATA_HINT) -> None:
    """Explain why a section is empty instead of leaving it blank."""
    st.info(f"{what} {hint}")


def freshness(frame: Frame, *, through: Any = None, label: str = "table") -> None:
    """One honest line: how new the data is, which table version, and how long it may be cached."""
    parts = []
    if through is not None:
        parts.append(f"data through **{_fmt(through)}**")
    if frame.version is not None:
        parts.append(f"{label} version {frame.version}")
    parts.append(f"read {frame.read_at:%Y-%m-%d %H:%M:%S} UTC (cached up to {TTL:g} s)")
    st.caption(" · ".join(parts))


def _fmt(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def age(value: dt.datetime | None, now: dt.datetime | None = None) -> str:
    """'3 h 5 min ago' style lag text."""
    if value is None:
        return "never"
    now = now or dt.datetime.now(dt.UTC)
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.UTC)
    seconds = max(0, int((now - value).total_seconds()))
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes = rest // 60
    if days:
        return f"{days} d {hours} h ago"
    if hours:
        return f"{hours} h {minutes} min ago"
    return f"{minutes} min ago"


def money(value: float) -> str:
    """Amounts that fit a KPI tile: 950.25, 48.2 k, 21.78 M, 3.1 B."""
    magnitude = abs(value)
    for threshold, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if magnitude >= threshold * 10 or (suffix != "k" and magnitude >= threshold):
            return f"{value / threshold:,.2f} {suffix}"
    return f"{value:,.2f}"


def pct_change(current: float, previous: float) -> str | None:
    if previous == 0:
        return None
    return f"{(current - previous) / abs(previous):+.1%}"
