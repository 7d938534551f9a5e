"""Lake audit queries (access, changes, lineage, inventory) and the audit/gdpr/retention CLI."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path

import pytest

from shironzi.audit.events import AuditEvent
from shironzi.audit.log import audit_table_uri, get_audit_log, record_table_write, record_training_run
from shironzi.audit.queries import access, changes, inventory, lineage
from shironzi.lake.delta import append, overwrite, read_arrow
from shironzi.settings import get_settings
from tests.shironzi.audit._fixtures import build_lake, customers, events, uri
from tests.shironzi.cli._fixtures import CliResult, run_cli

Run = Callable[..., CliResult]


@pytest.fixture
def run(audit_home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Run:
    monkeypatch.setenv("SHIRONZI_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()

    return lambda *args: run_cli(capsys, *args)


def test_access_lists_who_touched_a_tenant_in_a_window(audit_home: Path) -> None:
    log = get_audit_log()
    base = dt.datetime(2024, 5, 1, 9, tzinfo=dt.UTC)
    log.record(
        AuditEvent(
            action="read",
            actor="key:k1",
            actor_kind="key",
            tenant_id="t_a",
            resource="gold/fct_orders",
            outcome="allowed",
            event_time=base,
        )
    )
    log.record(
        AuditEvent(
            action="read",
            actor="key:k2",
            actor_kind="key",
            tenant_id="t_a",
            resource="gold/dim_customers",
            outcome="denied",
            event_time=base + dt.timedelta(hours=1),
        )
    )
    log.record(AuditEvent(action="read", actor="key:k3", tenant_id="t_b", resource="x", event_time=base))
    log.record(
        AuditEvent(
            action="read",
            actor="key:k1",
            tenant_id="t_a",
            resource="late",
            event_time=base + dt.timedelta(days=3),
        )
    )
    found = access("t_a", start=base, end=base + dt.timedelta(days=1))
    assert [e["resource"] for e in found["events"]] == ["gold/fct_orders", "gold/dim_customers"]
    assert found["actors"]["key:k2"]["denied"] == 1 and "key:k3" not in found["actors"]


def test_changes_joins_history_to_the_runs_that_caused_them(audit_home: Path) -> None:
    gold = uri("gold", "dim_customers")
    first = append(gold, customers([("t_a", "c_1")]))
    record_table_write("dbt", gold, first.version, 1, "run-1", inputs=[(uri("silver", "stg_events"), 3)])
    second = overwrite(gold, customers([("t_a", "c_2")]), metadata={"run_id": "run-2"})
    record_table_write("dbt", gold, 99, 1, "run-2")  # matched by the commit's run_id, not the version
    result = {c["version"]: c for c in changes(gold)}
    assert result[first.version]["audit_events"][0]["run_id"] == "run-1"
    assert result[first.version]["audit_events"][0]["inputs"][0]["version"] == 3
    assert result[second.version]["operation"] in ("WRITE", "CREATE OR REPLACE TABLE")
    assert [e["run_id"] for e in result[second.version]["audit_events"]] == ["run-2"]


def test_lineage_follows_recorded_inputs_and_inventory_counts_rows(audit_home: Path) -> None:
    tables = build_lake()
    derived = uri("gold", "tenant_summary")
    append(derived, read_arrow(tables["gold"]).group_by("customer_id").aggregate([]))  # no tenant_id column
    record_table_write("dbt", derived, 0, 4, "run-g", inputs=[(tables["gold"], 0)])
    record_training_run("trainer", run_id="run-t", model_name="churn", model_version=2, inputs=[(derived, 0)])
    record_training_run("trainer", run_id="run-u", model_name="other", inputs=[(uri("gold", "unrelated"), 0)])
    found = lineage("t_a")
    assert "eu-west/bronze/events" in found["tables_with_rows"]
    assert "eu-west/tenants/t_d/bronze/events" not in found["tables_with_rows"]
    assert [d["table"].rsplit("/", 3)[-3:] for d in found["derived_tables"]] == [
        ["eu-west", "gold", "tenant_summary"]
    ]
    assert [r["run_id"] for r in found["training_runs"]] == ["run-t"]
    assert found["models"] == [{"model": "churn", "version": "2"}]

    items = {i["table"]: i for i in inventory("t_a")}
    assert items["eu-west/bronze/events"]["rows"] == 5  # c_12, c_10, c_2, c_1 x2
    assert items["eu-west/bronze/events"]["oldest"].date() == dt.date(2024, 5, 1)
    assert items["eu-west/bronze/events"]["approx_bytes"] > 0
    assert items["eu-west/quarantine/events"]["rows"] == 4
    assert "eu-west/tenants/t_d/bronze/events" in {i["table"] for i in inventory("t_d")}
    assert "eu-west/tenants/t_d/bronze/events" not in items


def test_inventory_names_the_columns_that_hold_a_tenants_phi(audit_home: Path) -> None:
    protected = "phi_" + "Qx3-_" * 6  # the shape landing gives an encrypted patient id
    visits = uri("silver", "visits")
    append(visits, events([("t_h", protected), ("t_h", protected), ("t_a", "c_1")]))
    clinic = {i["table"]: i for i in inventory("t_h")}["eu-west/silver/visits"]
    assert clinic["rows"] == 2
    assert clinic["phi_columns"] == ["customer_id", "properties"]  # the id, and the id inside the JSON
    shop = {i["table"]: i for i in inventory("t_a")}["eu-west/silver/visits"]
    assert shop["rows"] == 1 and shop["phi_columns"] == []


def test_cli_audit_verify_and_gdpr_round_trip(run: Run, audit_home: Path) -> None:
    build_lake()
    get_audit_log().record(AuditEvent(action="read", actor="svc", tenant_id="t_a"))
    code, out, _ = run("audit", "verify")
    assert code == 0 and "intact" in out

    receipt_path = audit_home / "receipt.json"
    code, out, err = run("gdpr", "erase", "--tenant", "t_a", "--subject", "c_1", "--out", str(receipt_path))
    assert code == 0, err
    receipt = json.loads(out)
    assert receipt["verification"]["ok"]
    code, out, _ = run("gdpr", "verify", receipt["request_id"])
    assert code == 0 and "verified" in out
    forged = {**receipt, "tenant_id": "t_b"}
    receipt_path.write_text(json.dumps(forged))
    code, _, err = run("gdpr", "verify", str(receipt_path))
    assert code == 1 and "integrity_check_failed" in err and "signature" in err

    code, out, _ = run("audit", "inventory", "--tenant", "t_a", "--json")
    assert code == 0 and "eu-west/bronze/events" in {i["table"] for i in json.loads(out)}
    code, out, _ = run("audit", "access", "--tenant", "t_a", "--json")
    assert code == 0 and "subject_erased" in {e["action"] for e in json.loads(out)["events"]}

    # Tamper with the audit table: the CLI reports the broken link and exits 1.
    table = read_arrow(audit_table_uri())
    day = table.column("event_date")[0].as_py()
    rows = read_arrow(audit_table_uri(), filters=[("event_date", "=", day)]).sort_by("seq").to_pylist()
    rows[0]["actor"] = "someone-else"
    overwrite(
        audit_table_uri(),
        rows and __import__("pyarrow").Table.from_pylist(rows, schema=table.schema),
        partition_by="event_date",
        predicate=[("event_date", "=", day)],
    )
    code, _, err = run("audit", "verify")
    assert code == 1 and "seq 0" in err and "does not match its hash" in err


def test_cli_retention_and_bad_input(run: Run) -> None:
    append(
        uri("bronze", "events"), events([("t_x", "c")], day=dt.date(2000, 1, 1)), partition_by="event_date"
    )
    code, out, err = run("retention", "enforce", "--json")
    assert code == 0, err
    code, _, err = run("audit", "access", "--tenant", "t_a", "--from", "yesterday")
    assert code == 1 and "invalid_input" in err
    code, _, err = run("audit", "changes", "eu-west/gold/nope")
    assert code == 1 and "table_not_found" in err
