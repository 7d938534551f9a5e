"""Exports on an object-store lake (moto's S3 server as its own process): the file is written to the bucket under
`_platform/exports/<tenant>/`, the download answers with a redirect to a pre-signed URL that serves exactly that
file, and the expiry sweep deletes the object."""

from __future__ import annotations

import io
import json
import urllib.request
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests._services import S3Server
from tests.serving._fixtures import A_ONLY_CUSTOMER, SHARED_CUSTOMER, build_world, finished_export, isolated_home

BUCKET = "exports-lake"


@pytest.mark.integration
def test_export_on_s3_downloads_through_a_presigned_url(tmp_path: Any, s3: S3Server) -> None:
    import datetime as dt

    from fastapi.testclient import TestClient

    from serving.app import create_app
    from shironzi.exports import expire_exports

    s3.create_bucket(BUCKET)
    with isolated_home(tmp_path / "home", SHIRONZI_LAKE_URI=f"s3://{BUCKET}/lake",
                       SHIRONZI_STORAGE_OPTIONS=json.dumps(s3.storage_options())) as settings:
        world = build_world(settings, expired_key=False)
        with TestClient(create_app(settings, load_model=False), raise_server_exceptions=False) as client:
            started = client.post("/v1/exports", headers=world.auth("own"),
                                  json={"table": "churn_scores", "start": "2026-01-01", "end": "2026-01-31"})
            assert started.status_code == 202, started.text
            export_id = started.json()["id"]
            status = finished_export(client, world, export_id)
            assert status["status"] == "ready" and status["rows"] == 2, status
            key = f"lake/_platform/exports/{world.tenant_a}/{export_id}.parquet"
            head = s3.client().head_object(Bucket=BUCKET, Key=key)
            assert head["ContentLength"] == status["size_bytes"]

            redirect = client.get(status["download"], headers=world.auth("own"), follow_redirects=False)
            assert redirect.status_code == 307, redirect.text
            url = redirect.headers["location"]
            assert url.startswith(f"{s3.endpoint}/{BUCKET}/{key}?") and "X-Amz-Signature=" in url
            assert f"X-Amz-Expires={settings.export_presign_seconds}" in url
            with urllib.request.urlopen(url, timeout=10) as response:
                table = pq.read_table(io.BytesIO(response.read()))
            assert set(table.column("tenant_id").to_pylist()) == {world.tenant_a}
            assert sorted(table.column("customer_id").to_pylist()) == sorted([SHARED_CUSTOMER, A_ONLY_CUSTOMER])

            later = dt.datetime.now(dt.UTC) + dt.timedelta(days=settings.export_expiry_days, seconds=1)
            assert expire_exports(now=later, settings=settings).files_deleted == 1
            listed = s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"lake/_platform/exports/{world.tenant_a}/")
            # Arrow's S3 filesystem leaves an empty directory marker (`.../<tenant>/`) behind a deleted last file
            assert [o["Key"] for o in listed.get("Contents", []) if not o["Key"].endswith("/")] == []
