"""Several writers on one audit table (API workers) flushing in turn: each picks up the others' tails by
reading only the newest files, and the chains stay whole; a rewritten day falls back to a full read."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from shironzi.audit.events import AuditEvent
from shironzi.audit.log import AuditLog, audit_table_uri, read_audit_events
from shironzi.audit.verify import verify_chains
from shironzi.lake.delta import delete


def _writer() -> AuditLog:
    from shironzi.settings import get_settings

    settings = get_settings()
    return AuditLog(settings.resolved_lake_uri, home=settings.home, flush_events=10_000, flush_seconds=60)


def _record(log: AuditLog, name: str, count: int) -> None:
    for i in range(count):
        log.record(AuditEvent(action="api_read", actor=name, actor_kind="key", request_id=f"{name}-{i}"))


def test_interleaved_writers_extend_one_chain_reading_only_new_files(
    audit_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shironzi.audit.log as audit_log

    writers = [_writer(), _writer()]
    reads: list[list[tuple[str, str, object]]] = []  # the filters of each tail read
    real_read = audit_log.read_arrow

    def counting_read(uri: str, **kwargs: object) -> object:
        if "hash" in (kwargs.get("columns") or []):  # type: ignore[operator]
            reads.append(list(kwargs.get("filters") or []))  # type: ignore[call-overload]
        return real_read(uri, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(audit_log, "read_arrow", counting_read)  # the name the log reads through
    for round_ in range(4):
        for n, log in enumerate(writers):
            _record(log, f"w{n}r{round_}", 3)
            assert log.flush() == 3
    table = read_audit_events(flush=False)
    assert sorted(table.column("seq").to_pylist()) == list(range(24))
    report = verify_chains()
    assert report.ok, report.as_dict()
    # Only the second writer's first flush reads the day in full; every later catch-up starts at the
    # writer's cached seq (so min/max stats skip the older files).
    full = [f for f in reads if not any(c[0] == "seq" for c in f)]
    incremental = [next(c[2] for c in f if c[0] == "seq") for f in reads if f not in full]
    assert len(full) == 1 and len(incremental) == 6
    assert incremental == sorted(incremental) and incremental[-1] >= 15
    for log in writers:
        log.close()


def test_a_rewritten_day_is_read_again_in_full(audit_home: Path) -> None:
    first, second = _writer(), _writer()
    _record(first, "a", 4)
    first.flush()
    today = dt.datetime.now(dt.UTC).date()
    delete(audit_table_uri(), [("event_date", "=", today)])  # e.g. the day expired under retention
    _record(second, "b", 2)
    second.flush()
    _record(first, "a2", 2)  # its cached tail (seq 3) is gone: it must chain after b's events, not after 3
    first.flush()
    table = read_audit_events(flush=False)
    assert sorted(table.column("seq").to_pylist()) == [0, 1, 2, 3]
    report = verify_chains()
    assert report.broken == [], report.as_dict()  # the chain is whole (the DELETE itself is still reported)
    assert [v for v in report.log_violations if "DELETE" not in v] == []
    first.close()
    second.close()
