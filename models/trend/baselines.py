"""The statistical forecasts of a KPI series: seasonal naive (the benchmark) and the level times weekday profile
forecast that `yhat` combines with the booster's (see docs/models/trend.md for the backtests that chose it)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from models.trend.features import Series

if TYPE_CHECKING:
    import numpy as np

LEVEL_DAYS = 14  # the level: the deseasonalised mean over this many days up to the origin
PROFILE_WEEKS = 12  # the weekday profile: each weekday's mean over this many weeks up to the origin
SPEND_DAYS = 84  # revenue per active customer over this many days (far steadier than daily revenue's own level)
COMPANION: dict[str, str] = {"revenue": "active_customers"}  # KPI -> the volume KPI it is forecast through


def profile_forecast(values: np.ndarray, origin: int, horizons: Sequence[int]) -> np.ndarray:
    """Level times weekday profile, known at `origin`: the profile is each weekday's mean over the PROFILE_WEEKS
    weeks up to the origin divided by the mean of those weeks, the level the sum of the LEVEL_DAYS days up to the
    origin divided by the sum of their profile (a deseasonalised mean that a weekday with no activity cannot
    blow up). Zero for a series without activity."""
    import numpy as np

    first = max(0, origin - 7 * PROFILE_WEEKS + 1)
    window = values[first: origin + 1]
    phase = np.arange(first, origin + 1) % 7
    mean = float(window.mean()) if len(window) else 0.0
    if mean <= 0:
        return np.zeros(len(horizons))
    sums, counts = np.bincount(phase, weights=window, minlength=7), np.bincount(phase, minlength=7)
    profile = np.where(counts > 0, sums / np.maximum(counts, 1) / mean, 1.0)
    recent = np.arange(max(0, origin - LEVEL_DAYS + 1), origin + 1)
    weight = float(profile[recent % 7].sum())
    level = float(values[recent].sum()) / weight if weight > 0 else 0.0
    return level * profile[(origin + np.asarray(horizons, dtype=int)) % 7]


def statistical_forecast(series: Series, origin: int, horizons: Sequence[int],
                         companion: Series | None = None) -> np.ndarray:
    """The statistical half of `yhat` for `horizons` from `origin`. With a `companion` (the same tenant's volume
    KPI, see COMPANION, over the same days) the companion's profile forecast times the ratio of the two series over
    the SPEND_DAYS days up to the origin (revenue = active customers x revenue per active customer); otherwise, or
    while the companion has had no activity, the series' own profile forecast."""
    spend_window = slice(max(0, origin - SPEND_DAYS + 1), origin + 1)
    if companion is not None and companion.start == series.start and len(companion.values) == len(series.values):
        volume = float(companion.values[spend_window].sum())
        if volume > 0:
            rate = float(series.values[spend_window].sum()) / volume
            return profile_forecast(companion.values, origin, horizons) * rate
    return profile_forecast(series.values, origin, horizons)


def companions(series_list: Sequence[Series]) -> list[Series | None]:
    """For each series, the same tenant's COMPANION series (None when its KPI has none or it is missing)."""
    by_key = {(s.tenant_id, s.kpi): s for s in series_list}
    return [by_key.get((s.tenant_id, COMPANION[s.kpi])) if s.kpi in COMPANION else None for s in series_list]


def seasonal_naive(series: Series, origin: int, h: int) -> float:
    """The same weekday of the last observed week."""
    return float(series.values[origin + h - 7 * ((h + 6) // 7)])
