"""gdpr_erasure (triggered with params tenant_id + subject_id): erase one data subject everywhere, then verify
the signed receipt (signature and a fresh scan of the lake). Trigger it from the UI or
`airflow dags trigger gdpr_erasure -c '{"tenant_id": "...", "subject_id": "..."}'`."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import Param, dag, get_current_context, task

from orchestration import pipeline
from orchestration.dags._common import dag_kwargs, deterministic


@dag(
    schedule=None,
    params={
        "tenant_id": Param("", type="string", description="Tenant id of the data subject."),
        "subject_id": Param("", type="string", description="Customer id to erase."),
        "requested_by": Param("data-protection-officer", type="string", description="Who asked (audited)."),
    },
    **dag_kwargs("gdpr_erasure", within=timedelta(hours=24), tags=["compliance", "gdpr"], retries=2),
)
def gdpr_erasure() -> None:
    @task
    @deterministic
    def erase_subject() -> dict[str, Any]:
        params = get_current_context()["params"]
        return pipeline.erase_data_subject(
            params["tenant_id"], params["subject_id"], requested_by=params["requested_by"]
        )

    @task(retries=0)
    @deterministic
    def verify_receipt(receipt: dict[str, Any]) -> dict[str, Any]:
        return pipeline.verify_erasure(receipt["request_id"])

    verify_receipt(erase_subject())


gdpr_erasure()
