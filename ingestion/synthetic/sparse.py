"""Sparse buyers: customers of retail-like tenants who buy now and then, as in the Pareto/NBD model.

Each customer of a `sparse` tenant signs up inside the window with a first purchase, then, while alive,
buys as a Poisson process with its own rate lambda ~ Gamma(shape, scale) and dies (silently: real retail has
no account closure) after an exponential lifetime with its own rate mu ~ Gamma(shape, scale). With the
defaults most customers never buy again, and the median gap between repeat purchases is weeks to months.
Every purchase day carries a session before the order.

The ground truth is exact: the daily hazard of a live customer is 1 - exp(-mu), so its true 30-day churn
probability is 1 - exp(-30 mu); `simulate` writes it with the other snapshots, outside the lake.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PURCHASE_RATE_SHAPE = 0.55  # lambda ~ Gamma(0.55, 1/60 per day): mean one purchase per ~110 days, very skewed
PURCHASE_RATE_SCALE = 1.0 / 60.0
DROPOUT_RATE_SHAPE = 0.9  # mu ~ Gamma(0.9, 1/80 per day): mean lifetime of months, a long tail of loyal ones
DROPOUT_RATE_SCALE = 1.0 / 80.0


@dataclass(frozen=True)
class SparseBuyers:
    """What the simulation of the sparse customers yields (customer indices are the simulation's)."""

    who: np.ndarray  # per purchase: customer index
    day: np.ndarray  # per purchase: simulated day
    churn_day: np.ndarray  # per sparse customer: the day it dies (may lie beyond the window)
    mu: np.ndarray  # per sparse customer: its daily dropout rate


def simulate_sparse_buyers(customers: np.ndarray, signup_day: np.ndarray, *, days: int,
                           rng: np.random.Generator) -> SparseBuyers:
    """Purchase days (first one on the signup day) and dropout for `customers` (indices, signup days given)."""
    n = customers.size
    lam = rng.gamma(PURCHASE_RATE_SHAPE, PURCHASE_RATE_SCALE, size=n)
    mu = rng.gamma(DROPOUT_RATE_SHAPE, DROPOUT_RATE_SCALE, size=n)
    lifetime = rng.exponential(1.0, size=n) / np.maximum(mu, 1e-9)
    churn_day = signup_day + np.ceil(lifetime).astype(np.int64)
    last_day = np.minimum(churn_day - 1, days - 1)
    span = np.maximum(last_day - signup_day, 0)
    repeats = rng.poisson(lam * span)
    who = np.repeat(np.arange(n), repeats)
    offsets = np.ceil(rng.random(who.size) * span[who]).astype(np.int64)
    day = signup_day[who] + np.maximum(offsets, 1)
    first = np.arange(n)
    all_who = np.concatenate([first, who])
    all_day = np.concatenate([signup_day.astype(np.int64), day])
    # several purchases drawn on one day are one purchase day with several orders: keep them all
    return SparseBuyers(customers[all_who], all_day, churn_day, mu)


def snapshot_rows(buyers: SparseBuyers, customers: np.ndarray, signup_day: np.ndarray, *, days: int,
                  every: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(customer, day, hazard of the next day) for every live sparse customer at each snapshot day."""
    out: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    hazard = 1.0 - np.exp(-buyers.mu)
    for day in range(every - 1, days, every):
        live = (signup_day <= day) & (buyers.churn_day > day)
        out.append((customers[live].astype(np.int32), np.full(int(live.sum()), day, dtype=np.int32), hazard[live]))
    return out
