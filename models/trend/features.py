"""Trend features: each tenant's daily KPI series from gold, and the feature rows of a forecast origin.

Each example is (series, forecast origin t, horizon h): lag, rolling and same-weekday features known at t,
divided by the series' scale (its mean over the 28 days up to t) so that tenants of every size share one
model. The local spread (the series' recent week-over-week change) sizes the forecast interval.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import TYPE_CHECKING

from models.common import read_gold_inputs, size_bucket
from shironzi.settings import Settings, get_settings

if TYPE_CHECKING:
    import numpy as np

KPIS: tuple[str, ...] = ("active_customers", "revenue")
KPI_TABLE = "fct_tenant_daily_kpis"
MODULE = "trend_forecast"
HORIZON = 28
HISTORY = 28  # days of history an origin needs (the scale window)
LAGS = 14
SAME_WEEKDAY = 4
SPREAD_DAYS = 28  # the local volatility of a series: mean |y[t] - y[t-7]| over this many days up to the origin
MIN_SPREAD = 0.01  # of the scale: a constant series still gets a (tiny) interval
FEATURE_NAMES: list[str] = [
    "horizon", "target_weekday", "origin_weekday", "kpi", "log_scale",
    *(f"lag_{k}" for k in range(LAGS)),
    "mean_7", "mean_14", "std_7", "trend_7_14",
    *(f"same_weekday_{k}" for k in range(SAME_WEEKDAY)), "same_weekday_mean",
]


@dataclass
class Series:
    """One tenant's KPI, dense per day (missing days are 0) from its first day to `end`."""

    tenant_id: str
    kpi: str
    start: date
    values: np.ndarray
    bucket: str = "small"

    @property
    def end(self) -> date:
        return self.start + timedelta(days=len(self.values) - 1)


def load_series(
    *, settings: Settings | None = None, tenant_ids: Sequence[str] | None = None,
    input_versions: Mapping[str, int] | None = None,
) -> tuple[list[Series], list[tuple[str, int]]]:
    """The daily KPI series of the trend_forecast tenants from gold, at pinned Delta versions."""
    import numpy as np
    import polars as pl

    settings = settings or get_settings()
    gold = read_gold_inputs(KPI_TABLE, MODULE, columns=["tenant_id", "event_date", *KPIS], settings=settings,
                            tenant_ids=tenant_ids, input_versions=input_versions)
    inputs = gold.inputs
    frames = [pl.from_arrow(part) for part in gold.parts]
    kpis = pl.concat(frames).group_by("tenant_id", "event_date").agg(
        [pl.col(k).cast(pl.Float64).sum() for k in KPIS]).sort("tenant_id", "event_date")
    end = kpis["event_date"].max()
    out: list[Series] = []
    for (tenant_id,), rows in kpis.group_by("tenant_id", maintain_order=True):
        first = rows["event_date"].min()
        days = (end - first).days + 1
        offsets = np.asarray([(d - first).days for d in rows["event_date"].to_list()])
        bucket = size_bucket(int(rows["active_customers"].max() or 0))
        for kpi in KPIS:
            values = np.zeros(days)
            values[offsets] = rows[kpi].fill_null(0.0).to_numpy()
            out.append(Series(str(tenant_id), kpi, first, values, bucket))
    return out, inputs


def training_rows(series: Series, stride: int) -> int:
    """About how many examples a series makes (an upper bound of its training rows): one origin in `stride` from
    its HISTORY-th day whose HISTORY-day window is not all zero (a zero scale makes no example: most of a tiny
    tenant's origins), each with its horizons up to the series' last day."""
    import numpy as np

    values = np.asarray(series.values, dtype=np.float64)
    if len(values) <= HISTORY:
        return 0
    total = np.concatenate([[0.0], np.cumsum(values)])
    origins = np.arange(HISTORY - 1, len(values) - 1, stride)
    window = total[origins + 1] - total[origins + 1 - HISTORY]
    return int(np.minimum(HORIZON, len(values) - 1 - origins)[window > 0].sum())


