"""Retention: per-industry defaults, tenant overrides, whole-day audit expiry that keeps chains valid."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow.compute as pc
import pytest

from shironzi.audit.events import AuditEvent
from shironzi.audit.log import get_audit_log, read_audit_events
from shironzi.audit.retention import (
    RetentionConfirmationRequired,
    enforce_retention,
    policies,
    retention_cutoff,
    set_retention_override,
)
from shironzi.audit.verify import verify_chains
from shironzi.cli import main
from shironzi.errors import InvalidInputError, PermissionDeniedError
from shironzi.lake.delta import append, read_arrow, table_version
from shironzi.settings import get_settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.registry import get_registry
from tests.shironzi.audit._fixtures import events, quarantine, tenant_customers, uri

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

    result = enforce_retention(now=NOW, tenants=TENANTS, confirm=True)
    assert tenant_customers(bronze, "t_a") == ["a_recent"]  # ecommerce: 13 months
    assert tenant_customers(bronze, "t_h") == ["h_old", "h_recent"]  # healthcare: 6 years
    assert tenant_customers(bronze, "t_o") == ["o_ancient", "o_old", "o_recent"]  # no policy given: untouched
    assert result["tenants"]["t_a"] == {"eu-west/bronze/events": 2}
    enforced = read_audit_events().filter(pc.equal(pc.field("action"), "retention_enforced"))
    assert sorted(enforced.column("tenant_id").to_pylist()) == ["t_a", "t_h"]
    assert json.loads(enforced.column("details")[0].as_py())["policy_days"]["bronze"] in (395, 2190)

    set_retention_override(ADMIN, "t_h", "bronze", 100)
    assert policies(TENANTS)["t_h"].days["bronze"] == 100
    enforce_retention(now=NOW, tenants=TENANTS, confirm=True)
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


def _ago(days: int) -> dt.datetime:
    return NOW - dt.timedelta(days=days)


def test_one_delete_commit_per_table_for_many_tenants(audit_home: Path) -> None:
    tenants = {f"t_{i:03d}": ("healthcare" if i % 3 == 0 else "ecommerce") for i in range(60)}
    bronze, held = uri("bronze", "events"), uri("quarantine", "events")
    for days_ago in (30, 500, 3000):
        rows = [(tid, f"{tid}_c{days_ago}") for tid in tenants]
        append(bronze, events(rows, day=_day(days_ago), start=days_ago * 100, ingested_at=_ago(days_ago)))
    append(held, quarantine([(tid, "{}") for tid in tenants]))  # quarantined 2024-05-01: past 90/180 days
    set_retention_override(ADMIN, "t_001", "bronze", 10)  # a third cutoff in the same predicate
    versions = {bronze: table_version(bronze), held: table_version(held)}

    result = enforce_retention(now=NOW, tenants=tenants, confirm=True)

    assert {u: table_version(u) for u in versions} == {u: v + 1 for u, v in versions.items()}
    assert tenant_customers(bronze, "t_001") == []  # 10 days
    assert tenant_customers(bronze, "t_002") == ["t_002_c30"]  # ecommerce: 395 days
    assert tenant_customers(bronze, "t_003") == ["t_003_c30", "t_003_c500"]  # healthcare: 2190 days
    assert read_arrow(held).num_rows == 0
    assert result["commits"] == {"eu-west/bronze/events": 101, "eu-west/quarantine/events": 60}


def test_imported_old_history_counts_from_ingestion_and_survives(audit_home: Path) -> None:
    bronze = uri("bronze", "events")
    history = [("t_a", f"a_{y}") for y in range(5)]
    append(bronze, events(history, day=_day(5 * 365), ingested_at=_ago(1)))  # a backfill landed yesterday
    append(bronze, events([("t_a", "a_stale")], day=_day(20), start=50, ingested_at=_ago(400)))

    result = enforce_retention(now=NOW, tenants={"t_a": "ecommerce"}, confirm=True)

    assert tenant_customers(bronze, "t_a") == [f"a_{y}" for y in range(5)]
    assert result["tenants"] == {"t_a": {"eu-west/bronze/events": 1}}
    assert retention_cutoff("t_a", "bronze", now=NOW, policy=policies({"t_a": "ecommerce"})["t_a"]) == (
        dt.datetime(2024, 5, 2, tzinfo=dt.UTC)  # 395 days before 2025-06-01, at midnight UTC
    )


def _lake_with_expiring_share(count: int, *, tenant: str = "t_a") -> str:
    """A tenant with `count` rows ingested 400 days ago and 4 - count recent ones (ecommerce: 395 days)."""
    bronze = uri("bronze", "events")
    rows = [(tenant, f"old_{i}") for i in range(count)]
    append(bronze, events(rows, day=_day(400), ingested_at=_ago(400)))
    append(bronze, events([(tenant, f"new_{i}") for i in range(4 - count)], day=_day(3), start=10,
                          ingested_at=_ago(3)))
    return bronze


def test_dry_run_reports_per_tenant_and_table_and_changes_nothing(audit_home: Path) -> None:
    bronze = _lake_with_expiring_share(3)
    before = table_version(bronze)
    result = enforce_retention(now=NOW, tenants={"t_a": "ecommerce"}, dry_run=True)
    assert table_version(bronze) == before and len(tenant_customers(bronze, "t_a")) == 4
    [row] = result["plan"]
    assert (row["tenant_id"], row["table"], row["column"], row["expired"], row["total"]) == (
        "t_a", "eu-west/bronze/events", "ingested_at", 3, 4
    )
    assert result["commits"] == {} and result["dry_run"] is True


def test_threshold_stops_before_deleting_and_confirm_proceeds(audit_home: Path) -> None:
    bronze = _lake_with_expiring_share(3)
    before = table_version(bronze)
    with pytest.raises(RetentionConfirmationRequired, match=r"75% of tenant t_a's rows in eu-west/bronze/events"):
        enforce_retention(now=NOW, tenants={"t_a": "ecommerce"})
    assert table_version(bronze) == before and len(tenant_customers(bronze, "t_a")) == 4
    enforce_retention(now=NOW, tenants={"t_a": "ecommerce"}, confirm=True)
    assert tenant_customers(bronze, "t_a") == ["new_0"]


def test_cli_dry_run_threshold_and_confirm(
    audit_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHIRONZI_LOG_LEVEL", "WARNING")
    monkeypatch.setenv("COLUMNS", "160")
    get_settings.cache_clear()
    tenant, _ = get_registry().provision_tenant(ADMIN, slug="shop", name="Shop", industry="ecommerce")
    bronze = _lake_with_expiring_share(1, tenant=tenant.id)

    def shironzi(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        try:
            main.run(["retention", "enforce", "--as-of", NOW.date().isoformat(), *args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, _ = shironzi("--dry-run")
    assert code == 0 and tenant.id in out and "25.0%" in out and "nothing changed" in out
    code, out, _ = shironzi("--dry-run", "--json")
    assert code == 0 and json.loads(out)["plan"][0]["expired"] == 1
    monkeypatch.setenv("SHIRONZI_RETENTION_CONFIRM_SHARE", "0.1")
    get_settings.cache_clear()
    code, out, err = shironzi()
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert f"25% of tenant {tenant.id}'s rows in eu-west/bronze/events" in err and "--confirm" in err
    assert len(tenant_customers(bronze, tenant.id)) == 4
    code, out, _ = shironzi("--confirm", "--json")
    assert code == 0 and json.loads(out)["commits"] == {"eu-west/bronze/events": 1}
    assert sorted(tenant_customers(bronze, tenant.id)) == ["new_0", "new_1", "new_2"]
