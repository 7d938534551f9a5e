"""Usage through the API: a tenant's requests are counted per route group, metered, and shown to the admin
(`GET /v1/admin/tenants/{id}/usage`) and to the tenant itself (`usage.month_to_date` of `GET /v1/tenant`),
never to another tenant."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.serving._fixtures import SHARED_CUSTOMER, ApiWorld, build_world, isolated_home

LANDED = {"a": 5, "b": 9}


@pytest.fixture(scope="module")
def metered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ApiWorld]]:
    """An API world (no model needed) whose two tenants have bronze events landed today."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    with isolated_home(tmp_path_factory.mktemp("usage") / "home") as settings:
        world = build_world(settings, expired_key=False, seed_tables=False)
        _land(settings.resolved_lake_uri, {world.tenant_a: LANDED["a"], world.tenant_b: LANDED["b"]})
        with TestClient(create_app(settings), raise_server_exceptions=False) as client:
            yield client, world


def _land(lake: str, counts: dict[str, int]) -> None:
    import pyarrow as pa

    from ingestion.contracts.schema import CANONICAL_SCHEMA
    from shironzi.lake import append, table_uri

    now = datetime.now(UTC)
    rows = [{"tenant_id": t, "event_id": f"{t}-{i}", "customer_id": f"c{i}", "event_type": "order_placed",
             "event_time": now - timedelta(hours=1), "event_date": now.date(), "source": "api",
             "ingested_at": now, "amount": 1.0, "currency": "EUR", "properties": json.dumps({"order_id": str(i)})}
            for t, n in counts.items() for i in range(n)]
    append(table_uri(lake, layer="bronze", table="events", region="eu-west"),
           pa.Table.from_pylist(rows, schema=CANONICAL_SCHEMA), partition_by="event_date")


@pytest.mark.integration
def test_requests_are_metered_per_route_group_and_shown_to_admin_and_tenant(
    metered: tuple[Any, ApiWorld],
) -> None:
    from shironzi.metering.usage import collect_usage

    client, world = metered
    own, other = world.auth("own"), world.auth("other")
    for _ in range(4):
        assert client.get("/v1/tenant", headers=own).status_code == 200
    for _ in range(3):
        assert client.get(f"/v1/features/{SHARED_CUSTOMER}", headers=own).status_code == 200
    assert client.get("/v1/tenant", headers=other).status_code == 200
    services = client.app.state.services
    assert services.usage.flush() == 8  # 4 + 3 of A, 1 of B
    today = datetime.now(UTC).date()
    collect_usage(day=today, settings=world.settings)

    answer = client.get(f"/v1/admin/tenants/{world.tenant_a}/usage",
                        params={"from": today.isoformat(), "to": today.isoformat()}, headers=world.auth("admin"))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["tenant_id"] == world.tenant_a and body["plan"] == "enterprise"
    assert body["totals"]["events_landed"] == LANDED["a"]
    assert (body["totals"]["api_tenant"], body["totals"]["api_features"], body["totals"]["api_requests"]) == (4, 3, 7)
    assert body["totals"]["bytes_bronze"] > 0
    month = body["months"][0]
    assert month["margin"] == pytest.approx(month["plan_price"] - month["cost"]) and month["cost"] > 0
    by_slug = client.get(f"/v1/admin/tenants/{world.slug_b}/usage", headers=world.auth("admin")).json()
    assert by_slug["totals"]["events_landed"] == LANDED["b"] and by_slug["totals"]["api_requests"] == 1

    mine = client.get("/v1/tenant", headers=own).json()["usage"]["month_to_date"]
    assert (mine["events_landed"], mine["api_requests"], mine["days_metered"]) == (LANDED["a"], 7, 1)
    assert mine["start"] == today.replace(day=1).isoformat()
    theirs = client.get("/v1/tenant", headers=other).json()["usage"]["month_to_date"]
    assert (theirs["events_landed"], theirs["api_requests"]) == (LANDED["b"], 1)


@pytest.mark.integration
def test_a_tenant_cannot_read_usage_and_bad_ranges_are_refused(metered: tuple[Any, ApiWorld]) -> None:
    client, world = metered
    for kind in ("own", "other"):  # a tenant key never reaches the admin route, for itself or another tenant
        for tenant in (world.tenant_a, world.tenant_b):
            answer = client.get(f"/v1/admin/tenants/{tenant}/usage", headers=world.auth(kind))
            assert answer.status_code == 403 and world.slug_a not in answer.text
            assert answer.json()["error"]["code"]
    assert client.get(f"/v1/admin/tenants/{world.tenant_a}/usage").status_code == 401
    admin = world.auth("admin")
    reversed_range = client.get(f"/v1/admin/tenants/{world.tenant_a}/usage",
                                params={"from": "2026-05-02", "to": "2026-05-01"}, headers=admin)
    assert reversed_range.status_code == 422 and "before the start" in reversed_range.json()["error"]["message"]
    not_a_date = client.get(f"/v1/admin/tenants/{world.tenant_a}/usage", params={"from": "May"}, headers=admin)
    assert not_a_date.status_code == 422 and "error" in not_a_date.json()
    unknown = client.get("/v1/admin/tenants/nobody-here/usage", headers=admin)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"]
