"""The trend model's calibration (point quantile per KPI, split-conformal interval factors per KPI and horizon
bucket): chosen on calibration windows, it must hold on fresh data from the same distribution."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest

from models.trend.train import (
    FEATURE_NAMES,
    HORIZON,
    HORIZON_BUCKETS,
    KPIS,
    QUANTILES,
    Examples,
    TrendCalibration,
    calibrate,
    conformal_factor,
    forecast_metrics,
)


def _draw(rng: np.random.Generator, rows: int, *, noise: dict[str, float]) -> tuple[Examples, np.ndarray]:
    """Examples whose actuals are lognormal around 100 with a KPI- and horizon-dependent spread, and a
    deliberately too narrow 'raw' quantile forecast (the true quantiles of half that spread)."""
    from statistics import NormalDist

    kpi = rng.integers(0, len(KPIS), rows)
    horizon = rng.integers(1, HORIZON + 1, rows)
    sigma = np.asarray([noise[k] for k in KPIS])[kpi] * (1 + horizon / HORIZON)
    actual = 100 * np.exp(sigma * rng.standard_normal(rows))
    z = np.asarray([NormalDist().inv_cdf(q) for q in QUANTILES])
    raw = 100 * np.exp(0.5 * sigma[:, None] * z[None, :])
    x = np.zeros((rows, len(FEATURE_NAMES)), np.float32)
    x[:, FEATURE_NAMES.index("kpi")] = kpi
    x[:, FEATURE_NAMES.index("horizon")] = horizon
    examples = Examples(x, actual / 100, np.full(rows, 100.0), actual, actual, ["t"] * rows,
                        [KPIS[k] for k in kpi], ["small"] * rows, [date(2026, 1, 1)] * rows,
                        [int(h) for h in horizon])
    return examples, raw


def _apply(calibration: TrendCalibration, examples: Examples, raw: np.ndarray) -> np.ndarray:
    point_column, widen = calibration.rows(examples.x)
    point = raw[np.arange(len(raw)), point_column]
    return np.column_stack([point - widen * (point - raw[:, 0]), point, point + widen * (raw[:, -1] - point)])


def test_calibration_widens_a_too_narrow_band_to_the_promised_coverage_per_kpi() -> None:
    rng = np.random.default_rng(3)
    noise = {"active_customers": 0.1, "revenue": 0.5}
    fitted, raw = _draw(rng, 6000, noise=noise)
    calibration = calibrate(fitted, raw)
    for kpi in KPIS:
        assert len(calibration.widen[kpi]) == len(HORIZON_BUCKETS)
        assert all(1.5 < factor < 3.0 for factor in calibration.widen[kpi])  # the raw band is half as wide
    fresh, fresh_raw = _draw(rng, 6000, noise=noise)
    metrics = forecast_metrics(fresh, _apply(calibration, fresh, fresh_raw))
    uncalibrated = forecast_metrics(fresh, _apply(TrendCalibration(), fresh, fresh_raw))
    assert uncalibrated["interval_coverage"] < 0.6
    for kpi in KPIS:
        # conformal level 0.85 on exchangeable data: about 85 % (the level absorbs drift on real series)
        assert 0.80 <= metrics[f"interval_coverage_{kpi}"] <= 0.90


def test_point_quantile_is_chosen_by_smape_on_the_calibration_windows() -> None:
    rng = np.random.default_rng(4)
    examples, raw = _draw(rng, 4000, noise={"active_customers": 0.05, "revenue": 0.9})
    calibration = calibrate(examples, raw)
    from models.common import smape

    for kpi in KPIS:
        mask = np.asarray(examples.kpi) == kpi
        scores = {c: smape(examples.actual[mask], raw[mask, c]) for c in range(1, len(QUANTILES) - 1)}
        assert calibration.point[kpi] == min(scores, key=scores.__getitem__)


def test_calibration_round_trips_and_reads_the_legacy_single_scale() -> None:
    calibration = TrendCalibration({KPIS[0]: 1, KPIS[1]: 2}, {KPIS[0]: [1.1, 1.2, 1.3], KPIS[1]: [0.9, 1.0, 1.4]})
    meta = {"quantiles": list(QUANTILES), **calibration.to_dict()}
    again = TrendCalibration.from_dict(meta)
    assert again.point == calibration.point and again.widen == calibration.widen
    legacy = TrendCalibration.from_dict({"quantiles": [0.1, 0.6, 0.9], "interval_scale": 1.7})
    assert set(legacy.point.values()) == {1} and all(v == [1.7] * len(HORIZON_BUCKETS) for v in legacy.widen.values())


@pytest.mark.parametrize(("needed", "expected"), [([], 1.0), ([0.5] * 10, 0.5), ([100.0] * 5, 10.0)])
def test_conformal_factor_is_a_clipped_finite_sample_quantile(needed: list[float], expected: float) -> None:
    assert conformal_factor(np.asarray(needed)) == pytest.approx(expected)
