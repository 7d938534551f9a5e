"""One palette and the industry-aware vocabulary every dashboard page uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

PALETTE: tuple[str, ...] = ("#2563eb", "#f97316", "#10b981", "#a855f7", "#ef4444", "#0ea5e9", "#eab308", "#64748b")
"""Categorical colours, in order: primary series first."""
ACTUAL_COLOR = PALETTE[0]
FORECAST_COLOR = PALETTE[1]
BAND_COLORS: dict[str, str] = {"low": "#10b981", "medium": "#eab308", "high": "#ef4444"}
HEATMAP_SCHEME: Literal["blues"] = "blues"


@dataclass(frozen=True)
class Vocabulary:
    """How one industry names its customers, their core action and its money."""

    customer: str
    customers: str
    core_action: str
    revenue: str


VOCABULARY: dict[str, Vocabulary] = {
    "ecommerce": Vocabulary("customer", "customers", "orders", "revenue"),
    "healthcare": Vocabulary("patient", "patients", "appointments", "billed revenue"),
    "education": Vocabulary("student", "students", "lessons", "tuition revenue"),
}
DEFAULT_VOCABULARY = Vocabulary("customer", "customers", "core actions", "revenue")


def vocabulary(industry: str | None) -> Vocabulary:
    return VOCABULARY.get(industry or "", DEFAULT_VOCABULARY)


def altair_theme() -> dict[str, Any]:
    """A readable, consistent Altair config (category range = PALETTE)."""
    return {
        "config": {
            "range": {"category": list(PALETTE)},
            "axis": {"labelFontSize": 12, "titleFontSize": 13, "gridColor": "#e5e7eb"},
            "legend": {"labelFontSize": 12, "titleFontSize": 12, "orient": "bottom"},
            "view": {"stroke": None},
        }
    }


def register_theme() -> None:
    """Enable the Shironzi Altair theme (idempotent)."""
    import altair as alt

    @alt.theme.register("shironzi", enable=True)
    def _shironzi() -> alt.theme.ThemeConfig:
        return altair_theme()  # type: ignore[return-value]


NO_DATA_HINT = "No data yet: run `shironzi demo` (or the pipeline stages) to fill it."
