"""Risk bands shown to tenants: low < medium_from <= medium < high_from <= high.

A trained model carries each tenant's thresholds (`band_thresholds` over the calibrated probabilities of the
tenant's customers on the validation dates): about half of a tenant's customers are low, a third medium and
the riskiest sixth high, so the bands rank customers usefully even where most of them are likely to leave
(a sparse-buyer shop whose customers mostly never come back). Ties stay together: when a plateau of equal
probabilities straddles a threshold, the band holds more than its share, because the data cannot tell those
customers apart. Without thresholds (older models) the fixed ones apply: low < 0.3 <= medium < 0.6 <= high.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

RiskBand = Literal["low", "medium", "high"]
MEDIUM_FROM = 0.3
HIGH_FROM = 0.6
RISK_BANDS: tuple[RiskBand, ...] = ("low", "medium", "high")
BAND_SHARES = (0.5, 0.85)  # target cumulative shares: low 50 %, medium 35 %, high 15 %


def risk_band(probability: float, thresholds: Sequence[float] | None = None) -> RiskBand:
    """The band of a calibrated churn probability (with a tenant's `(medium_from, high_from)` when given)."""
    medium_from, high_from = thresholds if thresholds is not None else (MEDIUM_FROM, HIGH_FROM)
    if probability >= high_from:
        return "high"
    if probability >= medium_from:
        return "medium"
    return "low"


def band_thresholds(probabilities: np.ndarray) -> tuple[float, float]:
    """(medium_from, high_from) for one tenant: the probabilities at the BAND_SHARES quantiles of its customers
    (customers tied at a threshold all go to the higher band)."""
    values = np.sort(np.asarray(probabilities, dtype=np.float64))
    values = values[np.isfinite(values)]
    if values.size == 0:
        return MEDIUM_FROM, HIGH_FROM
    # rounded as the served probabilities are (6 decimals), so a customer on a threshold's plateau stays above it
    medium_from, high_from = (round(float(values[min(int(share * values.size), values.size - 1)]), 6)
                              for share in BAND_SHARES)
    return medium_from, high_from


def band_shares(probabilities: np.ndarray, thresholds: Sequence[float] | None = None) -> dict[str, float]:
    """The share of customers in each band."""
    bands = [risk_band(float(p), thresholds) for p in probabilities]
    total = max(len(bands), 1)
    return {band: bands.count(band) / total for band in RISK_BANDS}
