"""placement_policy (daily): plan the placement policy's tenant moves (promotions to dedicated tables,
demotions to the pool; `shironzi placement plan`), then carry out at most `max_moves` of them online while
ingestion goes on (`shironzi placement apply`). The moves beyond the cap wait for the next run."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from orchestration import pipeline
from orchestration.dags._common import dag_kwargs, deterministic, run_date


@dag(
    schedule="30 2 * * *",
    params={
        "max_moves": Param(None, type=["null", "integer"], minimum=0,
                           description="At most this many moves this run (default: the policy's cap)."),
    },
    **dag_kwargs("placement_policy", within=timedelta(hours=3), tags=["tenancy", "placement"], retries=1),
)
def placement_policy() -> None:
    @task
    @deterministic
    def plan() -> list[dict[str, Any]]:
        return pipeline.plan_placement_moves(run_date(get_current_context()))

    @task(retries=0)
    @deterministic
    def apply(planned: list[dict[str, Any]]) -> dict[str, Any]:
        context = get_current_context()
        cap = context["params"].get("max_moves")
        if not planned:
            return {"moved": [], "failed": [], "deferred": [], "seconds": 0.0}
        return pipeline.apply_placement_moves(run_date(context), max_moves=None if cap is None else int(cap))

    apply(plan())


placement_policy()
