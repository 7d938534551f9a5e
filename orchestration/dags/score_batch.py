"""score_batch (daily at 03:30 UTC, and when new features land): churn scores for the tenants with
churn_prediction on, mapped over chunks of tenants (SHIRONZI_SCORE_CHUNK_TENANTS per task), and the KPI
forecasts for trend_forecast. Re-running a date replaces that date's scores."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import AssetOrTimeSchedule, CronTriggerTimetable, dag, get_current_context, task

from orchestration import pipeline
from orchestration.dags._common import FEATURES, PREDICTIONS, dag_kwargs, run_date


@dag(
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("30 3 * * *", timezone="UTC"), assets=[FEATURES]),
    **dag_kwargs("score_batch", within=timedelta(hours=3), tags=["models", "predictions"]),
)
def score_batch() -> None:
    @task
    def tenant_chunks() -> list[list[str]]:
        return pipeline.tenant_chunks()

    @task(max_active_tis_per_dagrun=4)
    def score_chunk(tenant_ids: list[str]) -> dict[str, Any]:
        return pipeline.score_tenants(tenant_ids, run_date(get_current_context()))

    @task(outlets=[PREDICTIONS])
    def publish_scores(results: list[dict[str, Any]]) -> dict[str, Any]:
        return {"chunks": len(results), "rows": sum(r["rows"] for r in results)}

    @task(outlets=[PREDICTIONS])
    def write_forecasts() -> dict[str, Any]:
        return pipeline.write_trend_forecasts(run_date(get_current_context()))

    publish_scores(score_chunk.expand(tenant_ids=tenant_chunks()))
    write_forecasts()


score_batch()
