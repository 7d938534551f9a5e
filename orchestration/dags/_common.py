"""What every Shironzi DAG shares: default_args (owner, retries with exponential backoff, the on-failure audit
alert), the per-DAG deadline alert, the assets that chain the DAGs, and `deterministic` (bad input and failed
checks fail at once instead of retrying). DAG files import this and `orchestration.pipeline`, nothing heavy:
parsing stays well under a second per file.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar

from airflow.sdk import Asset
from airflow.sdk.definitions.callback import AsyncCallback
from airflow.sdk.definitions.deadline import DeadlineAlert, DeadlineReference

OWNER = "shironzi-data-platform"
START_DATE = datetime(2026, 1, 1, tzinfo=UTC)

# Data-aware scheduling: a DAG that updates a table emits its asset; the DAGs reading it run on the event.
BRONZE = Asset(name="shironzi_bronze_events", uri="shironzi://lake/bronze/events", group="shironzi")
GOLD = Asset(name="shironzi_gold", uri="shironzi://lake/gold", group="shironzi")
FEATURES = Asset(name="shironzi_features", uri="shironzi://lake/features", group="shironzi")
MODELS = Asset(name="shironzi_models", uri="shironzi://mlflow/models", group="shironzi")
PREDICTIONS = Asset(name="shironzi_predictions", uri="shironzi://lake/predictions", group="shironzi")


def on_task_failure(context: Any) -> None:
    """The on-failure callback: a durable `pipeline.task_failed` audit event for the failed task."""
    from orchestration.pipeline import record_task_failure

    ti = context["ti"]
    error = context.get("exception")
    record_task_failure(
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        run_id=ti.run_id,
        map_index=int(getattr(ti, "map_index", -1) or -1),
        try_number=getattr(ti, "try_number", None),
        error=f"{type(error).__name__}: {error}" if error is not None else "",
    )


async def on_deadline_missed(dag_id: str = "", interval: str = "", **_: Any) -> None:
    """The deadline (SLA) alert, run by the triggerer: a durable `pipeline.deadline_missed` audit event."""
    from orchestration.pipeline import record_deadline_missed

    await asyncio.to_thread(record_deadline_missed, dag_id=dag_id, deadline=interval)


def default_args(*, retries: int = 3) -> dict[str, Any]:
    """Owner, retries with exponential backoff (1 min, 2 min, 4 min ... capped at 30 min), failure alert."""
    return {
        "owner": OWNER,
        "retries": retries,
        "retry_delay": timedelta(minutes=1),
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": timedelta(minutes=30),
        "on_failure_callback": on_task_failure,
    }


def deadline(dag_id: str, within: timedelta) -> DeadlineAlert:
    """Alert when a run is not finished `within` after it was queued."""
    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=within,
        callback=AsyncCallback(on_deadline_missed, kwargs={"dag_id": dag_id, "interval": str(within)}),
    )


def dag_kwargs(dag_id: str, *, within: timedelta, tags: list[str], retries: int = 3) -> dict[str, Any]:
    """The arguments every Shironzi `@dag` gets."""
    return {
        "dag_id": dag_id,
        "start_date": START_DATE,
        "catchup": False,
        "max_active_runs": 1,
        "tags": ["shironzi", *tags],
        "default_args": default_args(retries=retries),
        "deadline": deadline(dag_id, within),
        "doc_md": None,
    }


F = TypeVar("F", bound=Callable[..., Any])


def deterministic(fn: F) -> F:
    """Fail the task at once, without retries, on errors a retry cannot fix (bad input, failed data-quality or
    integrity checks, failing dbt tests, too little data to train); other errors (a busy lake, an unreachable
    service) keep their retries."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from airflow.sdk.exceptions import AirflowFailException

        from shironzi import errors

        deterministic_errors = tuple(
            getattr(errors, name)
            for name in ("DataQualityError", "IntegrityCheckError", "InvalidInputError", "TransformationError",
                         "ModelTrainingError")
            if hasattr(errors, name)
        )
        try:
            return fn(*args, **kwargs)
        except deterministic_errors as exc:
            raise AirflowFailException(f"{exc.code}: {exc.message}") from exc

    return wrapper  # type: ignore[return-value]


def run_date(context: Any) -> date:
    """The date a run is for: its logical date, or (asset-triggered runs have none) when it was due."""
    when = context.get("logical_date") or context["dag_run"].run_after
    return when.date()
