"""The BG/NBD customer-base model: the MLE recovers known parameters, P(alive) and expected purchases behave."""

from __future__ import annotations

import numpy as np
import pytest

from models.churn.customer_base import BGNBD, fit_bgnbd, simulate_bgnbd
from shironzi.errors import InvalidInputError

TRUE = BGNBD(r=0.8, alpha=4.0, a=0.9, b=3.0)


def test_mle_recovers_known_parameters() -> None:
    x, t_x, t = simulate_bgnbd(TRUE, 8_000, observe_days=52 * 7, rng=np.random.default_rng(3))
    fitted = fit_bgnbd(x, t_x, t)
    assert fitted.r == pytest.approx(TRUE.r, rel=0.15)
    assert fitted.alpha == pytest.approx(TRUE.alpha, rel=0.2)
    assert fitted.a == pytest.approx(TRUE.a, rel=0.3)
    assert fitted.b == pytest.approx(TRUE.b, rel=0.35)
    # the fitted mean purchase rate (r / alpha per week) is what the data needs most
    assert fitted.r / fitted.alpha == pytest.approx(TRUE.r / TRUE.alpha, rel=0.1)


def test_p_alive_ranks_recent_frequent_buyers_above_lapsed_ones() -> None:
    days = np.array([200.0, 200.0, 200.0, 200.0])
    x = np.array([10.0, 10.0, 1.0, 0.0])
    t_x = np.array([195.0, 40.0, 190.0, 0.0])
    p = TRUE.p_alive(x, t_x, days)
    assert p[0] > 0.9 > 0.2 > p[1]  # frequent and recent vs frequent but silent for 160 days
    assert p[0] > p[2] and p[3] == 1.0  # BG/NBD: no repeat purchase yet means no dropout opportunity yet
    expected = TRUE.expected_purchases(30, x, t_x, days)
    assert np.all(np.isfinite(expected)) and np.all(expected >= 0)
    assert expected[0] > expected[2] > expected[1]
    assert TRUE.expected_purchases(60, x, t_x, days)[0] > expected[0]


def test_expected_purchases_match_simulation() -> None:
    """Conditional expectation for fresh customers (x = 0, T = 0) equals the simulated mean over the horizon."""
    x, _, _ = simulate_bgnbd(TRUE, 40_000, observe_days=2 * 70, rng=np.random.default_rng(5))
    # simulate_bgnbd draws T in [70, 140]: compare with the closed form averaged over the same T grid
    grid = np.linspace(70, 140, 71)
    predicted = TRUE.expected_purchases(1, np.zeros(1), np.zeros(1), np.zeros(1))  # warm-up: finite at T = 0
    assert np.isfinite(predicted).all()
    mean_closed = np.mean([TRUE.expected_purchases(d, np.zeros(1), np.zeros(1), np.zeros(1))[0] for d in grid])
    assert x.mean() == pytest.approx(mean_closed, rel=0.06)


def test_fit_rejects_too_few_or_impossible_rows() -> None:
    with pytest.raises(InvalidInputError, match="at least"):
        fit_bgnbd(np.zeros(3), np.zeros(3), np.ones(3))
    with pytest.raises(InvalidInputError, match="t_x"):
        fit_bgnbd(np.ones(30), np.full(30, 10.0), np.full(30, 5.0) - 6)
