"""features_materialize (on new gold data): the offline feature pipelines on Spark, then the online store; the
features asset triggers score_batch."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from orchestration import pipeline
from orchestration.dags._common import FEATURES, GOLD, dag_kwargs


@dag(schedule=[GOLD], **dag_kwargs("features_materialize", within=timedelta(hours=2), tags=["features", "spark"]))
def features_materialize() -> None:
    @task
    def build_offline_features() -> dict[str, Any]:
        return pipeline.build_offline_features()

    @task(outlets=[FEATURES])
    def materialize_online(offline: dict[str, Any]) -> dict[str, Any]:
        return {"offline": offline, "online": pipeline.materialize_online()}

    materialize_online(build_offline_features())


features_materialize()
