"""The promotion gate bound to each model's holdout evaluator: the one place that knows every trainer.

    promote_if_better("shironzi-churn")       # champion <- challenger when it beats the champion

The gate itself (and rollback) lives in `models.promotion`, the MLflow plumbing in `models.tracking`.
"""

from __future__ import annotations

from collections.abc import Mapping

from models.churn.train import evaluate_version_on_holdout as evaluate_churn
from models.common import CHURN_MODEL, TREND_MODEL
from models.promotion import Evaluator, PromotionDecision
from models.promotion import promote_if_better as promote_with
from models.trend.train import evaluate_version_on_holdout as evaluate_trend
from shironzi.settings import Settings

EVALUATORS: Mapping[str, Evaluator] = {CHURN_MODEL: evaluate_churn, TREND_MODEL: evaluate_trend}


def promote_if_better(name: str, *, margin: float | None = None, settings: Settings | None = None) -> PromotionDecision:
    """`models.promotion.promote_if_better` with the churn and trend holdout evaluators."""
    return promote_with(name, evaluators=EVALUATORS, margin=margin, settings=settings)
