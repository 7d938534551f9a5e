"""dbt_build (on new bronze data): the seeds, then one task per dbt model, generated from the dbt manifest
(dbt_models.json, refreshed by `shironzi airflow dbt-manifest`) and wired by the models' dependencies, so one
failure is retried alone; the dedicated tenants' own tables are built whole, in batches of
SHIRONZI_DBT_DEDICATED_BATCH_TENANTS, one dynamically mapped task per batch (dedicated_batch), several at a time,
in the dedicated pool with its priority weight (`orchestration.pools`);
the build state is recorded and the gold asset (which triggers features_materialize) updated when all built."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from orchestration import pipeline
from orchestration.dags._common import BRONZE, GOLD, dag_kwargs, deterministic
from orchestration.pools import dedicated_task


@dag(schedule=[BRONZE], **dag_kwargs("dbt_build", within=timedelta(hours=1), tags=["dbt", "silver", "gold"]))
def dbt_build() -> None:
    @task
    def plan() -> dict[str, Any]:
        return pipeline.plan_dbt_build()

    @task
    @deterministic
    def build_model(model: str, plan: dict[str, Any]) -> dict[str, Any]:
        return pipeline.build_dbt_model(model, plan)

    @task
    def dedicated_batches(plan: dict[str, Any]) -> list[list[list[str]]]:
        return pipeline.dedicated_batches(plan)

    @task(max_active_tis_per_dagrun=4, **dedicated_task())
    @deterministic
    def dedicated_batch(batch: list[list[str]], plan: dict[str, Any]) -> dict[str, Any]:
        return pipeline.build_dedicated_batch(batch, plan.get("target"))

    @task(outlets=[GOLD])
    def publish_gold(plan: dict[str, Any]) -> dict[str, Any]:
        return pipeline.finish_dbt_build(plan)

    planned = plan()
    dedicated = dedicated_batch.partial(plan=planned).expand(batch=dedicated_batches(planned))
    seeds = build_model.override(task_id="seeds")(pipeline.DBT_SEEDS, planned)
    graph = pipeline.load_dbt_model_graph()
    tasks = {model: build_model.override(task_id=model)(model, planned) for model in sorted(graph)}
    for model, parents in graph.items():
        for parent in parents:
            tasks[parent] >> tasks[model]
        if not parents:
            seeds >> tasks[model]
    leaves = [tasks[m] for m in graph if not any(m in parents for parents in graph.values())]
    [*leaves, dedicated] >> publish_gold(planned)


dbt_build()
