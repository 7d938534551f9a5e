"""`shironzi ingest import`: a history with its own column names, one mapping file, a dry run that writes
nothing, then an exactly-once import through the batch landing path (bronze, quarantine, manifest)."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from ingestion.batch import processed_files
from ingestion.batch.imports import plan_import, preview_import, run_import
from ingestion.cli import ingest_app
from ingestion.contracts import get_contract
from ingestion.mapping import parse_mapping
from shironzi.errors import InvalidInputError
from shironzi.lake import table_exists
from tests.ingestion._fixtures import bronze_uri, provision, quarantine_uri, read_all

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE = ROOT / "examples" / "import"
CSV, MAPPING = EXAMPLE / "online_retail.csv", EXAMPLE / "online_retail.yaml"
SHIRONZI = str(Path(sys.executable).parent / "shironzi")


@pytest.fixture
def shop(home: Path) -> object:
    (tenant,) = provision([("acme-shop", "ecommerce", "standard")])
    return tenant


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingestion import cli

    monkeypatch.setattr(cli.console, "width", 250)  # one line per table row


def _invoke(*args: str) -> object:
    return CliRunner().invoke(ingest_app, list(args), catch_exceptions=False)


def test_dry_run_previews_mapped_records_and_a_report_and_writes_nothing(shop: object) -> None:
    result = _invoke("import", "--tenant", "acme-shop", "--mapping", str(MAPPING), str(CSV), "--dry-run")
    out = result.output  # type: ignore[attr-defined]
    assert result.exit_code == 0, out  # type: ignore[attr-defined]
    assert "dry run: first 10 mapped record(s)" in out and "536365-85123A" in out and "2010-12-01T08:26:00" in out
    for measure, rows in (("read", 12), ("would land", 9), ("would be quarantined", 2),
                          ("duplicates in the import", 1), ("quarantined: missing_field", 1),
                          ("quarantined: wrong_type", 1), ("event type: order_placed", 8),
                          ("event type: order_refunded", 1)):
        assert any(measure in line and line.rstrip(" │").endswith(f" {rows}") for line in out.splitlines()), measure
    assert "online_retail.csv:7" in out and "online_retail.csv:9" in out  # sample rejected rows
    assert "raw retention" in out and "ingestion time" in out
    assert not table_exists(bronze_uri()) and not table_exists(quarantine_uri()) and processed_files() == set()


def test_import_lands_exact_counts_once_with_quarantine_reasons(shop: object) -> None:
    args = ("import", "--tenant", "acme-shop", "--mapping", str(MAPPING), str(CSV))
    first = _invoke(*args)
    assert first.exit_code == 0, first.output  # type: ignore[attr-defined]
    bronze, quarantine = read_all(bronze_uri()), read_all(quarantine_uri())
    assert bronze.height == 9 and set(bronze.get_column("tenant_id")) == {shop.id}  # type: ignore[attr-defined]
    assert sorted(quarantine.get_column("reason_code").to_list()) == ["missing_field", "wrong_type"]
    assert sorted(quarantine.get_column("position").to_list()) == ["online_retail.csv:7", "online_retail.csv:9"]
    summer = bronze.filter(pl.col("event_id") == "552000-21212").row(0, named=True)
    assert summer["event_time"] == datetime(2011, 6, 15, 9, 0, tzinfo=UTC)  # 10:00 in London (BST)
    assert summer["amount"] == pytest.approx(13.2) and summer["currency"] == "GBP"
    assert json.loads(summer["properties"]) == {"order_id": "552000", "item_count": 24}
    refund = bronze.filter(pl.col("event_type") == "order_refunded").row(0, named=True)
    assert refund["amount"] == 27.5 and json.loads(refund["properties"])["order_id"] == "536379"
    assert "balanced" in first.output and "ingestion time" in first.output  # type: ignore[attr-defined]
    again = _invoke(*args)
    assert "0 source(s) imported for tenant acme-shop, 1 already imported" in again.output  # type: ignore[attr-defined]
    assert read_all(bronze_uri()).height == 9 and read_all(quarantine_uri()).height == 2


def test_a_required_field_without_a_source_fails_before_any_row_is_read(shop: object, home: Path,
                                                                           tmp_path: Path) -> None:
    mapping = tmp_path / "bad.yaml"
    mapping.write_text(MAPPING.read_text().replace("  customer_id: CustomerID\n", ""))
    garbage = tmp_path / "orders.parquet"
    garbage.write_bytes(b"not parquet at all")  # never read: the mapping is refused first
    env = {**os.environ, "SHIRONZI_HOME": str(home)}
    run = subprocess.run([SHIRONZI, "ingest", "import", "--tenant", "acme-shop", "--mapping", str(mapping),
                          str(garbage)], capture_output=True, text=True, env=env, timeout=120)
    lines = [ln for ln in run.stderr.splitlines() if ln.strip() and not ln.startswith("{")]
    assert run.returncode == 1 and len(lines) == 1, run.stderr
    assert "required field 'customer_id' has no source" in lines[0] and "order_placed" in lines[0]
    assert not table_exists(bronze_uri()) and processed_files() == set()


@pytest.mark.parametrize(("change", "message"), [
    ({"events": {"order_placed": {"amount": "Total", "properties": {"order_id": "InvoiceNo"}}}},
     "required property 'item_count' has no source"),
    ({"events": {"order_placed": {"properties": {"order_id": "A", "item_count": "B"}}}},
     "required field 'amount' has no source"),
    ({"fields": {"tenant_id": "Shop"}}, "tenant_id is filled by the import"),
    ({"event_type": "teleported", "events": {}}, "event type teleported is not in contract ecommerce@v1"),
    ({"events": {"order_placed": {"amount": "X", "properties": {"order_id": "A", "item_count": "B",
                                                                 "colour": "C"}}}}, "colour not in contract"),
    ({"timestamp": {"timezone": "Mars/Olympus"}}, "unknown time zone"),
])
def test_mapping_errors_name_the_field_and_event_type(change: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"event_type": "order_placed", "fields": {
        "event_id": "Id", "customer_id": "Customer", "event_time": "When", "currency": {"const": "EUR"}}}
    with pytest.raises(InvalidInputError, match=message):
        parse_mapping({**base, **change}, contract=get_contract("ecommerce@v1"))


def test_jsonl_and_parquet_sources_by_tenant_id(shop: object, tmp_path: Path) -> None:
    tenant_id = shop.id  # type: ignore[attr-defined]
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text(
        "timestamp: {timezone: America/New_York}\n"
        "event_type: {column: kind, values: {visit: session_started, buy: order_placed}}\n"
        "fields: {event_id: id, customer_id: user, event_time: at}\n"
        "events:\n"
        "  session_started: {properties: {session_id: {expr: \"'s-' || id\"}, device: {const: web}}}\n"
        "  order_placed: {amount: total, currency: {const: USD}, properties: {order_id: id, item_count: n}}\n"
    )
    rows = [{"id": "a1", "user": "u1", "kind": "visit", "at": "2024-03-01T10:00:00Z", "total": None, "n": None},
            {"id": "a2", "user": "u1", "kind": "buy", "at": "2024-03-01T10:05:00Z", "total": 19.5, "n": 2},
            {"id": "a3", "user": "u2", "kind": "buy", "at": "2024-03-02T08:00:00Z", "total": 5.0, "n": "two"}]
    (tmp_path / "events.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pl.DataFrame({"id": ["p1"], "user": ["u3"], "kind": ["buy"], "at": [datetime(2024, 7, 4, 12, 0)],
                  "total": [7.25], "n": [1]}).write_parquet(tmp_path / "orders.parquet")
    plan = plan_import([tmp_path / "events.jsonl", tmp_path / "orders.parquet"], tenant=tenant_id, mapping=mapping)
    assert preview_import(plan).counts_by_reason == {"wrong_property_type": 1}
    result = run_import(plan, check_quality=False).run
    assert (result.totals.landed, result.totals.quarantined) == (3, 1)
    bronze = read_all(bronze_uri()).sort("event_id")
    assert bronze.get_column("event_type").to_list() == ["session_started", "order_placed", "order_placed"]
    naive = bronze.filter(pl.col("event_id") == "p1").row(0, named=True)
    assert naive["event_time"] == datetime(2024, 7, 4, 16, 0, tzinfo=UTC)  # naive Parquet time in New York
    assert json.loads(bronze.row(0, named=True)["properties"]) == {"session_id": "s-a1", "device": "web"}


def test_a_sql_query_imports_once(shop: object, tmp_path: Path) -> None:
    db = tmp_path / "shop.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE orders (ref TEXT, client TEXT, placed TEXT, value REAL, items INT)")
        conn.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)",
                         [("o1", "c1", "2023-01-05 10:00:00", 12.0, 1), ("o2", "c2", "2023-02-07 11:30:00", 8.5, 3)])
    mapping = tmp_path / "mapping.yaml"
    mapping.write_text("event_type: order_placed\n"
                       "fields: {event_id: ref, customer_id: client, event_time: placed, amount: value,"
                       " currency: {const: EUR}}\n"
                       "events: {order_placed: {properties: {order_id: ref, item_count: items}}}\n"
                       "timestamp: {format: '%Y-%m-%d %H:%M:%S'}\n")
    plan = plan_import([], tenant="acme-shop", mapping=mapping, sql="SELECT * FROM orders",
                       source_url=f"sqlite:///{db}")
    assert run_import(plan, check_quality=False).run.totals.landed == 2
    again = plan_import([], tenant="acme-shop", mapping=mapping, sql="SELECT * FROM orders",
                        source_url=f"sqlite:///{db}")
    assert run_import(again, check_quality=False).run.files_skipped == [plan.files[0].relative]
    assert read_all(bronze_uri()).height == 2


def test_the_readme_shows_the_example_mapping() -> None:
    readme = (ROOT / "README.md").read_text().split("### Importing a tenant's own history", 1)[1]
    block = readme.split("```yaml\n", 1)[1].split("```", 1)[0]
    example = "".join(line + "\n" for line in MAPPING.read_text().splitlines() if not line.startswith("#"))
    assert block == example


def test_the_retention_warning_follows_the_tenants_policy(shop: object) -> None:
    from datetime import timedelta

    from ingestion.batch.imports import retention_warnings
    from shironzi.audit.retention import set_retention_override
    from shironzi.tenancy import TenantContext, get_registry

    info = get_registry().tenant_directory(fresh=True)[shop.id]  # type: ignore[attr-defined]
    today = datetime.now(UTC).date()
    assert retention_warnings(info, today - timedelta(days=300)) == []  # within the ecommerce default (395)
    set_retention_override(TenantContext.admin(actor="test", purpose="retention"), info.tenant_id, "bronze", 200)
    (warning,) = retention_warnings(info, today - timedelta(days=300))
    assert "bronze: 200 days" in warning and "counts from ingestion time" in warning
