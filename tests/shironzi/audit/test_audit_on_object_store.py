"""The compliance and maintenance paths on an S3 lake (a moto S3-protocol server process), reached only through
SHIRONZI_LAKE_URI and SHIRONZI_STORAGE_OPTIONS: discovery, erasure with its direct-file scan, lineage,
inventory, `audit changes`, maintenance and retention."""

from __future__ import annotations

import datetime as dt
import io
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from shironzi.audit.erasure import erase_subject, verify_receipt
from shironzi.audit.retention import enforce_retention
from shironzi.cli import main
from shironzi.lake.delta import open_table, read_arrow, table_version
from shironzi.lake.discovery import discover_tables
from shironzi.lake.maintenance import run_maintenance
from shironzi.settings import get_settings
from shironzi.tenancy.context import TenantContext
from tests._services import S3Server
from tests.shironzi.audit._fixtures import build_lake

ADMIN = TenantContext.admin(actor="dpo@platform", purpose="gdpr_erasure")


def _objects(s3: S3Server, bucket: str) -> dict[str, bytes]:
    client = s3.client()
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    return {k: client.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys if k.endswith(".parquet")}


def _subject_rows(s3: S3Server, bucket: str, tenant: str, customer: str) -> list[str]:
    """Data files (read back with boto3, not through the code under test) holding the tenant's customer."""
    found = []
    for key, body in _objects(s3, bucket).items():
        if "/_delta_log/" in key:
            continue
        data = pq.read_table(io.BytesIO(body))
        if {"tenant_id", "customer_id"} <= set(data.column_names):
            pairs = zip(data.column("tenant_id").to_pylist(), data.column("customer_id").to_pylist(), strict=True)
            if (tenant, customer) in set(pairs):
                found.append(key)
    return found


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> object:
    capsys.readouterr()
    try:
        main.run(list(args))
    except SystemExit as exc:
        assert not exc.code, capsys.readouterr().err
    return json.loads(capsys.readouterr().out)


@pytest.mark.integration
def test_erasure_lineage_inventory_changes_maintenance_and_retention_on_an_s3_lake(
    audit_home: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bucket = "shironzi-compliance"
    monkeypatch.setenv("SHIRONZI_LAKE_URI", f"{s3.create_bucket(bucket)}/lake")
    monkeypatch.setenv("SHIRONZI_STORAGE_OPTIONS", json.dumps(s3.storage_options()))
    monkeypatch.setenv("SHIRONZI_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    tables = build_lake()  # two pooled tenants (t_a, t_b) in every layer, plus a dedicated tenant t_d
    assert all(t.startswith(f"s3://{bucket}/lake/") for t in tables.values())

    found = {t.relative for t in discover_tables()}
    assert {"eu-west/bronze/events", "eu-west/quarantine/events", "eu-west/tenants/t_d/bronze/events"} <= found
    assert _subject_rows(s3, bucket, "t_a", "c_1")

    inventory = _cli(capsys, "audit", "inventory", "--tenant", "t_a", "--json")
    assert {e["table"] for e in inventory} >= {"eu-west/bronze/events", "eu-west/gold/dim_customers"}  # type: ignore[union-attr]
    lineage = _cli(capsys, "audit", "lineage", "--tenant", "t_b", "--json")
    assert "eu-west/silver/stg_events" in lineage["tables_with_rows"]  # type: ignore[index]

    receipt = erase_subject(ADMIN, "t_a", "c_1")
    assert receipt.verification["ok"] and receipt.verification["files_scanned"] > 0
    assert verify_receipt(receipt.request_id).ok
    assert _subject_rows(s3, bucket, "t_a", "c_1") == []  # gone from the S3 objects themselves
    assert _subject_rows(s3, bucket, "t_b", "c_1") and _subject_rows(s3, bucket, "t_a", "c_12")

    history = _cli(capsys, "audit", "changes", "eu-west/bronze/events", "--json")
    # erasure dropped the log entries whose statistics named the subject: history starts at its checkpoint
    assert history[0]["version"] == table_version(tables["bronze"]) >= 3  # type: ignore[index]
    receipts = _cli(capsys, "audit", "changes", "_platform/audit/erasures", "--json")
    assert [c["operation"] for c in receipts] == ["CREATE TABLE", "WRITE"][::-1]  # type: ignore[union-attr]

    done = run_maintenance(tables["silver"], retention_hours=0, enforce_retention_duration=False)
    assert done["optimize"]["files_removed"] >= 1 and done["vacuumed_files"] >= 1
    silver = "lake/eu-west/silver/stg_events/"
    stored = {k for k in _objects(s3, bucket) if k.startswith(silver) and "/_delta_log/" not in k}
    live = {u.split(f"s3://{bucket}/", 1)[1] for u in open_table(tables["silver"]).file_uris()}
    assert stored == live  # the compacted-away files are gone from the bucket
    assert read_arrow(tables["silver"]).num_rows == 4  # 5 rows, less the erased subject

    result = enforce_retention(now=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), tenants={"t_a": "saas", "t_b": "saas"},
                               confirm=True)  # every row has expired: more than the threshold
    assert result["tenants"]["t_b"]["eu-west/bronze/events"] == 1
    assert read_arrow(tables["bronze"], filters=[("tenant_id", "in", ["t_a", "t_b"])]).num_rows == 0
