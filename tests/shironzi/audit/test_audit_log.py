"""The audit log: batched writes, durable admin/denied events, hash chains and tamper detection."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from shironzi.audit.events import AuditEvent
from shironzi.audit.log import audit_table_uri, get_audit_log, read_audit_events
from shironzi.audit.verify import verify_chains
from shironzi.lake.delta import overwrite, read_arrow, table_exists
from shironzi.tenancy.context import TenantContext

REPO = Path(__file__).resolve().parents[3]


def _event(i: int, *, when: dt.datetime | None = None, outcome: str = "allowed") -> AuditEvent:
    return AuditEvent(
        action="read",
        actor=f"key:k{i % 3}",
        actor_kind="key",
        tenant_id="t_a",
        resource="eu-west/gold/fct_orders",
        purpose="api",
        outcome=outcome,  # type: ignore[arg-type]
        request_id=f"r{i}",
        details={"i": i},
        event_time=when or dt.datetime.now(dt.UTC),
    )


def test_records_are_buffered_then_flushed_into_one_commit(audit_home: Path) -> None:
    log = get_audit_log()
    log.flush_seconds = 60  # only an explicit flush or a full buffer writes
    for i in range(5):
        log.record(_event(i))
    assert log.pending() == 5
    assert not table_exists(log.uri)
    assert log.flush() == 5
    table = read_audit_events(flush=False)
    assert sorted(table.column("request_id").to_pylist()) == [f"r{i}" for i in range(5)]
    assert sorted(table.column("seq").to_pylist()) == [0, 1, 2, 3, 4]
    assert verify_chains().ok


def test_background_thread_flushes_within_the_interval(audit_home: Path) -> None:
    log = get_audit_log()
    log.record(_event(1))
    deadline = time.monotonic() + 10
    while log.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.pending() == 0
    assert read_audit_events(flush=False).num_rows == 1


def test_full_buffer_triggers_a_flush(audit_home: Path) -> None:
    log = get_audit_log()
    log.flush_seconds, log.flush_events = 60, 3
    for i in range(3):
        log.record(_event(i))
    deadline = time.monotonic() + 10
    while log.pending() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert read_audit_events(flush=False).num_rows == 3


def test_denied_and_admin_events_are_written_before_record_returns(audit_home: Path) -> None:
    log = get_audit_log()
    log.flush_seconds = 60
    log.record(_event(1))  # buffered
    log.record(_event(2, outcome="denied"))  # flushes both, in order
    table = read_audit_events(flush=False)
    assert table.column("request_id").to_pylist() == ["r1", "r2"]
    admin = TenantContext.admin(actor="ops@example.com", purpose="support")
    log.record(AuditEvent.from_context(admin, "tenant_suspended", tenant_id="t_b"))
    assert read_audit_events(flush=False).num_rows == 3
    assert read_audit_events(flush=False).column("is_admin").to_pylist()[-1] is True


@pytest.mark.slow
def test_admin_event_survives_sigkill(audit_home: Path) -> None:
    script = textwrap.dedent(
        """
        import os, signal
        from shironzi.audit.log import get_audit_log
        from shironzi.audit.events import AuditEvent
        log = get_audit_log()
        log.flush_seconds = 3600
        log.record(AuditEvent(action="buffered_read", actor="svc"))
        log.record(AuditEvent(action="tenant_offboarded", actor="ops", is_admin=True, tenant_id="t_x"))
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL
    actions = read_arrow(audit_table_uri()).column("action").to_pylist()
    assert "tenant_offboarded" in actions
    assert verify_chains().ok


