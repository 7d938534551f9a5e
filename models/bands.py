"""Risk bands shown to tenants: low < 0.3 <= medium < 0.6 <= high."""

from __future__ import annotations

from typing import Literal

RiskBand = Literal["low", "medium", "high"]
MEDIUM_FROM = 0.3
HIGH_FROM = 0.6
RISK_BANDS: tuple[RiskBand, ...] = ("low", "medium", "high")


def risk_band(probability: float) -> RiskBand:
    """The band of a calibrated churn probability."""
    if probability >= HIGH_FROM:
        return "high"
    if probability >= MEDIUM_FROM:
        return "medium"
    return "low"
