"""How the booster's quantiles become (`yhat_lower`, `yhat`, `yhat_upper`).

`yhat` combines the booster's point forecast (the mean of its 50 % and 60 % quantiles) with the statistical
forecast; the 80 % interval is `yhat` plus or minus a split-conformal factor, per KPI and horizon bucket, times the
series' local spread. docs/models/trend.md has the backtests that chose each constant.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from models.trend.features import FEATURE_NAMES, HORIZON, KPIS, Examples
from shironzi.errors import InvalidInputError

if TYPE_CHECKING:
    import numpy as np
    import xgboost as xgb

# One booster fits these quantiles (`reg:quantileerror`); every extra quantile costs a tree per round. The point is
# a little above the median because sMAPE punishes under-forecasts more and daily revenue is right-skewed.
QUANTILES: tuple[float, ...] = (0.1, 0.5, 0.6, 0.9)
POINT_COLUMNS: tuple[int, ...] = (QUANTILES.index(0.5), QUANTILES.index(0.6))
BOOSTER_WEIGHT = 0.5  # the booster's share of `yhat`; the rest is the statistical forecast
HORIZON_BUCKETS: tuple[tuple[int, int], ...] = ((1, 7), (8, 14), (15, HORIZON))
COVERAGE = 0.8  # the interval the forecasts promise
CONFORMAL_LEVEL = 0.84  # the calibration share each interval covers: it realised about COVERAGE in backtests
LOCAL_SPREAD = "local_spread"  # the interval normaliser named in features.json


def horizon_bucket(horizon: int) -> int:
    """The index of the HORIZON_BUCKETS entry holding `horizon` (1-based days ahead)."""
    for i, (first, last) in enumerate(HORIZON_BUCKETS):
        if first <= horizon <= last:
            return i
    return len(HORIZON_BUCKETS) - 1


@dataclass
class TrendCalibration:
    """How the booster's quantiles become (`yhat_lower`, `yhat`, `yhat_upper`). Per KPI: the quantile columns
    averaged into the booster's point forecast, which `yhat` combines with the statistical forecast at
    `booster_weight` (1: the booster alone), and per horizon bucket the factor that sizes the interval: `yhat` plus
    or minus factor x the row's local spread, so that CONFORMAL_LEVEL of the calibration actuals fall inside."""

    point: dict[str, tuple[int, ...]] = field(default_factory=lambda: {kpi: POINT_COLUMNS for kpi in KPIS})
    widen: dict[str, list[float]] = field(default_factory=lambda: {kpi: [1.0] * len(HORIZON_BUCKETS)
                                                                   for kpi in KPIS})
    booster_weight: float = BOOSTER_WEIGHT

    def _kpi(self, x: np.ndarray) -> np.ndarray:
        return x[:, FEATURE_NAMES.index("kpi")].astype(int)

    def factors(self, x: np.ndarray) -> np.ndarray:
        """The interval factor of each feature row (its KPI and horizon bucket)."""
        import numpy as np

        bucket = np.asarray([horizon_bucket(int(h)) for h in x[:, FEATURE_NAMES.index("horizon")]], dtype=int)
        widen = np.asarray([self.widen.get(k, [1.0] * len(HORIZON_BUCKETS)) for k in KPIS])
        return widen[self._kpi(x), bucket]

    def point_forecast(self, x: np.ndarray, raw: np.ndarray, statistical: np.ndarray | None) -> np.ndarray:
        """`yhat` of each row: the mean of its KPI's point quantile columns of `raw` (rows, len(QUANTILES)),
        combined with the row's `statistical` forecast (`statistical_forecast`) at `booster_weight`."""
        import numpy as np

        kpi = self._kpi(x)
        point = np.empty(len(x))
        for i, name in enumerate(KPIS):
            mask = kpi == i
            point[mask] = raw[mask][:, list(self.point.get(name, POINT_COLUMNS))].mean(axis=1)
        if self.booster_weight >= 1.0:
            return point
        if statistical is None:
            raise ValueError("a combined point forecast needs each row's statistical forecast (statistical_forecast)")
        return self.booster_weight * point + (1.0 - self.booster_weight) * np.clip(statistical, 0.0, None)

    def apply(self, x: np.ndarray, raw: np.ndarray, spread: np.ndarray | None,
              statistical: np.ndarray | None) -> np.ndarray:
        """(rows, 3): lower, point (`yhat`), upper in KPI units, never negative."""
        import numpy as np

        if spread is None:
            raise ValueError("a local-spread interval needs each row's spread (local_spread)")
        point = self.point_forecast(x, raw, statistical)
        widen = self.factors(x)
        lower, upper = point - widen * spread, point + widen * spread
        return np.clip(np.column_stack([lower, point, upper]), 0.0, None)

    def mean_widen(self) -> float:
        return float(sum(sum(v) for v in self.widen.values()) / sum(len(v) for v in self.widen.values()))

    def to_dict(self) -> dict[str, Any]:
        return {"point_quantiles": {k: [QUANTILES[c] for c in cols] for k, cols in self.point.items()},
                "interval_scale": self.widen, "interval_normaliser": LOCAL_SPREAD,
                "booster_weight": self.booster_weight,
                "conformal_level": CONFORMAL_LEVEL, "horizon_buckets": [list(b) for b in HORIZON_BUCKETS]}

    @classmethod
    def from_dict(cls, meta: Mapping[str, Any]) -> TrendCalibration:
        """From a version's features.json (`to_dict` plus the booster's `quantiles`)."""
        missing = sorted({"quantiles", "point_quantiles", "interval_scale", "booster_weight"} - set(meta))
        if missing or meta.get("interval_normaliser", LOCAL_SPREAD) != LOCAL_SPREAD:
            raise InvalidInputError(f"features.json is not a trend calibration (missing {', '.join(missing)} or "
                                    f"another interval normaliser)")
        quantiles = list(meta["quantiles"])
        return cls({k: tuple(quantiles.index(q) for q in qs) for k, qs in meta["point_quantiles"].items()},
                   {k: [float(v) for v in values] for k, values in meta["interval_scale"].items()},
                   float(meta["booster_weight"]))


