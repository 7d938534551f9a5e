"""BOLA matrix generated from the OpenAPI document: every operation is called with its own key, another
tenant's key, a revoked key, an expired key, a read-only key (write operations) and no key. Customer ids
collide across the two tenants; no response to anyone but tenant A carries a byte of A's data."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.serving._fixtures import (
    A_MARK,
    B_ONLY_CUSTOMER,
    ApiWorld,
    customer_requests,
    documented_customer_operations,
    finished_export,
    openapi_operations,
    openapi_request,
)

KINDS = ("own", "other", "revoked", "expired", "read_only", "none")
MADE_UP_CUSTOMER = "cust-nobody-4711"


def _a_bytes(world: ApiWorld) -> list[str]:
    """Strings that only tenant A's data contains."""
    return [world.tenant_a, world.slug_a, str(int(A_MARK)), str(int(A_MARK) + 100)]


def _tenant_a_export(client: Any, world: ApiWorld) -> str:
    """A finished export of tenant A's: the object the export routes name."""
    started = client.post("/v1/exports", headers=world.auth("own"),
                          json={"table": "churn_scores", "start": "2026-01-01", "end": "2026-01-31"})
    assert started.status_code == 202, started.text
    assert finished_export(client, world, started.json()["id"])["status"] == "ready"
    return str(started.json()["id"])


@pytest.mark.integration
def test_bola_matrix_over_every_operation(client: Any, world: ApiWorld) -> None:
    world.objects.setdefault("export_id", _tenant_a_export(client, world))
    schema = client.get("/openapi.json").json()
    components = schema["components"]["schemas"]
    operations = openapi_operations(schema)
    guarded = [(m, p, op) for m, p, op in operations if op.get("x-shironzi-auth") in ("tenant", "admin")]
    assert len(guarded) >= 20, "the document lost operations"
    assert all(op.get("x-shironzi-auth") for _, _, op in operations), "an operation has no auth annotation"
    failures: list[str] = []
    for method, path, op in guarded:
        is_admin = op["x-shironzi-auth"] == "admin"
        writes = op.get("x-shironzi-scope") == "write" or bool(op.get("x-shironzi-write"))
        spec = openapi_request(op, path, components, world)
        for kind in KINDS:
            if kind == "own" and is_admin and writes:
                continue  # admin writes with the admin key change state: Schemathesis and test_admin cover them
            if kind == "read_only" and not writes:
                continue
            auth = "admin" if kind == "own" and is_admin else kind
            response = client.request(method.upper(), headers=world.auth(auth), **spec)
            status, text = response.status_code, response.text
            where = f"{method.upper()} {path} as {kind}: {status} {text[:200]}"
            if kind == "own":
                # a tenant's own object must be served; an admin may also get 404 for a made-up receipt id
                if not (200 <= status < 300 or (is_admin and status == 404)):
                    failures.append(f"own call refused: {where}")
                continue
            if kind in ("revoked", "expired", "none") and status != 401:
                failures.append(f"expected 401: {where}")
            if kind == "read_only" and status != 403:
                failures.append(f"expected 403 scope_denied: {where}")
            if kind == "other":
                has_object = any(p["in"] == "path" and p["name"] in ("customer_id", "export_id")
                                 for p in op.get("parameters", []))
                if (is_admin or has_object) and status not in (403, 404):
                    failures.append(f"cross-tenant call not refused: {where}")
            # request ids and secrets are random hex: one may contain a marker's digits by chance
            scanned = re.sub(r"[0-9a-f]{32,}", "", text)
            leaked = [marker for marker in _a_bytes(world) if marker in scanned]
            if leaked:
                failures.append(f"tenant A data {leaked} leaked: {where}")
            if status in (401, 403, 404):
                assert set(response.json()) == {"error"}, where
    assert not failures, "\n".join(failures)


@pytest.mark.integration
def test_customer_routes_do_not_find_made_up_or_other_tenants_ids(client: Any, world: ApiWorld) -> None:
    """A made-up id and an id that exists only in tenant B are unknown to tenant A on every customer route,
    in every `source`, although tenant A has tenant-level context features (which never make a customer)."""
    operations, components = documented_customer_operations(client)
    failures: list[str] = []
    for method, path, op in operations:
        for customer in (MADE_UP_CUSTOMER, B_ONLY_CUSTOMER):
            for source, spec in customer_requests(op, path, components, world, customer):
                response = client.request(method.upper(), headers=world.auth("own"), **spec)
                where = f"{method.upper()} {path} {customer} {source}: {response.status_code} {response.text[:200]}"
                if spec["json"] is not None:
                    body = response.json()
                    if response.status_code != 200 or body.get("results") or body.get("not_found") != [customer]:
                        failures.append(f"expected 200 with the id in not_found: {where}")
                elif response.status_code != 404 or response.json()["error"]["code"] != "customer_not_found":
                    failures.append(f"expected 404 customer_not_found: {where}")
    assert not failures, "\n".join(failures)
