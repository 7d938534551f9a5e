"""stream_supervisor (every 5 minutes): restart dead stream ingestors, then fail (and alert) when one lags more
than SHIRONZI_STREAM_MAX_LAG records behind its topic."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from orchestration import pipeline
from orchestration.dags._common import dag_kwargs, deterministic


@dag(
    schedule="*/5 * * * *",
    **dag_kwargs("stream_supervisor", within=timedelta(minutes=4), tags=["ingestion", "stream"], retries=1),
)
def stream_supervisor() -> None:
    @task
    def restart_dead_ingestors() -> dict[str, Any]:
        return pipeline.supervise_streams()

    @task(retries=0)
    @deterministic
    def check_lag(report: dict[str, Any]) -> dict[str, Any]:
        return pipeline.check_stream_health(report)

    check_lag(restart_dead_ingestors())


stream_supervisor()
