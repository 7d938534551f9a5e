"""lake_maintenance (nightly): expire the tenants' old data exports (their files deleted), enforce the tenants'
retention policies (one delete commit per table), then
optimize with z-order by tenant_id, checkpoint, and vacuum with the safe 7-day retention, mapped over batches
of the lake's Delta tables. A retention run that would delete more than the threshold share of a tenant's
rows fails with that message and deletes nothing; trigger with `-c '{"confirm_retention": true}'` to go on."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from orchestration import pipeline
from orchestration.dags._common import dag_kwargs

TABLES_PER_TASK = 25


@dag(
    schedule="0 1 * * *",
    params={
        "confirm_retention": Param(
            False, type="boolean", description="Delete even beyond the retention threshold share of a tenant."
        ),
    },
    **dag_kwargs("lake_maintenance", within=timedelta(hours=4), tags=["lake", "maintenance"]),
)
def lake_maintenance() -> None:
    @task(retries=0)
    def enforce_retention() -> dict[str, Any]:
        params = get_current_context()["params"]
        return pipeline.enforce_retention_policies(confirm=bool(params.get("confirm_retention", False)))

    @task
    def expire_exports() -> dict[str, Any]:
        return pipeline.expire_data_exports()

    @task
    def table_batches() -> list[list[str]]:
        tables = pipeline.maintained_tables()
        return [tables[i : i + TABLES_PER_TASK] for i in range(0, len(tables), TABLES_PER_TASK)]

    @task(max_active_tis_per_dagrun=2)
    def maintain(uris: list[str]) -> list[dict[str, Any]]:
        return pipeline.maintain_tables(uris)

    expire_exports() >> enforce_retention() >> maintain.expand(uris=table_batches())


lake_maintenance()