@pytest.mark.slow
def test_chains_continue_across_writer_processes(audit_home: Path) -> None:
    script = textwrap.dedent(
        """
        import sys
        from shironzi.audit.log import get_audit_log
        from shironzi.audit.events import AuditEvent
        log = get_audit_log()
        for batch in range(4):
            for i in range(5):
                rid = f"{sys.argv[1]}-{batch}-{i}"
                log.record(AuditEvent(action="read", actor=sys.argv[1], request_id=rid))
            log.flush()
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen([sys.executable, "-c", script, name], env=env, cwd=REPO) for name in ("w1", "w2")
    ]
    assert [p.wait(timeout=180) for p in procs] == [0, 0]
    get_audit_log().record(_event(99))
    table = read_audit_events()
    assert table.num_rows == 41
    assert sorted(table.column("seq").to_pylist()) == list(range(41))
    report = verify_chains()
    assert report.ok, report.as_dict()


def _write_days(log_count: int = 6) -> list[dt.date]:
    log = get_audit_log()
    base = dt.datetime(2024, 3, 1, 10, tzinfo=dt.UTC)
    for i in range(log_count):
        log.record(_event(i, when=base + dt.timedelta(days=i % 2, minutes=i)))
    log.flush()
    return [base.date(), (base + dt.timedelta(days=1)).date()]


def _rewrite_day(day: dt.date, change: object) -> None:
    uri = audit_table_uri()
    rows = read_arrow(uri, filters=[("event_date", "=", day)])
    rows = change(rows.sort_by("seq"))  # type: ignore[operator]
    overwrite(uri, rows, partition_by="event_date", predicate=[("event_date", "=", day)])


def test_verifier_catches_an_edited_row(audit_home: Path) -> None:
    first, second = _write_days()
    assert verify_chains().ok

    def edit(rows: pa.Table) -> pa.Table:
        outcomes = rows.column("outcome").to_pylist()
        outcomes[1] = "denied"
        return rows.set_column(rows.schema.get_field_index("outcome"), "outcome", pa.array(outcomes))

    _rewrite_day(second, edit)
    report = verify_chains()
    assert not report.ok
    (broken,) = report.broken
    assert (broken.day, broken.seq) == (second, 1)
    assert "hash" in broken.reason and broken.expected != broken.found


def test_verifier_catches_a_deleted_row(audit_home: Path) -> None:
    first, _ = _write_days()
    _rewrite_day(first, lambda rows: rows.filter(pc.not_equal(rows.column("seq"), 1)))
    (broken,) = verify_chains().broken
    assert (broken.day, broken.seq, broken.found) == (first, 1, "seq 2")


def test_verifier_catches_reordered_and_inserted_events(audit_home: Path) -> None:
    first, second = _write_days()

    def swap(rows: pa.Table) -> pa.Table:
        seqs = rows.column("seq").to_pylist()
        seqs[0], seqs[1] = seqs[1], seqs[0]
        return rows.set_column(rows.schema.get_field_index("seq"), "seq", pa.array(seqs, pa.int64()))

    _rewrite_day(first, swap)

    def insert(rows: pa.Table) -> pa.Table:
        forged = rows.slice(0, 1).to_pylist()[0]
        forged["event_id"], forged["action"] = "forged", "delete_everything"
        forged["seq"] = 1
        return pa.concat_tables([rows, pa.Table.from_pylist([forged], schema=rows.schema)])

    _rewrite_day(second, insert)
    report = verify_chains()
    assert {b.day for b in report.broken} == {first, second}
    by_day = {b.day: b for b in report.broken}
    assert by_day[first].seq == 0
    assert by_day[second].seq <= 2


def test_verifier_catches_a_deleted_last_event_through_the_delta_log(audit_home: Path) -> None:
    from shironzi.lake.delta import delete

    first, _ = _write_days()
    last = max(r["seq"] for r in read_arrow(audit_table_uri(), filters=[("event_date", "=", first)]).to_pylist())
    delete(audit_table_uri(), f"event_date = '{first.isoformat()}' AND seq = {last}")
    report = verify_chains()
    assert report.broken == []  # the chain itself still links: only the log shows the removal
    assert not report.ok and any("DELETE" in v for v in report.log_violations)
