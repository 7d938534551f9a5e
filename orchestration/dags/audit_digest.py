"""audit_digest (hourly, a quarter past): sign a digest for every closed audit hour and day not digested yet
(`shironzi audit digest`). It refuses to sign a day whose hash chain does not verify. Idempotent and resumable:
a missed run is caught up by the next one, and a re-run writes nothing. The signing key stays in the keystore or
Vault; the digests go to SHIRONZI_AUDIT_DIGEST_URI, apart from the lake."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.sdk import dag, task

from orchestration.dags._common import dag_kwargs, deterministic


@dag(
    schedule="15 * * * *",
    **dag_kwargs("audit_digest", within=timedelta(minutes=45), tags=["compliance", "audit"]),
)
def audit_digest() -> None:
    @task
    @deterministic
    def write_digests() -> dict[str, Any]:
        from shironzi.audit.digests import write_digests as sign_closed_hours

        return sign_closed_hours().as_dict()

    write_digests()


audit_digest()
