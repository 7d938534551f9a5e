"""Admin routes: tenants, modules, keys; every admin write and every failed authentication is durable audit."""

from __future__ import annotations

from typing import Any

from tests.serving._fixtures import SHARED_CUSTOMER, ApiWorld


def _durable_events(action: str) -> list[dict[str, Any]]:
    """Audit rows already committed to the Delta table (no flush: buffered events would not show)."""
    from shironzi.audit.log import read_audit_events

    rows = read_audit_events(filters=[("action", "=", action)], flush=False).to_pylist()
    return rows


def test_tenant_lifecycle_through_the_api_is_audited(client: Any, world: ApiWorld) -> None:
    admin = world.auth("admin")
    created = client.post("/v1/admin/tenants", headers=admin,
                          json={"slug": "gamma-clinic", "name": "Gamma", "industry": "healthcare", "plan": "free"})
    assert created.status_code == 201, created.text
    tenant = created.json()["tenant"]
    key = created.json()["api_key"]
    assert tenant["plan"] == "free" and tenant["modules"] == ["analytics", "dashboards"]
    assert any(e["tenant_id"] == tenant["id"] for e in _durable_events("api_tenant_created"))

    assert client.post("/v1/admin/tenants", headers=admin, json={"slug": "gamma-clinic", "name": "G",
                                                                  "industry": "healthcare"}).status_code == 409
    page = client.get("/v1/admin/tenants?industry=healthcare&limit=1&offset=0", headers=admin).json()
    assert page["total"] == 1 and [t["slug"] for t in page["items"]] == ["gamma-clinic"]
    two = client.get("/v1/admin/tenants?limit=2&offset=1", headers=admin).json()
    assert two["total"] >= 3 and len(two["items"]) == 2
    assert client.get("/v1/admin/tenants/gamma-clinic", headers=admin).json()["id"] == tenant["id"]
    assert client.get("/v1/admin/tenants/t_doesnotexist", headers=admin).status_code == 404

    upgraded = client.patch(f"/v1/admin/tenants/{tenant['id']}", headers=admin, json={"plan": "standard"})
    assert upgraded.status_code == 200 and "churn_prediction" in upgraded.json()["modules"]

    tenant_auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/tenant", headers=tenant_auth).status_code == 200
    assert client.post(f"/v1/admin/tenants/{tenant['id']}/suspend", headers=admin,
                       json={"reason": "unpaid"}).json()["status"] == "suspended"
    suspended = client.get("/v1/tenant", headers=tenant_auth)
    assert suspended.status_code == 403 and suspended.json()["error"]["code"] == "tenant_suspended"
    assert client.post(f"/v1/admin/tenants/{tenant['id']}/resume", headers=admin).json()["status"] == "active"
    assert client.get("/v1/tenant", headers=tenant_auth).status_code == 200
    assert client.post(f"/v1/admin/tenants/{tenant['id']}/offboard", headers=admin).json()["status"] == "offboarding"
    assert client.get("/v1/tenant", headers=tenant_auth).status_code == 403
    actions = {e["action"] for e in _durable_events("api_tenant_suspend") + _durable_events("api_tenant_resume")}
    assert actions == {"api_tenant_suspend", "api_tenant_resume"}
    assert _durable_events("tenant_suspended")  # the registry's own event is in the log too


def test_reserved_slugs_and_control_characters_are_422_in_the_error_shape(client: Any, world: ApiWorld) -> None:
    admin = world.auth("admin")
    for body, said in (
        ({"slug": "admin", "name": "Admin"}, "reserved"),
        ({"slug": "api", "name": "Api"}, "reserved"),
        ({"slug": "nul-co", "name": "Nul\x00Co"}, "control character U+0000"),
        ({"slug": "bidi-co", "name": "Bidi\u202eoC"}, "control character U+202E"),
    ):
        answer = client.post("/v1/admin/tenants", headers=admin, json={**body, "industry": "ecommerce"})
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error["code"] == "invalid_input" and said in error["message"], error
    listed = client.get("/v1/admin/tenants?limit=100", headers=admin).json()["items"]
    assert not {"admin", "api", "nul-co", "bidi-co"} & {t["slug"] for t in listed}


