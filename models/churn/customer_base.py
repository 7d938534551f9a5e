"""The BG/NBD customer-base model (Fader, Hardie & Lee 2005): a small vectorised maximum-likelihood fit.

Each customer is summarised by (x, t_x, T): x repeat purchase days after the first purchase, t_x the time
from the first to the last purchase, T the time from the first purchase to the cut date (all in days).
While alive a customer buys at rate lambda ~ Gamma(r, alpha); after every purchase it drops out with
probability p ~ Beta(a, b). The fit gives P(alive | x, t_x, T) and the expected purchases over a horizon:
a churn baseline and two features of the churn model (fitted per tenant and cut date, on data before it).

    fitted = fit_bgnbd(x, t_x, T)
    fitted.p_alive(x, t_x, T); fitted.expected_purchases(30, x, t_x, T)

`lifetimes`/`btyd` are unmaintained and not in the lock; numpy + scipy suffice.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from shironzi.errors import InvalidInputError

if TYPE_CHECKING:
    from collections.abc import Mapping

TIME_UNIT_DAYS = 7.0  # the fit runs in weeks: alpha stays near 1 and the optimiser well scaled
_LOG_BOUNDS = (-9.0, 9.0)
MIN_CUSTOMERS = 20


@dataclass(frozen=True)
class BGNBD:
    """Fitted BG/NBD parameters (time unit: weeks) and the fit's mean log-likelihood."""

    r: float
    alpha: float
    a: float
    b: float
    log_likelihood: float = float("nan")
    customers: int = 0

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: Mapping[str, float]) -> BGNBD:
        return cls(**{k: float(values[k]) for k in ("r", "alpha", "a", "b")},
                   log_likelihood=float(values.get("log_likelihood", float("nan"))),
                   customers=int(values.get("customers", 0)))

    def p_alive(self, x: np.ndarray, t_x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """P(the customer is still alive at T | x, t_x, T); inputs in days. A customer with no repeat is alive."""
        x, t_x, t = _weeks(x, t_x, t)
        repeat = x > 0
        log_ratio = (self.r + x) * (np.log(self.alpha + t) - np.log(self.alpha + t_x))
        log_odds = np.log(self.a) - np.log(np.maximum(self.b + x - 1, 1e-12)) + log_ratio
        out = np.ones_like(x)
        out[repeat] = 1.0 / (1.0 + np.exp(np.minimum(log_odds[repeat], 700.0)))
        return out

    def expected_purchases(self, horizon_days: float, x: np.ndarray, t_x: np.ndarray, t: np.ndarray) -> np.ndarray:
        """E[purchases in (T, T + horizon] | x, t_x, T] (inputs in days)."""
        from scipy.special import hyp2f1

        x, t_x, t = _weeks(x, t_x, t)
        h = float(horizon_days) / TIME_UNIT_DAYS
        a = self.a if abs(self.a - 1.0) > 1e-6 else 1.0 + 1e-6  # the closed form is singular at a = 1
        z = h / (self.alpha + t + h)
        head = (a + self.b + x - 1) / (a - 1)
        tail = 1.0 - ((self.alpha + t) / (self.alpha + t + h)) ** (self.r + x) * hyp2f1(
            self.r + x, self.b + x, a + self.b + x - 1, z)
        alive_odds = np.where(x > 0, a / np.maximum(self.b + x - 1, 1e-12)
                              * ((self.alpha + t) / (self.alpha + t_x)) ** (self.r + x), 0.0)
        out = head * tail / (1.0 + alive_odds)
        # Where the hypergeometric series loses precision, fall back to P(alive) x the posterior rate x h.
        rough = self.p_alive(x * 1.0, t_x * TIME_UNIT_DAYS, t * TIME_UNIT_DAYS) * (self.r + x) / (self.alpha + t) * h
        return np.where(np.isfinite(out) & (out >= 0), out, rough)  # type: ignore[no-any-return]


def _weeks(x: np.ndarray, t_x: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=np.float64)
    t_x = np.asarray(t_x, dtype=np.float64) / TIME_UNIT_DAYS
    t = np.asarray(t, dtype=np.float64) / TIME_UNIT_DAYS
    return x, t_x, np.maximum(t, t_x)


def log_likelihood(params: np.ndarray, x: np.ndarray, t_x: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Per-customer BG/NBD log-likelihood for (r, alpha, a, b); x, t_x, T in the fit's time unit."""
    from scipy.special import gammaln

    r, alpha, a, b = params
    # x takes few distinct values (purchase counts): the gamma functions run on those only
    values, which = np.unique(x, return_inverse=True)
    a1 = (gammaln(r + values) - gammaln(r))[which] + r * np.log(alpha)
    # betaln(a, b + x) - betaln(a, b), in gammaln terms
    a2 = (gammaln(b + values) + gammaln(a + b) - gammaln(a + b + values) - gammaln(b))[which]
    a3 = -(r + x) * np.log(alpha + t)
    repeat = x > 0
    a4 = np.where(repeat, np.log(a) - np.log(np.where(repeat, b + x - 1, 1.0)) - (r + x) * np.log(alpha + t_x),
                  -np.inf)
    return a1 + a2 + np.logaddexp(a3, a4)  # type: ignore[no-any-return]


def fit_bgnbd(x: np.ndarray, t_x: np.ndarray, t: np.ndarray, *, penalty: float = 1e-4) -> BGNBD:
    """Maximum likelihood over log-parameters (L-BFGS-B, a small ridge on them for stability); days in."""
    from scipy.optimize import minimize

    x, t_x, t = (np.asarray(v, dtype=np.float64) for v in (x, t_x, t))
    if x.size < MIN_CUSTOMERS:
        raise InvalidInputError(f"the BG/NBD fit needs at least {MIN_CUSTOMERS} customers, got {x.size}")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > t + 1e-9) or not np.all(np.isfinite(t)):
        raise InvalidInputError("BG/NBD inputs need x >= 0 and 0 <= t_x <= T")
    x, t_x, t = _weeks(x, t_x, t)
    # Customers with the same (x, t_x, T) share a likelihood: fit on the distinct rows with their counts.
    rows, counts = np.unique(np.column_stack([x, t_x, t]), axis=0, return_counts=True)
    weights = counts / counts.sum()
    ux, utx, ut = rows[:, 0], rows[:, 1], rows[:, 2]

    def objective(log_params: np.ndarray) -> float:
        value = -float(np.sum(weights * log_likelihood(np.exp(log_params), ux, utx, ut)))
        return value + penalty * float(np.sum(log_params ** 2)) if np.isfinite(value) else 1e10

    start = np.log([0.5, max(float(np.mean(t)), 1.0), 1.0, 2.0])
    best = minimize(objective, start, method="L-BFGS-B", bounds=[_LOG_BOUNDS] * 4)
    r, alpha, a, b = np.exp(best.x)
    return BGNBD(float(r), float(alpha), float(a), float(b), -float(best.fun), int(x.size))


def simulate_bgnbd(params: BGNBD, n: int, *, observe_days: float, rng: np.random.Generator) -> tuple[
        np.ndarray, np.ndarray, np.ndarray]:
    """(x, t_x, T) in days for `n` customers drawn from the BG/NBD process, each first buying at day 0 and
    observed for `observe_days` (T, uniform in [observe_days / 2, observe_days]), in whole days."""
    lam = rng.gamma(params.r, 1.0 / params.alpha, size=n) / TIME_UNIT_DAYS  # per day
    p = rng.beta(params.a, params.b, size=n)
    t = rng.uniform(observe_days / 2, observe_days, size=n)
    x = np.zeros(n)
    t_x = np.zeros(n)
    now = np.zeros(n)
    alive = np.ones(n, dtype=bool)
    while alive.any():
        now = now + np.where(alive, rng.exponential(1.0, size=n) / np.maximum(lam, 1e-12), 0.0)
        bought = alive & (now <= t)
        x[bought] += 1
        t_x[bought] = now[bought]
        alive = bought & (rng.random(n) >= p)
    return x, np.floor(t_x), np.floor(t)  # whole days, as the lake records them
