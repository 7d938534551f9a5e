"""Retention: per-industry defaults, tenant overrides, whole-day audit expiry that keeps chains valid."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow.compute as pc
import pytest

from shironzi.audit.events import AuditEvent
from shironzi.audit.log import get_audit_log, read_audit_events
from shironzi.audit.retention import enforce_retention, policies, set_retention_override
from shironzi.audit.verify import verify_chains
from shironzi.errors import InvalidInputError, PermissionDeniedError
from shironzi.lake.delta import append
from shironzi.tenancy.context import TenantContext
from tests.shironzi.audit._fixtures import events, tenant_customers, uri

NOW = dt.datetime(2025, 6, 1, tzinfo=dt.UTC)
TENANTS = {"t_a": "ecommerce", "t_h": "healthcare"}
ADMIN = TenantContext.admin(actor="ops", purpose="retention")


def _day(days_ago: int) -> dt.date:
    return (NOW - dt.timedelta(days=days_ago)).date()


def test_enforce_retention_per_industry_and_override(audit_home: Path) -> None:
    bronze = uri("bronze", "events")
    for days_ago, label in ((30, "recent"), (400, "old"), (3000, "ancient")):
        rows = [("t_a", f"a_{label}"), ("t_h", f"h_{label}"), ("t_o", f"o_{label}")]
        append(bronze, events(rows, day=_day(days_ago), start=days_ago * 10), partition_by="event_date")

    result = enforce_retention(now=NOW, tenants=TENANTS)
    assert tenant_customers(bronze, "t_a") == ["a_recent"]  # ecommerce: 13 months
    assert tenant_customers(bronze, "t_h") == ["h_old", "h_recent"]  # healthcare: 6 years
    assert tenant_customers(bronze, "t_o") == ["o_ancient", "o_old", "o_recent"]  # no policy given: untouched
    assert result["tenants"]["t_a"] == {"eu-west/bronze/events": 2}
    enforced = read_audit_events().filter(pc.equal(pc.field("action"), "retention_enforced"))
    assert sorted(enforced.column("tenant_id").to_pylist()) == ["t_a", "t_h"]
    assert json.loads(enforced.column("details")[0].as_py())["policy_days"]["bronze"] in (395, 2190)

    set_retention_override(ADMIN, "t_h", "bronze", 100)
    assert policies(TENANTS)["t_h"].days["bronze"] == 100
    enforce_retention(now=NOW, tenants=TENANTS)
    assert tenant_customers(bronze, "t_h") == ["h_recent"]
    with pytest.raises(InvalidInputError):
        set_retention_override(ADMIN, "t_h", "bronze", 0)
    with pytest.raises(PermissionDeniedError):
        set_retention_override(TenantContext.for_tenant("t_h", actor="x", purpose="y"), "t_h", "bronze", 10)


def test_audit_log_expires_whole_days_by_the_longest_tenant_policy(audit_home: Path) -> None:
    log = get_audit_log()
    four_years = NOW - dt.timedelta(days=4 * 365)
    log.record(AuditEvent(action="read", actor="k", tenant_id="t_a", event_time=four_years))
    log.record(
        AuditEvent(action="read", actor="k", tenant_id="t_a", event_time=four_years + dt.timedelta(days=1))
    )
    log.record(
        AuditEvent(action="read", actor="k", tenant_id="t_h", event_time=four_years + dt.timedelta(days=1))
    )
    log.record(AuditEvent(action="read", actor="k", tenant_id="t_a", event_time=NOW - dt.timedelta(days=1)))
    log.flush()
    result = enforce_retention(now=NOW, tenants=TENANTS)
    # Day 1 only had an ecommerce tenant (3 years): gone. Day 2 also had a healthcare tenant (6 years): kept.
    assert result["audit_days_deleted"] == [four_years.date().isoformat()]
    left = set(read_audit_events().column("event_date").to_pylist())
    assert four_years.date() not in left and (four_years + dt.timedelta(days=1)).date() in left
    assert verify_chains().ok
