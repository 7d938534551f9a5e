"""alerts_webhooks (every minute): evaluate the alert rules (new and resolved alerts are delivered, open ones
de-duplicated by fingerprint), then attempt the webhook deliveries that are due (retries with backoff; the
ones past the retry window go to the dead letters). Both read their state from the lake, so a missed or
failed run loses nothing: the next one catches up."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from orchestration import pipeline
from orchestration.dags._common import dag_kwargs


@dag(schedule=timedelta(minutes=1), **dag_kwargs("alerts_webhooks", within=timedelta(minutes=10),
                                                  tags=["alerts", "webhooks"]))
def alerts_webhooks() -> None:
    @task
    def evaluate_alerts() -> dict[str, Any]:
        return pipeline.evaluate_alerts()

    @task
    def dispatch_webhooks() -> dict[str, Any]:
        return pipeline.dispatch_webhooks()

    evaluate_alerts() >> dispatch_webhooks()


alerts_webhooks()