def sample_series(series_list: Sequence[Series], max_rows: int, stride: int, *, seed: int = 0) -> list[Series]:
    """Whole tenants (every KPI of a sampled tenant, the revenue forecast needs its active customers) until the
    series' training examples fit `max_rows`, stratified by tenant-size bucket: each bucket keeps its share of the
    tenants (at least one), drawn with `seed` from the sorted tenant ids, so the same data gives the same sample.
    Memory and time then follow the cap, not the number of tenants."""
    import numpy as np

    rows_of: dict[str, int] = {}
    bucket_of: dict[str, str] = {}
    for item in series_list:
        rows_of[item.tenant_id] = rows_of.get(item.tenant_id, 0) + training_rows(item, stride)
        bucket_of[item.tenant_id] = item.bucket
    total = sum(rows_of.values())
    if total <= max_rows:
        return list(series_list)
    tenants = sorted(rows_of)
    order = np.random.default_rng(seed).random(len(tenants))
    share = max_rows / total
    keep: set[str] = set()
    for bucket in sorted(set(bucket_of.values())):
        members = [i for i, t in enumerate(tenants) if bucket_of[t] == bucket]
        members.sort(key=order.__getitem__)
        budget = share * sum(rows_of[tenants[i]] for i in members)
        taken = 0
        for i in members:
            if taken and taken + rows_of[tenants[i]] > budget:
                break
            keep.add(tenants[i])
            taken += rows_of[tenants[i]]
    return [item for item in series_list if item.tenant_id in keep]


@dataclass
class Examples:
    x: np.ndarray
    target: np.ndarray  # normalised by scale
    scale: np.ndarray
    actual: np.ndarray
    baseline: np.ndarray
    tenant_id: list[str] = field(default_factory=list)
    kpi: list[str] = field(default_factory=list)
    bucket: list[str] = field(default_factory=list)
    target_date: list[date] = field(default_factory=list)
    horizon: list[int] = field(default_factory=list)
    spread: np.ndarray | None = None  # the series' local volatility at the origin, KPI units (`local_spread`)
    statistical: np.ndarray | None = None  # the statistical forecast, KPI units (`statistical_forecast`)



def origin_features(series: Series, origin: int, horizons: Sequence[int]) -> tuple[np.ndarray, float] | None:
    """The feature rows for forecasting `horizons` from index `origin` (None: too little or zero history)."""
    import numpy as np

    y = series.values
    if origin < HISTORY - 1 or origin >= len(y):
        return None
    window = y[origin - HISTORY + 1: origin + 1]
    scale = float(window.mean())
    if scale <= 0:
        return None
    lags = y[origin - LAGS + 1: origin + 1][::-1] / scale if origin >= LAGS - 1 else None
    if lags is None:
        return None
    mean_7, mean_14 = y[origin - 6: origin + 1].mean() / scale, y[origin - 13: origin + 1].mean() / scale
    std_7 = y[origin - 6: origin + 1].std() / scale
    origin_day = series.start + timedelta(days=origin)
    rows = np.empty((len(horizons), len(FEATURE_NAMES)), dtype=np.float32)
    for i, h in enumerate(horizons):
        back = 7 * ((h + 6) // 7)
        same = [y[origin + h - back - 7 * k] / scale if origin + h - back - 7 * k >= 0 else np.nan
                for k in range(SAME_WEEKDAY)]
        rows[i] = [h, (origin_day + timedelta(days=h)).weekday(), origin_day.weekday(), KPIS.index(series.kpi),
                   np.log1p(scale), *lags, mean_7, mean_14, std_7, mean_7 - mean_14,
                   *same, np.nanmean(same)]
    return rows, scale


def local_spread(series: Series, origin: int) -> float:
    """The series' current volatility, known at `origin`: the mean absolute week-over-week change over the
    SPREAD_DAYS days up to it (the recent error of seasonal naive), at least MIN_SPREAD of the 28-day mean."""
    import numpy as np

    y = series.values
    first = max(7, origin - SPREAD_DAYS + 1)
    floor = MIN_SPREAD * float(y[max(0, origin - HISTORY + 1): origin + 1].mean()) if origin >= 0 else 0.0
    if origin < first:
        return floor
    return max(float(np.abs(y[first: origin + 1] - y[first - 7: origin - 6]).mean()), floor)
