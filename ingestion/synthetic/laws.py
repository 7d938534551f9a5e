"""The random laws of the simulation: Zipf-like tenant sizes, the churn log-odds from observable behaviour,
and the vectorised choice of event types by role."""

from collections.abc import Sequence

import numpy as np

from ingestion.contracts import get_contract
from ingestion.synthetic.profiles import PROFILES
from shironzi.errors import InvalidInputError


def tenant_sizes(
    n_tenants: int, customers: int, *, zipf_exponent: float, rng: np.random.Generator
) -> np.ndarray:
    """Customers per tenant from a Zipf-like law (a few huge tenants, many tiny); each gets at least one."""
    if customers < n_tenants:
        raise InvalidInputError(f"{customers} customers cannot be spread over {n_tenants} tenants")
    ranks = rng.permutation(n_tenants) + 1
    weights = ranks.astype(float) ** -zipf_exponent
    floor = min(5, customers // n_tenants)
    return rng.multinomial(customers - floor * n_tenants, weights / weights.sum()) + floor


def churn_logit(
    *,
    recency_days: np.ndarray,
    events_7d: np.ndarray,
    events_30d: np.ndarray,
    spend_90d: np.ndarray,
    friction_30d: np.ndarray,
    tenure_days: np.ndarray,
    frailty: np.ndarray,
    rate_scale: float,
    amount_scale: np.ndarray,
) -> np.ndarray:
    """Log-odds of churning tomorrow from behaviour up to today (counts normalised by the rate scale)."""
    return (
        -6.4
        + 0.07 * np.minimum(recency_days, 60)
        - 0.6 * np.log1p(events_30d / rate_scale)
        - 0.30 * np.log1p(events_7d / rate_scale)
        - 0.35 * np.log1p(spend_90d / (rate_scale * amount_scale))
        + 0.75 * np.minimum(friction_30d / rate_scale, 4.0)
        + 0.5 * (tenure_days < 30)
        + frailty
    )


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class EventTypeIndex:
    """Global integer codes for (industry, event type), with per-industry role tables."""

    def __init__(self, industries: Sequence[str]) -> None:
        self.names: list[str] = []
        self.industry_of: list[str] = []
        self.code: dict[tuple[str, str], int] = {}
        for industry in industries:
            for name in get_contract(industry).event_type_names:
                self.code[(industry, name)] = len(self.names)
                self.names.append(name)
                self.industry_of.append(industry)

    def role_table(self, industries: Sequence[str], role: str) -> tuple[np.ndarray, np.ndarray]:
        """(codes, cumulative shares) matrices, one row per industry, padded, for vectorised choice."""
        width = max(len(getattr(PROFILES[i], role)) for i in industries)
        codes = np.zeros((len(industries), width), dtype=np.int16)
        cum = np.ones((len(industries), width))
        for row, industry in enumerate(industries):
            shares = getattr(PROFILES[industry], role)
            p = np.asarray(list(shares.values()), dtype=float)
            codes[row, : len(p)] = [self.code[(industry, n)] for n in shares]
            codes[row, len(p) :] = codes[row, len(p) - 1]
            cum[row, : len(p)] = np.cumsum(p / p.sum())
        return codes, cum


def pick_codes(codes: np.ndarray, cum: np.ndarray, industry_rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    slot = (u[:, None] > cum[industry_rows]).sum(axis=1)
    slot = np.minimum(slot, codes.shape[1] - 1)
    return codes[industry_rows, slot]
