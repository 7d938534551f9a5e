"""train_models (daily check, weekly training): train the churn and trend challengers, run each promotion gate
and record the decision (the registry audits it; the summary is the gate task's XCom).

Each model trains on Sundays, on a manual run, when it has no champion yet, and (churn) on any day a scoring
run flagged the champion for drift (PSI > 0.2 on a top-10 feature); otherwise its branch is skipped."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from orchestration import pipeline
from orchestration.dags._common import MODELS, dag_kwargs, deterministic


def _due(kind: str) -> bool:
    from airflow.sdk import get_current_context

    context = get_current_context()
    run = context["dag_run"]
    day = (context.get("logical_date") or run.run_after).date()
    run_type = str(getattr(run.run_type, "value", run.run_type)).lower()
    return pipeline.retrain_due(kind, day, manual=run_type == "manual")


@dag(schedule="0 2 * * *", **dag_kwargs("train_models", within=timedelta(hours=6), tags=["models", "mlflow"]))
def train_models() -> None:
    @task.short_circuit
    def churn_due() -> bool:
        return _due("churn")

    @task.short_circuit
    def trend_due() -> bool:
        return _due("trend")

    @task
    @deterministic
    def train_churn() -> dict[str, Any]:
        return pipeline.train_challenger("churn")

    @task
    @deterministic
    def train_trend() -> dict[str, Any]:
        return pipeline.train_challenger("trend")

    @task(outlets=[MODELS])
    def promote_churn(challenger: dict[str, Any]) -> dict[str, Any]:
        return pipeline.promotion_gate("shironzi-churn")

    @task(outlets=[MODELS])
    def promote_trend(challenger: dict[str, Any]) -> dict[str, Any]:
        return pipeline.promotion_gate("shironzi-trend")

    churn = train_churn()
    trend = train_trend()
    churn_due() >> churn
    trend_due() >> trend
    promote_churn(churn)
    promote_trend(trend)


train_models()
