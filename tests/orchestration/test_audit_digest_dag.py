"""The hourly audit_digest DAG under real Airflow 3 (`airflow dags test` on the embedded defaults): it signs the
closed hours of the audit log (its refusal to sign a broken chain is tested in tests/shironzi/audit)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from orchestration.cli import dags_test, task_states
from shironzi.settings import get_settings
from tests.orchestration._fixtures import a_closed_day

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_audit_digest_dag_signs_the_closed_hours(home: Path) -> None:
    from shironzi.audit.digests import digest_store
    from shironzi.audit.events import AuditEvent
    from shironzi.audit.log import get_audit_log, reset_audit_logs
    from shironzi.audit.verify import verify_chains

    yesterday = a_closed_day()
    log = get_audit_log()
    for hour in (3, 7, 7, 19):
        log.record(AuditEvent(action="read", actor="key:k1", tenant_id="t_a",
                              event_time=dt.datetime.combine(yesterday, dt.time(hour, 30), tzinfo=dt.UTC)))
    reset_audit_logs()  # flushed: the DAG's task runs in another process
    settings = get_settings()

    code, log_path = dags_test("audit_digest", settings=settings)
    states = {r["task_id"]: r["state"] for r in task_states("audit_digest", settings=settings)}
    assert code == 0 and states == {"write_digests": "success"}, log_path.read_text()[-3000:]
    written = digest_store().digest_paths()
    assert f"{yesterday:%Y/%m/%d}/day.json" in written and f"{yesterday:%Y/%m/%d}/hour-07.json" in written
    report = verify_chains()
    assert report.ok and report.digests is not None and report.digests.digests == len(written)
