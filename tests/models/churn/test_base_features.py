"""The customer-base features (point in time, the same offline and online) and the per-tenant risk bands."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from models.bands import band_shares, band_thresholds, risk_band
from models.churn.base_features import (
    DERIVED_FEATURES,
    INPUTS,
    add_customer_base_features,
    fill_customer_base_columns,
)
from models.churn.customer_base import BGNBD, simulate_bgnbd

TRUTH = BGNBD(r=0.6, alpha=3.0, a=0.8, b=2.5)


def _rows(tenant: str, day: str, n: int, seed: int) -> pa.Table:
    x, t_x, t = simulate_bgnbd(TRUTH, n, observe_days=200, rng=np.random.default_rng(seed))
    return pa.table({"tenant_id": [tenant] * n, "customer_id": [f"c{i}" for i in range(n)],
                     "snapshot_date": pa.array([dt.date.fromisoformat(day)] * n, pa.date32()),
                     **{name: pa.array(v.astype(np.int64)) for name, v in zip(INPUTS, (x, t_x, t), strict=True)}})


def test_features_are_point_in_time_and_online_fill_matches_offline() -> None:
    early = [_rows("t1", "2024-03-03", 200, 1), _rows("t2", "2024-03-03", 150, 2)]
    later = _rows("t1", "2024-03-10", 200, 3)
    alone, _ = add_customer_base_features(pa.concat_tables(early), date_column="snapshot_date", horizons={"t1": 60})
    both, newest = add_customer_base_features(pa.concat_tables([*early, later]), date_column="snapshot_date",
                                              horizons={"t1": 60})
    # rows of 03-03 do not change when later rows arrive: a fit only reads rows of its date or earlier
    for name in DERIVED_FEATURES:
        assert both.column(name).slice(0, alone.num_rows).to_pylist() == alone.column(name).to_pylist()
    p_alive = np.asarray(both.column("cb_p_alive").to_pylist(), dtype=float)
    assert np.all((p_alive > 0) & (p_alive <= 1))
    assert newest.horizon("t1") == 60 and set(newest.models) == {"t1", "t2"}
    # online: a matrix of raw rows filled from the newest fit equals the offline values of the same date
    names = [*INPUTS, *DERIVED_FEATURES]
    t1_later = both.slice(alone.num_rows)
    x = np.column_stack([np.asarray(t1_later.column(n).to_pylist(), dtype=np.float32) for n in INPUTS]
                        + [np.full((t1_later.num_rows, 2), np.nan, dtype=np.float32)])
    fill_customer_base_columns(x, names, newest, "t1")
    assert x[:, 3] == pytest.approx(np.asarray(t1_later.column("cb_p_alive").to_pylist()), rel=1e-5)
    assert x[:, 4] == pytest.approx(np.asarray(t1_later.column("cb_expected_purchases").to_pylist()), rel=1e-4)
    given = x[:, 3].copy()
    fill_customer_base_columns(x, names, newest, "unknown-tenant")
    assert np.array_equal(x[:, 3], given)  # values the caller gave are kept
    x[:, 3:] = np.nan
    fill_customer_base_columns(x, names, newest, "unknown-tenant")
    assert np.isnan(x[:, 3]).all()  # no fit for the tenant: missing values, which the booster handles


def test_bands_split_a_tenant_roughly_half_a_third_a_sixth() -> None:
    probabilities = np.random.default_rng(0).beta(8, 2, size=2_000)  # most customers likely to churn
    assert band_shares(probabilities)["high"] > 0.9  # the fixed 0.3 / 0.6 bands: nearly everyone is high
    thresholds = band_thresholds(probabilities)
    shares = band_shares(probabilities, thresholds)
    assert shares["low"] == pytest.approx(0.5, abs=0.01)
    assert shares["medium"] == pytest.approx(0.35, abs=0.01) and shares["high"] == pytest.approx(0.15, abs=0.01)
    assert max(shares.values()) <= 0.6


def test_a_band_holds_more_than_its_share_only_when_customers_tie() -> None:
    tied = np.r_[np.full(700, 0.8), np.linspace(0.1, 0.5, 300)]
    thresholds = band_thresholds(tied)
    assert band_shares(tied, thresholds)["high"] == pytest.approx(0.7)  # 70 % cannot be told apart
    assert risk_band(0.8, thresholds) == "high" and risk_band(0.2, thresholds) == "low"
    assert band_thresholds(np.array([])) == (0.3, 0.6)
