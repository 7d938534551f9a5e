"""score_batch (daily at 03:30 UTC, and when new features land): churn scores for the tenants with
churn_prediction on, mapped over chunks of tenants packed by their customers to score (SHIRONZI_SCORE_CHUNK_ROWS
per task, at most SHIRONZI_SCORE_CHUNK_TENANTS tenants), one mapped task per
plan in that plan's pool with its priority weight (`orchestration.pools`), and the KPI forecasts for
trend_forecast. Re-running a date replaces that date's scores."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, get_current_context, task

from orchestration import pipeline
from orchestration.dags._common import FEATURES, PREDICTIONS, dag_kwargs, run_date
from orchestration.pools import PLANS, plan_task


@dag(
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("30 3 * * *", timezone="UTC"), assets=[FEATURES]),
    **dag_kwargs("score_batch", within=timedelta(hours=3), tags=["models", "predictions"]),
)
def score_batch() -> None:
    @task
    def tenant_chunks(plan: str) -> list[list[str]]:
        return pipeline.tenant_chunks(plan=plan, score_date=run_date(get_current_context()))

    @task(max_active_tis_per_dagrun=4)
    def score_chunk(tenant_ids: list[str]) -> dict[str, Any]:
        return pipeline.score_tenants(tenant_ids, run_date(get_current_context()))

    @task(outlets=[PREDICTIONS], trigger_rule="none_failed")  # a plan without scoring tenants maps to nothing
    def publish_scores(free: list[dict[str, Any]], standard: list[dict[str, Any]],
                       enterprise: list[dict[str, Any]]) -> dict[str, Any]:
        results = [*free, *standard, *enterprise]
        return {"chunks": len(results), "rows": sum(r["rows"] for r in results)}

    @task(outlets=[PREDICTIONS])
    def write_forecasts() -> dict[str, Any]:
        return pipeline.write_trend_forecasts(run_date(get_current_context()))

    scored = {
        plan: score_chunk.override(task_id=f"score_chunk_{plan}", **plan_task(plan)).expand(
            tenant_ids=tenant_chunks.override(task_id=f"tenant_chunks_{plan}")(plan))
        for plan in PLANS
    }
    publish_scores(**scored)
    write_forecasts()


score_batch()
