"""The routes apply the tenant's module settings: `churn_prediction` risk-band cut-offs re-band live and batch
scores, `trend_forecast` cuts the forecast to the horizon and sizes its interval to the level; and a change
reaches a running API worker (real uvicorn, settings cached for 300 s) within 2 s."""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shironzi.tenancy import TenantContext, get_registry
from tests._services import free_port, running_api
from tests.serving._fixtures import A_ONLY_CUSTOMER, SHARED_CUSTOMER, ApiWorld, build_world, isolated_home

ADMIN = TenantContext.admin(actor="test", purpose="settings in routes")
PROPAGATION_LIMIT_SECONDS = 2.0


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ApiWorld]]:
    from fastapi.testclient import TestClient

    from serving.app import create_app

    with isolated_home(tmp_path_factory.mktemp("settings-routes") / "home") as settings:
        world = build_world(settings, expired_key=False)
        with TestClient(create_app(settings, load_model=False), raise_server_exceptions=False) as client:
            yield client, world


def _bands(client: Any, world: ApiWorld) -> dict[str, str]:
    body = client.post("/v1/churn:batch", headers=world.auth("own"),
                       json={"customer_ids": [SHARED_CUSTOMER, A_ONLY_CUSTOMER], "source": "batch"}).json()
    return {r["customer_id"]: r["risk_band"] for r in body["results"]}


def _patch(client: Any, world: ApiWorld, module: str, body: dict[str, Any]) -> None:
    response = client.patch(f"/v1/tenant/modules/{module}", json=body, headers=world.auth("own"))
    assert response.status_code == 200, response.text


def test_churn_routes_apply_the_tenants_band_cut_offs(api: tuple[Any, ApiWorld]) -> None:
    client, world = api  # tenant A's batch scores: 0.81 (high by the model) and 0.42 (medium)
    assert _bands(client, world) == {SHARED_CUSTOMER: "high", A_ONLY_CUSTOMER: "medium"}
    _patch(client, world, "churn_prediction", {"medium_risk_from": 0.85, "high_risk_from": 0.95})
    assert _bands(client, world) == {SHARED_CUSTOMER: "low", A_ONLY_CUSTOMER: "low"}
    one = client.get(f"/v1/customers/{SHARED_CUSTOMER}/churn", params={"source": "batch"}, headers=world.auth("own"))
    assert one.json()["risk_band"] == "low" and one.json()["churn_probability"] == 0.81
    _patch(client, world, "churn_prediction", {"medium_risk_from": None, "high_risk_from": 0.4})
    assert _bands(client, world) == {SHARED_CUSTOMER: "high", A_ONLY_CUSTOMER: "high"}
    _patch(client, world, "churn_prediction", {"high_risk_from": None})
    assert _bands(client, world) == {SHARED_CUSTOMER: "high", A_ONLY_CUSTOMER: "medium"}


def test_forecast_route_applies_horizon_and_interval_level(api: tuple[Any, ApiWorld]) -> None:
    client, world = api  # the stored forecast: 28 days, yhat +- 1 as its 80 % interval
    stored = client.get("/v1/forecasts/revenue", headers=world.auth("own")).json()
    assert len(stored["points"]) == 28 and stored["interval_level"] == 0.8
    assert all(abs(p["yhat_upper"] - p["yhat"] - 1) < 1e-9 for p in stored["points"])
    _patch(client, world, "trend_forecast", {"horizon_days": 7, "interval_level": 0.95})
    try:
        shown = client.get("/v1/forecasts/revenue", headers=world.auth("own")).json()
        assert [p["horizon_day"] for p in shown["points"]] == list(range(1, 8)) and shown["interval_level"] == 0.95
        for point in shown["points"]:  # z(0.975) / z(0.9) = 1.5293...
            assert point["yhat_upper"] - point["yhat"] == pytest.approx(1.5293, abs=1e-3)
            assert point["yhat"] - point["yhat_lower"] == pytest.approx(1.5293, abs=1e-3)
        _patch(client, world, "trend_forecast", {"horizon_days": 90, "interval_level": 0.5})
        longer = client.get("/v1/forecasts/revenue", headers=world.auth("own")).json()
        assert len(longer["points"]) == 28  # the model's horizon: no point is made up
        assert longer["points"][0]["yhat_upper"] - longer["points"][0]["yhat"] < 1
    finally:
        _patch(client, world, "trend_forecast", {"horizon_days": None, "interval_level": None})


def _get(port: int, key: str, path: str) -> Any:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        body = response.read()
        assert response.status == 200, body[:300]
        return json.loads(body)
    finally:
        conn.close()


@pytest.mark.integration
def test_band_and_horizon_changes_reach_a_running_worker_within_two_seconds(tmp_path: Path) -> None:
    with isolated_home(tmp_path / "home", SHIRONZI_MODULE_CACHE_TTL_SECONDS="300") as settings:
        world = build_world(settings, expired_key=False)
        key, registry = world.keys["own"], get_registry(settings)
        churn = f"/v1/customers/{A_ONLY_CUSTOMER}/churn?source=batch"
        with running_api(dict(os.environ), port=free_port()) as port:
            assert _get(port, key, churn)["risk_band"] == "medium"  # the worker caches the defaults for 300 s
            assert len(_get(port, key, "/v1/forecasts/revenue")["points"]) == 28
            registry.set_module_settings(ADMIN, world.tenant_a, "churn_prediction", {"high_risk_from": 0.4})
            registry.set_module_settings(ADMIN, world.tenant_a, "trend_forecast", {"horizon_days": 14})
            started = time.monotonic()
            while (_get(port, key, churn)["risk_band"] != "high"
                   or len(_get(port, key, "/v1/forecasts/revenue")["points"]) != 14):
                assert time.monotonic() - started < 10, "the worker never saw the change"
                time.sleep(0.05)
            took = time.monotonic() - started
    assert took <= PROPAGATION_LIMIT_SECONDS, f"the change took {took:.2f} s to reach the worker"
