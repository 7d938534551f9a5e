"""One error shape everywhere; keys only in the Authorization header; tenant and admin keys kept apart."""

from __future__ import annotations

import re
from typing import Any

import pytest

from serving.app import create_app
from serving.errors import public_details, public_text
from tests._services import free_port
from tests.serving._fixtures import A_MARK, SHARED_CUSTOMER, ApiWorld, build_world, isolated_home


def _error(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}, body
    assert {"code", "message", "request_id"} <= set(body["error"]), body
    assert body["error"]["request_id"] == response.headers["x-request-id"]
    return body["error"]


def test_missing_and_malformed_keys_are_401_in_one_shape(client: Any, world: ApiWorld) -> None:
    assert _error(client.get("/v1/tenant"))["code"] == "unauthenticated"
    assert client.get("/v1/tenant").status_code == 401
    bad = client.get("/v1/tenant", headers={"Authorization": "Bearer shz_nope"})
    assert bad.status_code == 401 and _error(bad)["code"] == "malformed_key"
    basic = client.get("/v1/tenant", headers={"Authorization": f"Basic {world.keys['own']}"})
    assert basic.status_code == 401
    forged = world.keys["own"][:-4] + "AAAA"
    wrong = client.get("/v1/tenant", headers={"Authorization": f"Bearer {forged}"})
    assert wrong.status_code == 401 and _error(wrong)["code"] == "invalid_key"


@pytest.mark.parametrize("param", ["api_key", "token", "key"])
def test_a_key_in_the_query_string_is_refused_even_with_a_good_header(
    client: Any, world: ApiWorld, param: str
) -> None:
    response = client.get(f"/v1/tenant?{param}={world.keys['own']}", headers=world.auth("own"))
    assert response.status_code == 401
    error = _error(response)
    assert error["code"] == "key_in_query"
    assert world.keys["own"] not in response.text


def test_revoked_and_expired_keys_are_401(client: Any, world: ApiWorld) -> None:
    assert _error(client.get("/v1/tenant", headers=world.auth("revoked")))["code"] == "key_revoked"
    assert _error(client.get("/v1/tenant", headers=world.auth("expired")))["code"] == "key_expired"


def test_tenant_and_admin_keys_do_not_cross(client: Any, world: ApiWorld) -> None:
    tenant_on_admin = client.get("/v1/admin/tenants", headers=world.auth("own"))
    assert tenant_on_admin.status_code == 403 and _error(tenant_on_admin)["code"] == "permission_denied"
    admin_on_tenant = client.get("/v1/tenant", headers=world.auth("admin"))
    assert admin_on_tenant.status_code == 403


def test_validation_errors_and_unknown_routes_share_the_shape(client: Any, world: ApiWorld) -> None:
    bad_body = client.post("/v1/churn:batch", json={"customer_ids": []}, headers=world.auth("own"))
    assert bad_body.status_code == 422 and _error(bad_body)["code"] == "invalid_input"
    bad_json = client.post("/v1/events", content=b'{"events": [', headers={**world.auth("own"),
                                                                           "content-type": "application/json"})
    assert bad_json.status_code == 400 and _error(bad_json)["code"] == "invalid_json"
    assert _error(client.get("/v2/nothing"))["code"] == "not_found"
    assert _error(client.delete("/v1/tenant", headers=world.auth("own")))["code"] == "method_not_allowed"


def test_an_unexpected_error_is_a_500_without_traceback(world: ApiWorld) -> None:
    from fastapi.testclient import TestClient

    app = create_app(world.settings, load_model=False)

    def explode() -> None:
        raise RuntimeError("secret-internal-detail at /srv/app.py line 12")

    app.add_api_route("/v1/boom", explode)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        response = test_client.get("/v1/boom")
    assert response.status_code == 500
    error = _error(response)
    assert error["code"] == "internal_error"
    assert "secret-internal-detail" not in response.text and "Traceback" not in response.text


