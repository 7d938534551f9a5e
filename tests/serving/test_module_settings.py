"""Module settings through the API: admins set any field (PUT with a body), tenants only the tenant-editable
ones (PATCH); bad input is 422 with the field's path and changes nothing; in prod a webhook URL must be https to
a public address; and a change reaches a running API worker (a real uvicorn process) within 2 s although the
worker cached the old settings for 300 s."""

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
from tests.serving._fixtures import ApiWorld, build_world, isolated_home

PROPAGATION_LIMIT_SECONDS = 2.0


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ApiWorld]]:
    """A TestClient over an app without a model (module settings need none) on a fresh world."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    with isolated_home(tmp_path_factory.mktemp("settings") / "home") as settings:
        world = build_world(settings, expired_key=False, seed_tables=False)
        with TestClient(create_app(settings, load_model=False), raise_server_exceptions=False) as client:
            yield client, world


def _put(client: Any, world: ApiWorld, module: str, body: Any, tenant: str | None = None) -> Any:
    return client.put(f"/v1/admin/tenants/{tenant or world.tenant_b}/modules/{module}", json=body,
                      headers=world.auth("admin"))


def _version(world: ApiWorld, tenant: str, module: str) -> int:
    return get_registry(world.settings).module_settings_versioned(tenant, module, fresh=True)[1]


def test_admin_sets_settings_and_bad_input_is_422_with_the_path_and_changes_nothing(
        api: tuple[Any, ApiWorld]) -> None:
    client, world = api
    ok = _put(client, world, "notifications", {"webhook_urls": ["https://hooks.example.com/x"],
                                               "event_types": ["at_risk"]})
    assert ok.status_code == 200, ok.text
    assert ok.json()["settings"]["settings"]["event_types"] == ["at_risk"]
    assert ok.json()["settings"]["version"] == 1
    cases = [
        ({"webhook_urls": ["ftp://hooks.example.com/x"]}, ["notifications.webhook_urls.0"]),
        ({"event_types": ["at_risk", "gossip"]}, ["notifications.event_types.1"]),
        ({"colour": "red"}, ["notifications.colour"]),
        ({"webhook_urls": "https://one.example.com"}, ["notifications.webhook_urls"]),
    ]
    for body, fields in cases:
        response = _put(client, world, "notifications", body)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["details"]["fields"] == fields
        assert response.json()["error"]["code"] == "invalid_input"
    assert _version(world, world.tenant_b, "notifications") == 1  # nothing recorded
    bands = _put(client, world, "churn_prediction", {"medium_risk_from": 0.7, "high_risk_from": 0.5})
    assert bands.status_code == 422 and bands.json()["error"]["details"]["fields"] == ["churn_prediction"]

    # a bad body on a module that is off leaves it off
    assert client.delete(f"/v1/admin/tenants/{world.tenant_b}/modules/data_export",
                         headers=world.auth("admin")).status_code == 200
    refused = _put(client, world, "data_export", {"formats": ["xlsx"]})
    assert refused.status_code == 422 and refused.json()["error"]["details"]["fields"] == ["data_export.formats.0"]
    assert "data_export" not in get_registry(world.settings).modules(world.tenant_b)
    turned_on = _put(client, world, "data_export", {"formats": ["parquet"]})
    assert turned_on.status_code == 200 and "data_export" in turned_on.json()["modules"]
    assert turned_on.json()["settings"]["settings"] == {"formats": ["parquet"]}
    # a module without settings takes no body
    assert _put(client, world, "dashboards", {"x": 1}).status_code == 422


def test_tenants_change_only_the_tenant_editable_fields(api: tuple[Any, ApiWorld]) -> None:
    client, world = api
    path = "/v1/tenant/modules/churn_prediction"
    shown = client.get(path, headers=world.auth("own")).json()
    assert "at_risk_threshold" in shown["tenant_editable"] and "inactivity_days" not in shown["tenant_editable"]
    assert shown["json_schema"]["properties"]["at_risk_threshold"]["x-tenant-editable"] is True

    changed = client.patch(path, json={"at_risk_threshold": 0.8}, headers=world.auth("own"))
    assert changed.status_code == 200, changed.text
    assert changed.json()["settings"]["at_risk_threshold"] == 0.8 and changed.json()["version"] == 1
    admin_only = client.patch(path, json={"inactivity_days": 30, "at_risk_threshold": 0.5},
                              headers=world.auth("own"))
    assert admin_only.status_code == 403
    assert admin_only.json()["error"]["details"]["fields"] == ["churn_prediction.inactivity_days"]
    too_high = client.patch(path, json={"at_risk_threshold": 2}, headers=world.auth("own"))
    assert too_high.status_code == 422
    assert too_high.json()["error"]["details"]["fields"] == ["churn_prediction.at_risk_threshold"]
    assert client.patch(path, json={"at_risk_threshold": 0.5}, headers=world.auth("read_only")).status_code == 403
    assert _version(world, world.tenant_a, "churn_prediction") == 1  # none of the refusals recorded anything
    # the admin may set what the tenant may not; the other tenant's settings never move
    assert _put(client, world, "churn_prediction", {"inactivity_days": 30}, tenant=world.tenant_a).status_code == 200
    assert client.get(path, headers=world.auth("own")).json()["settings"]["inactivity_days"] == 30
    assert client.get(path, headers=world.auth("other")).json()["overrides"] == {}


def test_prod_refuses_webhooks_that_are_not_https_to_a_public_address(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app

    secrets = {"SHIRONZI_ENV": "prod", "SHIRONZI_MASTER_KEY": "m" * 40, "SHIRONZI_PLATFORM_KEY": "p" * 40}
    with isolated_home(tmp_path / "home", **secrets) as settings:
        world = build_world(settings, expired_key=False, seed_tables=False)
        with TestClient(create_app(settings, load_model=False), raise_server_exceptions=False) as client:
            for url in ("http://hooks.example.com/x", "https://127.0.0.1/x", "https://10.1.2.3/x",
                        "https://[::1]/x", "https://169.254.169.254/latest", "https://localhost/x"):
                response = client.patch("/v1/tenant/modules/notifications", json={"webhook_urls": [url]},
                                        headers=world.auth("own"))
                assert response.status_code == 422, url
                assert response.json()["error"]["details"]["fields"] == ["notifications.webhook_urls.0"]
            assert _version(world, world.tenant_a, "notifications") == 0


def _own_settings(port: int, key: str) -> dict[str, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/v1/tenant/modules/trend_forecast", headers={"Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        body = json.loads(response.read())
        assert response.status == 200, body
        return dict(body["settings"])
    finally:
        conn.close()


@pytest.mark.integration
def test_a_change_reaches_a_running_worker_within_two_seconds(tmp_path: Path) -> None:
    with isolated_home(tmp_path / "home", SHIRONZI_MODULE_CACHE_TTL_SECONDS="300") as settings:
        world = build_world(settings, expired_key=False, seed_tables=False)
        key = world.keys["own"]
        with running_api(dict(os.environ), port=free_port()) as port:
            assert _own_settings(port, key)["horizon_days"] == 28  # the worker caches the defaults for 300 s
            ctx = TenantContext.admin(actor="test", purpose="settings propagation")
            get_registry(settings).set_module_settings(ctx, world.tenant_a, "trend_forecast", {"horizon_days": 90})
            started = time.monotonic()
            while _own_settings(port, key)["horizon_days"] != 90:
                assert time.monotonic() - started < 10, "the worker never saw the change"
                time.sleep(0.05)
            took = time.monotonic() - started
    assert took <= PROPAGATION_LIMIT_SECONDS, f"the change took {took:.2f} s to reach the worker"