def conformal_factor(needed: np.ndarray, coverage: float = CONFORMAL_LEVEL) -> float:
    """The split-conformal quantile of the needed interval factors (finite-sample corrected), clipped."""
    import numpy as np

    if len(needed) == 0:
        return 1.0
    rank = min(len(needed), int(np.ceil((len(needed) + 1) * coverage)))
    return float(np.clip(np.sort(needed)[rank - 1], 0.1, 20.0))


def calibrate(examples: Examples, raw: np.ndarray) -> TrendCalibration:
    """The interval factor per KPI and horizon bucket from the calibration windows: the conformal quantile of
    |actual - yhat| / local spread. `raw` is the calibrating models' (rows, len(QUANTILES)) forecast in KPI units."""
    import numpy as np

    calibration = TrendCalibration()
    if len(examples.actual) == 0:
        return calibration
    if examples.spread is None:
        raise ValueError("calibration examples need their local spread")
    point = calibration.point_forecast(examples.x, raw, examples.statistical)
    needed = np.abs(examples.actual - point) / np.maximum(examples.spread, 1e-9)
    kpis = np.asarray(examples.kpi)
    buckets = np.asarray([horizon_bucket(h) for h in examples.horizon])
    for kpi in KPIS:
        mask = kpis == kpi
        if mask.any():
            calibration.widen[kpi] = [conformal_factor(needed[mask & (buckets == b)])
                                      for b in range(len(HORIZON_BUCKETS))]
    return calibration


def raw_quantiles(booster: xgb.Booster, x: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """(rows, quantiles) uncalibrated quantile forecasts in KPI units (sorted across quantiles, never negative)."""
    import numpy as np

    raw = np.asarray(booster.inplace_predict(x), dtype=np.float64).reshape(len(x), -1)
    return np.clip(np.sort(raw, axis=1) * scale[:, None], 0.0, None)


def quantile_forecast(booster: xgb.Booster, x: np.ndarray, scale: np.ndarray,
                      calibration: TrendCalibration | None = None, spread: np.ndarray | None = None,
                      statistical: np.ndarray | None = None) -> np.ndarray:
    """(rows, 3) forecasts in KPI units: lower, point (`yhat`), upper, never negative. `spread` is each row's
    local spread (`local_spread` at its origin), which a local-spread calibration needs; `statistical` its
    statistical forecast (`statistical_forecast`), which a combined point forecast needs."""
    return (calibration or TrendCalibration()).apply(x, raw_quantiles(booster, x, scale), spread, statistical)


def point_forecast(booster: xgb.Booster, x: np.ndarray, scale: np.ndarray,
                   calibration: TrendCalibration | None = None, statistical: np.ndarray | None = None) -> np.ndarray:
    """`yhat` alone (needs no spread)."""
    return (calibration or TrendCalibration()).point_forecast(x, raw_quantiles(booster, x, scale), statistical)