def test_own_tenant_profile_shows_plan_modules_and_usage(client: Any, world: ApiWorld) -> None:
    first = client.get("/v1/tenant", headers=world.auth("own")).json()
    second = client.get("/v1/tenant", headers=world.auth("own")).json()
    assert first["id"] == world.tenant_a and first["plan"] == "enterprise"
    assert "churn_prediction" in first["modules"]
    assert second["usage"]["requests_today"] == first["usage"]["requests_today"] + 1
    assert first["usage"]["active_keys"] >= 3  # own, read-only, write-only (the revoked one does not count)
    assert world.tenant_b not in str(first)


def test_features_need_read_scope_and_return_only_own_values(client: Any, world: ApiWorld) -> None:
    own = client.get(f"/v1/features/{SHARED_CUSTOMER}", headers=world.auth("own"))
    assert own.status_code == 200
    assert any(abs(v - A_MARK) < 200 for v in own.json()["features"].values() if v is not None)
    other = client.get(f"/v1/features/{SHARED_CUSTOMER}", headers=world.auth("other"))
    assert other.status_code == 200
    assert all(v is None or v < 1000 for v in other.json()["features"].values())
    write_only = client.get(f"/v1/features/{SHARED_CUSTOMER}", headers=world.auth("write_only"))
    assert write_only.status_code == 403 and _error(write_only)["code"] == "scope_denied"
    one = client.get(f"/v1/features/{SHARED_CUSTOMER}?features=customer_activity", headers=world.auth("own"))
    assert one.status_code == 200 and 0 < len(one.json()["features"]) < len(own.json()["features"])


def _leaks(text: str, world: ApiWorld, *extra: str) -> list[str]:
    """Paths, hosts and settings of the server that a response text carries."""
    needles = [str(world.home), world.settings.resolved_lake_uri, "SHIRONZI_", *extra]
    found = [n for n in needles if n and n in text]
    found += re.findall(r'"(?:home|path|uri|url|bootstrap|host)"\s*:', text)
    return found


def test_error_responses_never_carry_paths_hosts_or_settings(client: Any, world: ApiWorld, tmp_path: Any) -> None:
    """No broker: event intake is 503 without the home directory; a dead Redis rate-limit store falls back to
    in-process limits, and neither the answer nor /readyz (503 in a home without a champion) shows its host,
    port or a path."""
    from fastapi.testclient import TestClient

    event = {"event_id": "leak-1", "customer_id": SHARED_CUSTOMER, "event_type": "session_started",
             "event_time": "2026-01-05T10:00:00Z", "properties": {"session_id": "s1", "device": "ios"}}
    no_broker = client.post("/v1/events", json={"events": [event]}, headers=world.auth("own"))
    assert no_broker.status_code == 503, no_broker.text
    assert not _leaks(no_broker.text, world), no_broker.text

    port = free_port()
    with isolated_home(tmp_path / "dead-redis", SHIRONZI_REDIS_URL=f"redis://127.0.0.1:{port}/0") as settings:
        dead = build_world(settings, expired_key=False, seed_tables=False)
        with TestClient(create_app(settings, load_model=False), raise_server_exceptions=False) as dead_client:
            limited = dead_client.get("/v1/tenant", headers=dead.auth("own"))
            ready = dead_client.get("/readyz")
    assert limited.status_code == 200, limited.text  # rate limits fell back to in-process buckets
    assert not _leaks(limited.text, dead, "127.0.0.1", str(port)), limited.text
    assert ready.status_code == 503 and not _leaks(ready.text, dead, "127.0.0.1", str(port)), ready.text


def test_error_details_and_messages_are_scrubbed_in_the_one_handler() -> None:
    assert public_details({"home": "/srv/shironzi", "lake_uri": "s3://b/l", "tenant": "acme", "limit_bytes": 10,
                           "where": "/var/lib/x", "hosts": ["db.internal:5432"]}) == {"tenant": "acme",
                                                                                      "limit_bytes": 10}
    text = public_text("broker at kafka-1.internal:9092 down; see /srv/shironzi/broker.json (SHIRONZI_HOME), "
                       "s3://bucket/lake, 10.0.0.7; send keys to /v1/tenant; expired at 2026-01-05T10:00:00+00:00")
    for leak in ("kafka-1.internal", "9092", "/srv/", "SHIRONZI_HOME", "s3://", "10.0.0.7"):
        assert leak not in text, text
    assert "/v1/tenant" in text and "2026-01-05T10:00:00+00:00" in text
