"""The trend model's point forecast (the mean of the booster's 50 % and 60 % quantiles combined with the
statistical level-times-weekday-profile forecast) and its locally adaptive interval (yhat plus or minus a
split-conformal factor per KPI and horizon bucket times the series' local spread): chosen on calibration windows,
it must hold on fresh data from the same distribution, follow each series' volatility, and never see the future."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pytest

from models.trend.baselines import LEVEL_DAYS, PROFILE_WEEKS, companions, profile_forecast, statistical_forecast
from models.trend.calibration import (
    BOOSTER_WEIGHT,
    CONFORMAL_LEVEL,
    HORIZON_BUCKETS,
    QUANTILES,
    TrendCalibration,
    calibrate,
    conformal_factor,
)
from models.trend.features import (
    FEATURE_NAMES,
    HORIZON,
    KPIS,
    Examples,
    Series,
    local_spread,
    sample_series,
    training_rows,
)
from models.trend.split import CALIBRATION_BLOCK, make_examples, split_examples, weekly_origins
from models.trend.train import forecast_metrics
from shironzi.errors import InvalidInputError


def _draw(rng: np.random.Generator, rows: int, *, noise: dict[str, float]) -> tuple[Examples, np.ndarray]:
    """Examples whose actuals are 100 plus normal noise with a KPI-, horizon- and row-dependent spread (the row's
    'local spread' is its true standard deviation), a 'raw' quantile forecast centred on 100 and a statistical
    forecast of 100."""
    from statistics import NormalDist

    kpi = rng.integers(0, len(KPIS), rows)
    horizon = rng.integers(1, HORIZON + 1, rows)
    spread = rng.choice([2.0, 8.0], rows)  # calm and volatile series
    sigma = np.asarray([noise[k] for k in KPIS])[kpi] * (1 + horizon / HORIZON) * spread
    actual = np.clip(100 + sigma * rng.standard_normal(rows), 0, None)
    z = np.asarray([NormalDist().inv_cdf(q) for q in QUANTILES])
    raw = 100 + 0.5 * sigma[:, None] * z[None, :]
    x = np.zeros((rows, len(FEATURE_NAMES)), np.float32)
    x[:, FEATURE_NAMES.index("kpi")] = kpi
    x[:, FEATURE_NAMES.index("horizon")] = horizon
    examples = Examples(x, actual / 100, np.full(rows, 100.0), actual, actual, ["t"] * rows,
                        [KPIS[k] for k in kpi], ["small"] * rows, [date(2026, 1, 1)] * rows,
                        [int(h) for h in horizon], spread, np.full(rows, 100.0))
    return examples, raw


def test_interval_reaches_the_conformal_level_per_kpi_and_follows_the_local_spread() -> None:
    rng = np.random.default_rng(3)
    noise = {"active_customers": 1.0, "revenue": 3.0}
    fitted, raw = _draw(rng, 8000, noise=noise)
    calibration = calibrate(fitted, raw)
    for kpi in KPIS:
        assert len(calibration.widen[kpi]) == len(HORIZON_BUCKETS)
        # the normalised error grows with the horizon, and so does the factor
        assert calibration.widen[kpi][0] < calibration.widen[kpi][-1]
    assert calibration.widen["revenue"][0] > 2 * calibration.widen["active_customers"][0]
    fresh, fresh_raw = _draw(rng, 8000, noise=noise)
    forecast = calibration.apply(fresh.x, fresh_raw, fresh.spread, fresh.statistical)
    metrics = forecast_metrics(fresh, forecast)
    uncalibrated = forecast_metrics(fresh, TrendCalibration().apply(fresh.x, fresh_raw, fresh.spread,
                                                                    fresh.statistical))
    assert uncalibrated["interval_coverage_revenue"] < 0.6
    for kpi in KPIS:
        assert abs(metrics[f"interval_coverage_{kpi}"] - CONFORMAL_LEVEL) <= 0.04
    # locally adaptive: the same KPI and horizon bucket, four times the spread -> four times the width, and the
    # calm and the volatile series are both covered at about the level (one global width would over-cover the calm)
    width = forecast[:, 2] - forecast[:, 0]
    calm, volatile = fresh.spread == 2.0, fresh.spread == 8.0
    same = (np.asarray(fresh.kpi) == "revenue") & (np.asarray(fresh.horizon) <= HORIZON_BUCKETS[0][1])
    unclipped = forecast[:, 0] > 0
    assert np.median(width[same & volatile & unclipped]) == pytest.approx(4 * np.median(width[same & calm]))
    inside = (fresh.actual >= forecast[:, 0]) & (fresh.actual <= forecast[:, 2])
    for mask in (calm, volatile):
        assert abs(inside[mask].mean() - CONFORMAL_LEVEL) <= 0.05
    with pytest.raises(ValueError, match="spread"):
        calibration.apply(fresh.x, fresh_raw, None, fresh.statistical)


def test_point_forecast_combines_the_booster_quantiles_with_the_statistical_forecast() -> None:
    rng = np.random.default_rng(4)
    examples, raw = _draw(rng, 500, noise={"active_customers": 1.0, "revenue": 5.0})
    statistical = rng.uniform(50, 150, len(examples.actual))
    point = calibrate(examples, raw).apply(examples.x, raw, examples.spread, statistical)[:, 1]
    booster = (raw[:, QUANTILES.index(0.5)] + raw[:, QUANTILES.index(0.6)]) / 2
    assert 0 < BOOSTER_WEIGHT < 1
    assert np.allclose(point, BOOSTER_WEIGHT * booster + (1 - BOOSTER_WEIGHT) * statistical)
    with pytest.raises(ValueError, match="statistical"):
        TrendCalibration().point_forecast(examples.x, raw, None)
    # the booster alone (scored as `smape_booster` at training) needs no statistical forecast
    alone = TrendCalibration(booster_weight=1.0)
    assert np.allclose(alone.point_forecast(examples.x, raw, None), booster)


def test_calibration_round_trips_and_refuses_other_formats() -> None:
    calibration = TrendCalibration({KPIS[0]: (1, 2), KPIS[1]: (2,)}, {KPIS[0]: [1.1, 1.2, 1.3],
                                                                       KPIS[1]: [0.9, 1.0, 1.4]})
    again = TrendCalibration.from_dict({"quantiles": list(QUANTILES), **calibration.to_dict()})
    assert (again.point, again.widen, again.booster_weight) == (calibration.point, calibration.widen, BOOSTER_WEIGHT)
    # no release shipped another format: a features.json without the combined point or with the 10-90 % band
    # interval is refused rather than read as something it is not
    per_kpi = {"quantiles": [0.1, 0.5, 0.6, 0.9], "point_quantile": {k: 0.6 for k in KPIS},
               "interval_scale": {k: [2.0, 2.0, 2.0] for k in KPIS}}
    band = {"quantiles": list(QUANTILES), **calibration.to_dict(), "interval_normaliser": "quantile_band"}
    for meta in (per_kpi, band, {"quantiles": [0.1, 0.6, 0.9], "interval_scale": 1.7}):
        with pytest.raises(InvalidInputError, match="not a trend calibration"):
            TrendCalibration.from_dict(meta)


@pytest.mark.parametrize(("needed", "expected"), [([], 1.0), ([0.5] * 10, 0.5), ([100.0] * 5, 20.0)])
def test_conformal_factor_is_a_clipped_finite_sample_quantile(needed: list[float], expected: float) -> None:
    assert conformal_factor(np.asarray(needed)) == pytest.approx(expected)


def test_local_spread_is_the_recent_week_over_week_change() -> None:
    weekday = np.asarray([10.0, 12, 14, 16, 18, 20, 22])
    values = np.concatenate([np.tile(weekday, 8), np.tile(weekday, 4) + np.tile([3.0, -3.0], 14)])
    series = Series("t", "revenue", date(2026, 1, 5), values)
    assert local_spread(series, 55) == pytest.approx(0.01 * 16)  # a pure weekly pattern: only the floor
    # the last 28 days alternate +3/-3 around the same pattern; each changes by 3 or 6 from a week earlier
    expected = np.abs(values[56:84] - values[49:77]).mean()
    assert local_spread(series, 83) == pytest.approx(expected) and expected > 3


def test_split_never_trains_on_the_weeks_it_calibrates_or_the_holdout() -> None:
    rng = np.random.default_rng(5)
    days = 260
    series = [Series(f"t{i}", kpi, date(2026, 1, 5), 50 + rng.poisson(20, days).astype(float))
              for i in range(2) for kpi in KPIS]
    split = split_examples(series)
    assert len(split.blocks) == 12 // CALIBRATION_BLOCK
    holdout_start = min(split.holdout.target_date)
    assert max(split.train.target_date) < holdout_start
    for block in split.blocks:
        origins = [d - timedelta(days=h) for d, h in zip(block.calibration.target_date, block.calibration.horizon,
                                                         strict=True)]
        assert len(set(origins)) == CALIBRATION_BLOCK
        assert max(block.train.target_date) <= min(origins)
        assert max(block.calibration.target_date) < holdout_start
    newest = split.blocks[0]
    assert max(newest.calibration.target_date) == holdout_start - timedelta(days=1)


def test_profile_forecast_is_the_recent_level_times_the_weekday_profile() -> None:
    weekday = np.asarray([10.0, 12, 14, 16, 18, 20, 0])  # closed on the seventh day
    weeks = PROFILE_WEEKS + 2
    values = np.tile(weekday, weeks)
    values[-LEVEL_DAYS:] *= 2  # the level doubled over the last LEVEL_DAYS days
    origin = len(values) - 1
    horizons = list(range(1, 15))
    expected = 2 * np.asarray([weekday[(origin + h) % 7] for h in horizons])
    assert np.allclose(profile_forecast(values, origin, horizons), expected)
    # the last LEVEL_DAYS days alone set the level: anything older moves only the profile, which is unchanged here
    older = values.copy()
    older[: -LEVEL_DAYS] *= 3
    assert np.allclose(profile_forecast(older, origin, horizons), expected)
    # a stray sale on the closed day neither divides by zero nor blows up the level
    stray = values.copy()
    stray[max(i for i in range(origin - LEVEL_DAYS + 1, origin + 1) if i % 7 == 6)] = 5.0
    forecast = profile_forecast(stray, origin, horizons)
    assert np.isfinite(forecast).all() and forecast.max() < 2 * weekday.max() * 1.1
    assert profile_forecast(np.zeros(90), 89, horizons).tolist() == [0.0] * len(horizons)


def test_revenue_is_forecast_through_the_customers_forecast_and_the_spend_per_customer() -> None:
    rng = np.random.default_rng(6)
    days = 7 * (PROFILE_WEEKS + 4)
    customers = np.tile([40.0, 42, 44, 46, 48, 30, 20], days // 7) + rng.integers(0, 5, days)
    revenue = customers * rng.choice([5.0, 25.0], days)  # noisy spend per customer around 15
    start = date(2026, 1, 5)
    active = Series("t", "active_customers", start, customers)
    money = Series("t", "revenue", start, revenue)
    other = Series("u", "revenue", start, revenue * 3)  # another tenant: never anyone's companion
    assert companions([active, money, other]) == [None, active, None]
    origin, horizons = days - 1, list(range(1, HORIZON + 1))
    spend = revenue[origin - 83: origin + 1].sum() / customers[origin - 83: origin + 1].sum()
    through = statistical_forecast(money, origin, horizons, active)
    assert np.allclose(through, profile_forecast(customers, origin, horizons) * spend)
    # the daily revenue's own level is noisier: it is not what the companion route returns
    assert not np.allclose(through, profile_forecast(revenue, origin, horizons))
    assert np.allclose(statistical_forecast(money, origin, horizons), profile_forecast(revenue, origin, horizons))
    idle = Series("t", "active_customers", start, np.zeros(days))  # no customers yet: fall back to its own level
    assert np.allclose(statistical_forecast(money, origin, horizons, idle), profile_forecast(revenue, origin, horizons))
    # the examples carry it, computed from the history up to each origin only
    examples = make_examples([active, money, other], weekly_origins(HORIZON, 2))
    future = Series("t", "active_customers", start, np.concatenate([customers[: origin - HORIZON + 1],
                                                                     np.full(HORIZON, 1e6)]))
    again = make_examples([future, money, other], weekly_origins(HORIZON, 2))
    assert examples.statistical is not None and again.statistical is not None
    assert np.allclose(examples.statistical, again.statistical)


def test_trend_training_samples_whole_tenants_per_size_bucket_above_the_row_cap() -> None:
    """100k tenants' series must not all be held: above the cap, whole tenants (both KPIs: revenue is forecast
    through active customers) are sampled, every size bucket keeping its share, the same data giving the same
    sample."""
    sizes = {"small": 150, "medium": 40, "large": 10}
    series = [Series(f"{bucket}-{n:03d}", kpi, date(2026, 1, 1), np.ones(120), bucket)
              for bucket, count in sizes.items() for n in range(count) for kpi in KPIS]
    per_tenant = sum(training_rows(s, 2) for s in series[: len(KPIS)])
    total = per_tenant * sum(sizes.values())
    assert sample_series(series, total, 2) == series  # at the cap: everything

    cap = total // 5
    sampled = sample_series(series, cap, 2, seed=3)
    tenants = {s.tenant_id for s in sampled}
    assert sum(training_rows(s, 2) for s in sampled) <= cap + per_tenant * len(sizes)
    assert len(tenants) < sum(sizes.values()) // 4
    for tenant in tenants:  # whole tenants
        assert sorted(s.kpi for s in sampled if s.tenant_id == tenant) == sorted(KPIS)
    for bucket, count in sizes.items():  # each bucket keeps about its share, at least one tenant
        kept = sum(t.startswith(bucket) for t in tenants)
        assert max(1, count // 5 - 1) <= kept <= count // 5 + 1
    assert sample_series(series, cap, 2, seed=3) == sampled
    assert sample_series(series, cap, 2, seed=4) != sampled


def test_a_series_counts_only_the_origins_that_make_examples() -> None:
    """A tiny tenant's mostly-zero series makes few examples (a zero 28-day window has no scale): counting every
    origin would sample 482 of 202,000 series for a fraction of the cap."""
    quiet = np.zeros(120)
    quiet[[40, 41]] = 1.0  # two active days: origins whose 28-day window holds them
    examples = make_examples([Series("t", "revenue", date(2026, 1, 1), quiet)], lambda s: range(len(s.values)))
    estimate = training_rows(Series("t", "revenue", date(2026, 1, 1), quiet), 1)
    assert 0 < len(examples.actual) <= estimate < training_rows(Series("t", "revenue", date(2026, 1, 1),
                                                                       np.ones(120)), 1) // 2
    assert training_rows(Series("t", "revenue", date(2026, 1, 1), np.zeros(120)), 1) == 0