def test_module_gating_answers_403_module_disabled_with_the_module(client: Any, world: ApiWorld) -> None:
    admin = world.auth("admin")
    path = f"/v1/admin/tenants/{world.tenant_b}/modules/churn_prediction"
    assert client.delete(path, headers=admin).json()["modules"].count("churn_prediction") == 0
    try:
        gated = client.get(f"/v1/customers/{SHARED_CUSTOMER}/churn?source=batch", headers=world.auth("other"))
        assert gated.status_code == 403
        error = gated.json()["error"]
        assert error["code"] == "module_disabled" and "churn_prediction" in error["message"]
        assert error["details"]["module"] == "churn_prediction"
        batch = client.post("/v1/churn:batch", json={"customer_ids": [SHARED_CUSTOMER]}, headers=world.auth("other"))
        assert batch.status_code == 403 and batch.json()["error"]["code"] == "module_disabled"
        refused = client.delete(f"/v1/admin/tenants/{world.tenant_b}/modules/analytics", headers=admin)
        assert refused.status_code == 409 and refused.json()["error"]["code"] == "module_dependency"
    finally:
        assert client.put(path, headers=admin).status_code == 200
    assert client.get(f"/v1/customers/{SHARED_CUSTOMER}/churn?source=batch",
                      headers=world.auth("other")).status_code == 200
    assert any(e["tenant_id"] == world.tenant_b for e in _durable_events("api_module_disabled"))


def test_keys_are_issued_listed_and_revoked(client: Any, world: ApiWorld) -> None:
    admin = world.auth("admin")
    issued = client.post(f"/v1/admin/tenants/{world.slug_a}/keys", headers=admin,
                         json={"scopes": ["read"], "label": "dashboard"})
    assert issued.status_code == 201
    plaintext, prefix = issued.json()["api_key"], issued.json()["key"]["prefix"]
    auth = {"Authorization": f"Bearer {plaintext}"}
    assert client.get("/v1/tenant", headers=auth).status_code == 200
    listed = client.get(f"/v1/admin/tenants/{world.tenant_a}/keys", headers=admin).json()
    assert prefix in [k["prefix"] for k in listed] and plaintext not in str(listed)
    assert client.delete(f"/v1/admin/keys/{prefix}", headers=admin).json()["revoked_at"] is not None
    assert client.get("/v1/tenant", headers=auth).json()["error"]["code"] == "key_revoked"
    assert client.delete(f"/v1/admin/keys/{prefix}", headers=admin).status_code == 409
    past = client.post(f"/v1/admin/tenants/{world.slug_a}/keys", headers=admin,
                       json={"scopes": ["read"], "expires_at": "2001-01-01T00:00:00Z"})
    assert past.status_code == 422 and past.json()["error"]["code"] == "invalid_input"
    assert sum(prefix in e["details"] for e in _durable_events("api_key_revoked")) >= 1


def test_failed_authentications_are_durable_audit_events(client: Any, world: ApiWorld) -> None:
    before = len(_durable_events("api_auth_failed"))
    client.get("/v1/tenant", headers=world.auth("revoked"))
    client.get("/v1/tenant")
    after = _durable_events("api_auth_failed")
    assert len(after) == before + 2
    revoked = [e for e in after if e["tenant_id"] == world.tenant_a and "key_revoked" in e["details"]]
    assert revoked and revoked[-1]["outcome"] == "denied"


