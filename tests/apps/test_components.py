"""Formatting helpers of the dashboard tiles."""

from __future__ import annotations

import pytest

from apps.components import money


@pytest.mark.parametrize(
    ("value", "text"),
    [(950.25, "950.25"), (5_000, "5,000.00"), (48_200, "48.20 k"), (21_779_030.5, "21.78 M"),
     (3.1e9, "3.10 B"), (-2e6, "-2.00 M")],
)
def test_money_fits_a_tile(value: float, text: str) -> None:
    assert money(value) == text
