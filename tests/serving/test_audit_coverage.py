"""Audit coverage, generated from the OpenAPI document: every tenant-data route and every admin route leaves
an audit event carrying the call's request id, so new routes are covered (or fail here) automatically."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.serving._fixtures import ApiWorld, openapi_operations, openapi_request

# Destructive admin calls run last, so the calls before them still find their objects.
_LAST = ("offboard", "erasure", "erase", "revoke", "suspend", "rollback", "delete")


def _order(item: tuple[str, str, dict[str, Any]]) -> tuple[int, int, str]:
    method, path, _ = item
    return (method != "get", any(word in path for word in _LAST), f"{path} {method}")


@pytest.mark.integration
def test_every_guarded_route_writes_an_audit_event(client: Any, world: ApiWorld) -> None:
    from shironzi.audit.log import flush_all, read_audit_events

    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    guarded = sorted(
        ((m, p, op) for m, p, op in openapi_operations(schema) if op.get("x-shironzi-auth") in ("tenant", "admin")),
        key=_order,
    )
    assert len(guarded) >= 20, "the document lost operations"
    calls: dict[str, str] = {}
    for method, path, op in guarded:
        who = "admin" if op["x-shironzi-auth"] == "admin" else "own"
        rid = uuid.uuid4().hex
        headers = {**world.auth(who), "X-Request-ID": rid}
        response = client.request(method.upper(), headers=headers, **openapi_request(op, path, components, world))
        assert response.status_code < 500, f"{method.upper()} {path}: {response.status_code} {response.text[:200]}"
        calls[rid] = f"{method.upper()} {path} -> {response.status_code}"
    flush_all()
    audited = set(read_audit_events().column("request_id").to_pylist())
    missing = [call for rid, call in calls.items() if rid not in audited]
    assert not missing, "routes without an audit event:\n" + "\n".join(missing)


@pytest.mark.integration
def test_a_failed_admin_call_is_a_durable_failure_event_and_a_refusal_is_recorded_once(
    client: Any, world: ApiWorld
) -> None:
    from shironzi.audit.log import read_audit_events

    rid = uuid.uuid4().hex
    response = client.delete("/v1/admin/keys/zzzzzzzzzz", headers={**world.auth("admin"), "X-Request-ID": rid})
    assert response.status_code == 404
    # durable: in the table without a flush
    events = [e for e in read_audit_events(flush=False).to_pylist() if e["request_id"] == rid]
    assert [(e["action"], e["outcome"]) for e in events] == [("api_admin_failed", "failure")]

    denied = uuid.uuid4().hex
    assert client.get("/v1/admin/tenants", headers={**world.auth("own"), "X-Request-ID": denied}).status_code == 403
    events = [e for e in read_audit_events().to_pylist() if e["request_id"] == denied]
    assert [(e["action"], e["outcome"]) for e in events] == [("api_access_denied", "denied")]
