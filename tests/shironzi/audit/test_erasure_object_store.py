"""Erasure on an S3 lake (the moto S3-protocol server): discovery, the direct file scans, the log-statistics
scan and dropping old log files all reach the object store through SHIRONZI_STORAGE_OPTIONS alone (no AWS_*
variable in the process environment)."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from shironzi.audit.erasure import erase_subject, verify_receipt
from shironzi.privacy.tokens import pseudonym
from shironzi.settings import get_settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.keystore import get_keystore
from tests._services import S3Server
from tests.shironzi.audit._fixtures import build_lake, tenant_customers

pytestmark = pytest.mark.integration

BUCKET = "erasure-lake"


@pytest.fixture
def s3_lake(audit_home: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    lake = s3.create_bucket(BUCKET) + "/lake"
    monkeypatch.setenv("SHIRONZI_LAKE_URI", lake)
    monkeypatch.setenv("SHIRONZI_STORAGE_OPTIONS", json.dumps(s3.storage_options()))
    get_settings.cache_clear()
    yield lake
    get_settings.cache_clear()


def _subject_rows_in_bucket(s3: S3Server, tenant: str, values: set[str]) -> list[str]:
    """Keys of Parquet objects in the bucket that still hold a row of `tenant` naming one of `values`."""
    client = s3.client()
    found = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="lake/"):
        for obj in page.get("Contents", []):
            if not obj["Key"].endswith(".parquet") or "/_delta_log/" in obj["Key"]:
                continue
            table = pq.read_table(io.BytesIO(client.get_object(Bucket=BUCKET, Key=obj["Key"])["Body"].read()))
            if "tenant_id" not in table.column_names or "customer_id" not in table.column_names:
                continue
            rows = table.select(["tenant_id", "customer_id"]).to_pylist()
            if any(r["tenant_id"] == tenant and r["customer_id"] in values for r in rows):
                found.append(obj["Key"])
    return found


def test_erasure_on_an_s3_lake_reads_the_objects_back(s3_lake: str, s3: S3Server) -> None:
    token = pseudonym(get_keystore().get_or_create_key("t_a"), "c_1")
    tables = build_lake(token=token)
    assert _subject_rows_in_bucket(s3, "t_a", {"c_1", token})  # the subject is there before

    receipt = erase_subject(TenantContext.admin(actor="dpo@platform", purpose="gdpr_erasure"), "t_a", "c_1")

    assert receipt.verification["ok"] and receipt.verification["files_scanned"] > 0, receipt.verification
    touched = {t["table"]: t for t in receipt.tables}
    assert touched["eu-west/bronze/events"]["rows_deleted"] == 3
    assert touched["eu-west/bronze/events"]["log_files_dropped"] > 0  # old commits' stats named the subject
    assert tenant_customers(tables["bronze"], "t_a") == ["c_10", "c_12", "c_2"]
    assert verify_receipt(receipt.request_id).ok
    # Read straight from the S3 server: no object holds the subject's rows any more; other tenants keep theirs.
    assert _subject_rows_in_bucket(s3, "t_a", {"c_1", token}) == []
    assert _subject_rows_in_bucket(s3, "t_b", {"c_1"})


def test_the_file_scan_reads_files_with_string_and_binary_views(tmp_path: Path) -> None:
    """Sail writes Parquet whose Arrow schema holds binary_view columns; the direct scan used to fail on them."""
    import pyarrow as pa

    from shironzi.audit.erasure_scan import Matcher, scan_file, subject_digest

    path = tmp_path / "part-0.parquet"
    pq.write_table(pa.table({"tenant_id": pa.array(["t_a", "t_a", "t_b"], pa.string_view()),
                             "customer_id": pa.array(["c_1", "c_2", "c_1"], pa.string_view()),
                             "blob": pa.array([b"x", b"y", b"z"], pa.binary_view())}), path)
    matcher = Matcher("t_a", "subject", frozenset({subject_digest("t_a", "c_1")}))
    assert scan_file(str(path), matcher) == (3, 1)
