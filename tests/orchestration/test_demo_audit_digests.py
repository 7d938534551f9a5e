"""The demo's last stage before the evidence pack seals the audit log once (what the hourly audit_digest DAG
does) and verifies it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from orchestration.demo import STAGES, DemoState, generate_evidence_pack, seal_audit_log
from shironzi.audit.events import AuditEvent
from shironzi.audit.log import get_audit_log, reset_audit_logs
from shironzi.settings import get_settings
from tests.orchestration._fixtures import a_closed_day


def test_demo_ends_by_sealing_the_closed_audit_hours(home: Path) -> None:
    # sealed last but for the evidence pack, which then reports the digests' verification
    assert STAGES[-2:] == [("audit digests", seal_audit_log), ("soc2 evidence pack", generate_evidence_pack)]
    yesterday = a_closed_day()
    log = get_audit_log()
    for hour in (9, 9, 14):
        log.record(AuditEvent(action="read", actor="demo",
                              event_time=dt.datetime.combine(yesterday, dt.time(hour), tzinfo=dt.UTC)))
    log.record(AuditEvent(action="read", actor="demo"))  # now: its hour is still open
    try:
        state = DemoState(settings=get_settings(), seed=1, days=14, customers=50)
        outcome = seal_audit_log(state)
    finally:
        reset_audit_logs()
    assert outcome.rows >= 3 and "chains + digests verified" in outcome.note, outcome.note
    assert "1 newer events pending" in outcome.note  # the event of the open hour
    assert (home / "audit-digests" / f"{yesterday:%Y/%m/%d}" / "day.json").exists()
    assert state.facts["audit_digests"] == str(home.resolve() / "audit-digests")
