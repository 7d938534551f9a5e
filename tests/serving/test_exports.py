"""Exports through the API (`data_export`): Parquet and CSV files of the caller's own rows only, streamed
downloads, the disclosure audit event, other tenants' export ids unknown (404), bad input refused with the
field's path and nothing written, plan limits (429 per day, 403 rows), and the expiry sweep."""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from shironzi.tenancy import TenantContext, get_registry
from shironzi.tenancy.catalog import PLAN_EXPORT_LIMITS, ExportLimits
from shironzi.tenancy.models import data_exports
from tests.serving._fixtures import (
    A_ONLY_CUSTOMER,
    B_ONLY_CUSTOMER,
    SHARED_CUSTOMER,
    ApiWorld,
    build_world,
    finished_export,
    isolated_home,
)

ADMIN = TenantContext.admin(actor="test", purpose="export tests")
JANUARY = {"start": "2026-01-01", "end": "2026-01-31"}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ApiWorld]]:
    """A TestClient over an app without a model (exports need none) on a world with prediction tables."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    with isolated_home(tmp_path_factory.mktemp("exports") / "home") as settings:
        world = build_world(settings, expired_key=False)
        with TestClient(create_app(settings, load_model=False), raise_server_exceptions=False) as client:
            yield client, world


def _export(client: Any, world: ApiWorld, key: str = "own", **body: Any) -> Any:
    return client.post("/v1/exports", json=body, headers=world.auth(key))


def _export_count(world: ApiWorld) -> int:
    with get_registry(world.settings).engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(data_exports)).scalar_one())


def _export_files(world: ApiWorld) -> list[Path]:
    root = Path(world.settings.resolved_lake_uri) / "_platform" / "exports"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_parquet_export_holds_only_the_callers_rows_and_streams(api: tuple[Any, ApiWorld]) -> None:
    client, world = api
    started = _export(client, world, table="churn_scores", format="parquet", **JANUARY)
    assert started.status_code == 202, started.text
    assert started.headers["Location"] == f"/v1/exports/{started.json()['id']}"
    done = finished_export(client, world, started.json()["id"])
    assert done["status"] == "ready", done
    assert done["rows"] == 2 and done["size_bytes"] > 0
    assert dt.datetime.fromisoformat(done["expires_at"]) > dt.datetime.fromisoformat(done["created_at"])
    download = client.get(done["download"], headers=world.auth("own"))
    assert download.status_code == 200
    assert download.headers["content-disposition"].endswith('churn_scores_2026-01-01_2026-01-31.parquet"')
    assert int(download.headers["content-length"]) == done["size_bytes"] == len(download.content)
    table = pq.read_table(io.BytesIO(download.content))
    assert set(table.column("tenant_id").to_pylist()) == {world.tenant_a}
    assert sorted(table.column("customer_id").to_pylist()) == sorted([SHARED_CUSTOMER, A_ONLY_CUSTOMER])
    # the file lives under the lake's platform exports of the tenant
    (path,) = [p for p in _export_files(world) if p.name.startswith(done["id"])]
    assert path.parent.name == world.tenant_a and path.read_bytes() == download.content


def test_csv_export_and_its_disclosure_audit_event(api: tuple[Any, ApiWorld]) -> None:
    from shironzi.audit.disclosures import subject_tokens
    from shironzi.audit.log import read_audit_events

    client, world = api
    started = _export(client, world, key="other", table="forecasts", format="csv", start="2026-01-06",
                      end="2026-01-06")
    assert started.status_code == 202, started.text
    done = finished_export(client, world, started.json()["id"], key="other")
    assert done["status"] == "ready" and done["rows"] == 56  # 2 KPIs x 28 days of tenant B, none of A's
    text = client.get(done["download"], headers=world.auth("other")).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == 56 and {r["tenant_id"] for r in rows} == {world.tenant_b}

    scores = finished_export(client, world, _export(client, world, key="other", table="churn_scores", format="csv",
                                              **JANUARY).json()["id"], key="other")
    events = read_audit_events(filters=[("action", "=", "data_exported"), ("tenant_id", "=", world.tenant_b)])
    by_export = {r["resource"]: r for r in events.to_pylist() if scores["id"] in (r["details"] or "")}
    assert set(by_export) == {"export:churn_scores"}
    event = by_export["export:churn_scores"]
    assert sorted(event["subjects"]) == sorted(subject_tokens(world.tenant_b, [SHARED_CUSTOMER, B_ONLY_CUSTOMER]))
    assert '"rows":2' in event["details"].replace(" ", "")


def test_other_tenants_export_ids_are_not_found(api: tuple[Any, ApiWorld]) -> None:
    client, world = api
    mine = finished_export(client, world, _export(client, world, table="churn_scores", **JANUARY).json()["id"])
    for path in (f"/v1/exports/{mine['id']}", f"/v1/exports/{mine['id']}/download", "/v1/exports/exp_nothing"):
        refused = client.get(path, headers=world.auth("other"))
        assert refused.status_code == 404, (path, refused.text)
        assert refused.json()["error"]["code"] == "export_not_found"
        assert world.tenant_a not in refused.text
    listed = client.get("/v1/exports", headers=world.auth("other")).json()
    assert mine["id"] not in {e["id"] for e in listed}
    assert mine["id"] in {e["id"] for e in client.get("/v1/exports", headers=world.auth("own")).json()}


def test_bad_input_is_422_with_the_field_and_writes_nothing(api: tuple[Any, ApiWorld]) -> None:
    client, world = api
    registry = get_registry(world.settings)
    registry.set_module_settings(ADMIN, world.tenant_a, "data_export", {"formats": ["parquet"]})
    try:
        before, files = _export_count(world), _export_files(world)
        cases = [
            ({"table": "raw_events", "format": "parquet", **JANUARY}, ["table"]),
            ({"table": "churn_scores", "format": "parquet", "start": "2026-02-01", "end": "2026-01-01"}, ["end"]),
            ({"table": "churn_scores", "format": "parquet", "start": "2026-13-01", "end": "2026-01-01"}, ["start"]),
            ({"table": "churn_scores", "format": "csv", **JANUARY}, ["format"]),
            ({"table": "churn_scores", "format": "xlsx", **JANUARY}, ["format"]),
            ({"table": "churn_scores", "format": "parquet", "start": "2020-01-01", "end": "2026-01-01"}, ["end"]),
        ]
        for body, fields in cases:
            refused = _export(client, world, **body)
            assert refused.status_code == 422, (body, refused.text)
            assert refused.json()["error"]["details"]["fields"] == fields, (body, refused.text)
        assert _export_count(world) == before and _export_files(world) == files
    finally:
        registry.set_module_settings(ADMIN, world.tenant_a, "data_export", {"formats": None})


def test_module_off_is_403(api: tuple[Any, ApiWorld]) -> None:
    client, world = api
    registry = get_registry(world.settings)
    registry.disable_module(ADMIN, world.tenant_b, "data_export")
    try:
        refused = _export(client, world, key="other", table="churn_scores", **JANUARY)
        assert refused.status_code == 403 and refused.json()["error"]["code"] == "module_disabled"
    finally:
        registry.enable_module(ADMIN, world.tenant_b, "data_export")


def test_plan_limits_refuse_with_the_error_shape_and_write_nothing(api: tuple[Any, ApiWorld],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    client, world = api  # tenant B is on the standard plan
    before, files = _export_count(world), _export_files(world)
    monkeypatch.setitem(PLAN_EXPORT_LIMITS, "standard", ExportLimits(per_day=100, max_rows=1))
    too_big = _export(client, world, key="other", table="churn_scores", **JANUARY)  # B has 2 rows
    assert too_big.status_code == 403, too_big.text
    error = too_big.json()["error"]
    assert error["code"] == "quota_exceeded" and error["details"]["max_rows"] == 1 and error["details"]["rows"] == 2
    with get_registry(world.settings).engine.connect() as conn:
        today = conn.execute(sa.select(sa.func.count()).select_from(data_exports)
                             .where(data_exports.c.tenant_id == world.tenant_b)).scalar_one()
    monkeypatch.setitem(PLAN_EXPORT_LIMITS, "standard", ExportLimits(per_day=int(today), max_rows=1000))
    too_many = _export(client, world, key="other", table="churn_scores", **JANUARY)
    assert too_many.status_code == 429, too_many.text
    assert too_many.json()["error"]["code"] == "rate_limited" and int(too_many.headers["Retry-After"]) >= 1
    assert set(too_many.json()) == {"error"}
    assert _export_count(world) == before and _export_files(world) == files
    # tenant A (enterprise) is not limited by the standard plan's figures
    assert _export(client, world, table="churn_scores", **JANUARY).status_code == 202


def test_expiry_deletes_the_files_and_marks_the_exports_expired(api: tuple[Any, ApiWorld]) -> None:
    from shironzi.exports import expire_exports, list_exports

    client, world = api
    done = finished_export(client, world, _export(client, world, table="forecasts", **JANUARY).json()["id"])
    for record in list_exports(world.tenant_a, settings=world.settings):
        finished_export(client, world, record.id)  # nothing still running when the sweep comes
    assert expire_exports(settings=world.settings).expired == 0  # nothing is due yet
    assert _export_files(world)
    result = expire_exports(now=dt.datetime.now(dt.UTC) + dt.timedelta(days=world.settings.export_expiry_days,
                                                                          seconds=1), settings=world.settings)
    assert result.expired >= 1 and result.files_deleted == result.expired
    assert _export_files(world) == []
    status = client.get(f"/v1/exports/{done['id']}", headers=world.auth("own")).json()
    assert status["status"] == "expired" and status["download"] is None
    gone = client.get(f"/v1/exports/{done['id']}/download", headers=world.auth("own"))
    assert gone.status_code == 409 and gone.json()["error"]["code"] == "invalid_state"
