"""train_models (weekly): train the churn and trend challengers, run each promotion gate and record the
decision (the registry audits it; the summary is the gate task's XCom)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from orchestration import pipeline
from orchestration.dags._common import MODELS, dag_kwargs, deterministic


@dag(schedule="0 2 * * 0", **dag_kwargs("train_models", within=timedelta(hours=6), tags=["models", "mlflow"]))
def train_models() -> None:
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

    promote_churn(train_churn())
    promote_trend(train_trend())


train_models()
