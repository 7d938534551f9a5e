"""The churn run's record of each tenant's churn definition stays small at 100,000 tenants."""

from __future__ import annotations

from models.churn.card import window_artifact, window_params


def test_window_params_are_one_per_distinct_window_and_the_artifact_holds_every_tenant() -> None:
    windows = {f"t{n:06d}": (30, 30) if n % 10 else (56, 28) for n in range(100_000)}
    params = window_params(windows)
    assert params == {"window_30d_30d": "inactivity=30d,horizon=30d: 90000 tenants",
                      "window_56d_28d": "inactivity=56d,horizon=28d: 10000 tenants"}
    every = window_artifact(windows)
    assert len(every) == 100_000 and every["t000000"] == "inactivity=56d,horizon=28d"
