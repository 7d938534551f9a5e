"""lake_maintenance (nightly): optimize with z-order by tenant_id, checkpoint, and vacuum with the safe 7-day
retention, mapped over batches of the lake's Delta tables."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from orchestration import pipeline
from orchestration.dags._common import dag_kwargs

TABLES_PER_TASK = 25


@dag(schedule="0 1 * * *", **dag_kwargs("lake_maintenance", within=timedelta(hours=4), tags=["lake", "maintenance"]))
def lake_maintenance() -> None:
    @task
    def table_batches() -> list[list[str]]:
        tables = pipeline.maintained_tables()
        return [tables[i : i + TABLES_PER_TASK] for i in range(0, len(tables), TABLES_PER_TASK)]

    @task(max_active_tis_per_dagrun=2)
    def maintain(uris: list[str]) -> list[dict[str, Any]]:
        return pipeline.maintain_tables(uris)

    maintain.expand(uris=table_batches())


lake_maintenance()
