"""The accounting of disclosures: one subject's API reads, batch reads, dashboard views and exports come back
from the audit log alone (pseudonymised), another subject's and another tenant's (same customer id) do not;
an unknown subject is an empty answer and the query itself is audited."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shironzi.audit.disclosures import disclosures, forget_tenant_keys
from shironzi.audit.log import read_audit_events
from shironzi.audit.verify import verify_chains
from shironzi.tenancy.context import TenantContext
from tests.serving._fixtures import (
    A_ONLY_CUSTOMER,
    SHARED_CUSTOMER,
    ApiWorld,
    HealthTenant,
    add_healthcare_tenant,
    build_world,
    isolated_home,
)

Accessed = tuple[ApiWorld, Any, HealthTenant]
APP = str(Path(__file__).resolve().parents[3] / "apps" / "app.py")
OFFICER = TenantContext.admin(actor="test:privacy-officer", purpose="accounting_of_disclosures")


@pytest.fixture(scope="module")
def accessed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Accessed]:
    """Tenant A's shared customer read through every door; A's other customer and B's customer with the
    same id read through the API only."""
    from fastapi.testclient import TestClient
    from streamlit.testing.v1 import AppTest

    from models.export import export_predictions
    from serving.app import create_app

    root = tmp_path_factory.mktemp("disclosures") / "home"
    with isolated_home(root, SHIRONZI_AUDIT_FLUSH_SECONDS="0.2") as settings:
        forget_tenant_keys()
        world = build_world(settings, expired_key=False)
        clinic = add_healthcare_tenant(world)
        with TestClient(create_app(world.settings), raise_server_exceptions=False) as client:
            own, other = world.auth("own"), world.auth("other")
            for path in (f"/v1/customers/{SHARED_CUSTOMER}/churn?source=batch", f"/v1/features/{SHARED_CUSTOMER}",
                         f"/v1/customers/{A_ONLY_CUSTOMER}/churn?source=batch"):
                assert client.get(path, headers=own).status_code == 200, path
            batch = client.post("/v1/churn:batch", headers=own,
                                json={"customer_ids": [SHARED_CUSTOMER, A_ONLY_CUSTOMER], "source": "batch"})
            assert batch.status_code == 200, batch.text
            assert client.get(f"/v1/customers/{SHARED_CUSTOMER}/churn?source=batch", headers=other).status_code == 200
            # the dashboard: tenant A's analyst opens the churn risk page (it lists both of A's customers)
            at = AppTest.from_file(APP, default_timeout=60).run()
            at.text_input(key="api_key_input").input(world.keys["own"])
            at.button[0].click().run()
            at.switch_page("pages/churn_risk.py").run()
            assert not at.exception, [e.value for e in at.exception]
            export_predictions(world.slug_a, "churn_scores", fmt="csv", out=root / "alpha.csv", actor="test:exporter")
            # a patient of a healthcare tenant, read by the clear id its app knows
            patient = client.get(f"/v1/customers/{clinic.patient}/churn?source=batch", headers=world.auth("phi_reader"))
            assert patient.status_code == 200, patient.text
            yield world, client, clinic
        forget_tenant_keys()


def test_a_subjects_disclosures_list_every_door_and_nothing_else(accessed: Accessed) -> None:
    world, _, _ = accessed
    report = disclosures(OFFICER, world.tenant_a, SHARED_CUSTOMER)
    assert report["subject"].startswith("tok_")
    found = {(d["channel"], d["what"]) for d in report["disclosures"]}
    assert found == {
        ("api", "/v1/customers/{customer_id}/churn"),
        ("api", "/v1/features/{customer_id}"),
        ("api", "/v1/churn:batch"),
        ("dashboard", "dashboard:churn_risk"),
        ("export", "export:churn_scores"),
    }
    assert report["by_channel"] == {"api": 3, "dashboard": 1, "export": 1}
    who = {d["channel"]: d["who"] for d in report["disclosures"]}
    assert who["api"].startswith("key:") and who["export"] == "test:exporter"
    assert all(d["when"] and d["purpose"] for d in report["disclosures"])
    # the other customer of A: its own single read, the batch, the dashboard and the export, not X's single reads
    other = disclosures(OFFICER, world.tenant_a, A_ONLY_CUSTOMER)
    assert sorted(d["what"] for d in other["disclosures"] if d["channel"] == "api") == [
        "/v1/churn:batch", "/v1/customers/{customer_id}/churn"]
    # tenant B's customer with the same id: only B's one read, never A's
    b_report = disclosures(OFFICER, world.tenant_b, SHARED_CUSTOMER)
    assert [(d["channel"], d["what"]) for d in b_report["disclosures"]] == [
        ("api", "/v1/customers/{customer_id}/churn")]
    assert b_report["subject"] != report["subject"]


def test_subjects_are_stored_pseudonymised_and_chained(accessed: Accessed) -> None:
    events = read_audit_events()
    stored = [s for subjects in events.column("subjects").to_pylist() if subjects for s in subjects]
    assert stored and all(s.startswith("tok_") for s in stored)
    assert SHARED_CUSTOMER not in stored and A_ONLY_CUSTOMER not in stored
    assert verify_chains().ok


def test_an_unknown_subject_is_an_empty_answer_and_the_query_is_audited(accessed: Accessed) -> None:
    world, _, _ = accessed
    report = disclosures(OFFICER, world.tenant_a, "nobody-at-all")
    assert report["count"] == 0 and report["disclosures"] == []
    queries = read_audit_events(filters=[("action", "=", "disclosures_queried"), ("actor", "=", OFFICER.actor)])
    details = [json.loads(d) for d in queries.column("details").to_pylist()]
    assert {"subject": report["subject"], "found": 0} in [{k: d[k] for k in ("subject", "found")} for d in details]


def test_the_admin_route_answers_and_refuses_bad_input_in_the_error_shape(accessed: Accessed) -> None:
    world, client, _ = accessed
    admin = world.auth("admin")
    answer = client.get("/v1/admin/audit/disclosures", headers=admin,
                        params={"tenant_id": world.slug_a, "subject": SHARED_CUSTOMER})
    assert answer.status_code == 200, answer.text
    assert answer.json()["by_channel"] == {"api": 3, "dashboard": 1, "export": 1}
    bad = client.get("/v1/admin/audit/disclosures", headers=admin,
                     params={"tenant_id": world.slug_a, "subject": SHARED_CUSTOMER,
                             "from": "2026-02-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"})
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "invalid_input"
    tenant_key = client.get("/v1/admin/audit/disclosures", headers=world.auth("own"),
                            params={"tenant_id": world.slug_a, "subject": SHARED_CUSTOMER})
    assert tenant_key.status_code == 403


def test_the_cli_prints_the_accounting(accessed: tuple[ApiWorld, Any], capsys: pytest.CaptureFixture[str]) -> None:
    from shironzi.cli import main

    world, _, _ = accessed
    capsys.readouterr()
    main.run(["audit", "disclosures", "--tenant", world.slug_a, "--subject", SHARED_CUSTOMER, "--json"])
    printed = json.loads(capsys.readouterr().out)
    assert printed["count"] == 5 and printed["by_channel"]["dashboard"] == 1
    with pytest.raises(SystemExit) as exit_info:
        main.run(["audit", "disclosures", "--tenant", "no-such-tenant", "--subject", SHARED_CUSTOMER])
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_a_patients_disclosures_are_found_by_the_clear_id_and_never_name_it(
    accessed: Accessed,
) -> None:
    """The lake and the access events hold a healthcare patient's id PHI-protected; the privacy officer asks
    with the clear id and gets the API read."""
    _, _, clinic = accessed
    report = disclosures(OFFICER, clinic.tenant_id, clinic.patient)
    assert [(d["channel"], d["what"]) for d in report["disclosures"]] == [("api", "/v1/customers/{customer_id}/churn")]
    assert disclosures(OFFICER, clinic.tenant_id, clinic.stored)["subject"] == report["subject"]
    events = read_audit_events(filters=[("tenant_id", "=", clinic.tenant_id)])
    assert clinic.patient not in json.dumps(events.to_pylist(), default=str)