def test_tenant_data_reads_are_audited_for_the_access_report(client: Any, world: ApiWorld) -> None:
    assert client.get(f"/v1/features/{SHARED_CUSTOMER}", headers=world.auth("read_only")).status_code == 200
    report = client.get(f"/v1/admin/audit/access?tenant_id={world.slug_a}", headers=world.auth("admin"))
    assert report.status_code == 200
    reads = [e for e in report.json()["events"] if e["action"] == "api_read"
             and e["resource"] == "/v1/features/{customer_id}"]
    assert reads, "the feature read is missing from the tenant's access report"
    inventory = client.get(f"/v1/admin/audit/inventory?tenant_id={world.tenant_a}", headers=world.auth("admin"))
    assert inventory.status_code == 200
    assert any("churn_scores" in str(entry) for entry in inventory.json())
    lineage = client.get(f"/v1/admin/audit/lineage?tenant_id={world.tenant_a}", headers=world.auth("admin"))
    assert lineage.status_code == 200 and lineage.json()["tenant_id"] == world.tenant_a


def test_subject_erasure_through_the_api_returns_a_verified_receipt(client: Any, world: ApiWorld) -> None:
    admin = world.auth("admin")
    erased = client.post("/v1/admin/audit/erasures", headers=admin,
                         json={"tenant_id": world.tenant_b, "subject_id": "cust-b-only"})
    assert erased.status_code == 201, erased.text
    receipt = erased.json()
    assert receipt["verification"]["ok"] is True and receipt["signature"]
    check = client.get(f"/v1/admin/audit/erasures/{receipt['request_id']}", headers=admin).json()
    assert check["ok"] is True and check["signature_ok"] is True
    gone = client.get("/v1/features/cust-b-only", headers=world.auth("other"))
    assert gone.status_code == 404
    assert client.get("/v1/admin/audit/erasures/nope", headers=admin).status_code == 404


def test_receipt_check_looks_up_request_ids_not_files(client: Any, world: ApiWorld, tmp_path: Any,
                                                      monkeypatch: Any) -> None:
    """A request id that names a file or folder of the server's working directory is still just an id: 404,
    not a 500 from reading it (and never a receipt read from a file the caller chose)."""
    (tmp_path / "shironzi").mkdir()
    (tmp_path / "notes").write_text("not a receipt")
    monkeypatch.chdir(tmp_path)
    for name in ("shironzi", "notes"):
        response = client.get(f"/v1/admin/audit/erasures/{name}", headers=world.auth("admin"))
        assert response.status_code == 404, response.text


def test_audit_changes_accepts_only_lake_tables(client: Any, world: ApiWorld) -> None:
    """`?table=` names a lake table; another scheme, another bucket, or a real Delta table outside the lake is
    422 with one line saying what is accepted, before anything is opened."""
    import pyarrow as pa

    from serving.api.routes.admin_audit import TABLE_ACCEPTED
    from shironzi.lake import append

    admin = world.auth("admin")
    outside = world.home / "outside" / "table"
    append(str(outside), pa.table({"tenant_id": ["t_x"], "v": [1]}))
    lake = world.settings.resolved_lake_uri
    for table in ("eu-west/predictions/churn_scores", f"{lake}/eu-west/predictions/churn_scores",
                  f"file://{lake}/eu-west/predictions/churn_scores"):
        ok = client.get("/v1/admin/audit/changes", params={"table": table}, headers=admin)
        assert ok.status_code == 200 and ok.json() and ok.json()[0]["version"] >= 0, (table, ok.text)
    for table in ("file:///etc/passwd", "s3://bucket/x", "/etc/passwd", str(outside), f"file://{outside}",
                  f"{lake}/../outside/table", "eu-west/../../outside/table", "eu-west/gold", f"{lake}-evil/a/b/c",
                  "gs://other-bucket/eu-west/gold/t"):
        refused = client.get("/v1/admin/audit/changes", params={"table": table}, headers=admin)
        assert refused.status_code == 422, (table, refused.text)
        error = refused.json()["error"]
        assert error["code"] == "invalid_input" and error["message"] == TABLE_ACCEPTED and "\n" not in error["message"]
        assert str(world.home) not in refused.text
