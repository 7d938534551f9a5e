"""ingest_batch (hourly): land new landing files and SQL increments in bronze, run the data-quality checkpoint
on what landed, and only then update the bronze asset (which triggers dbt_build)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from orchestration import pipeline
from orchestration.dags._common import BRONZE, dag_kwargs, deterministic


@dag(schedule="@hourly", **dag_kwargs("ingest_batch", within=timedelta(minutes=45), tags=["ingestion", "bronze"]))
def ingest_batch() -> None:
    @task
    @deterministic
    def land_files() -> dict[str, Any]:
        return pipeline.land_new_files()

    @task
    @deterministic
    def land_sql_increments() -> dict[str, Any]:
        return pipeline.land_sql_increments()

    @task(retries=0)
    @deterministic
    def quality_checkpoint(files: dict[str, Any], sql: dict[str, Any]) -> dict[str, Any]:
        return pipeline.quality_checkpoint(files, sql)

    @task.short_circuit
    def anything_landed(files: dict[str, Any], sql: dict[str, Any]) -> bool:
        return files["landed"] + sql["landed"] > 0

    @task(outlets=[BRONZE])
    def publish_bronze(check: dict[str, Any]) -> dict[str, Any]:
        return check

    files, sql = land_files(), land_sql_increments()
    check = quality_checkpoint(files, sql)
    anything_landed(files, sql) >> publish_bronze(check)


ingest_batch()
