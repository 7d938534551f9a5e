"""Churn predictions, live (online features -> champion) and batch, strictly within the caller's tenant."""

from __future__ import annotations

from typing import Any

from tests.serving._fixtures import A_MARK, A_ONLY_CUSTOMER, B_ONLY_CUSTOMER, SHARED_CUSTOMER, ApiWorld, TrainedModel


def test_live_churn_uses_the_champion_on_own_features(
    client: Any, world: ApiWorld, trained_model: TrainedModel
) -> None:
    response = client.get(f"/v1/customers/{SHARED_CUSTOMER}/churn", headers=world.auth("own"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert 0.0 <= body["churn_probability"] <= 1.0
    assert body["risk_band"] in {"low", "medium", "high"}
    assert body["model_version"] == trained_model.version and body["source"] == "live"
    assert len(body["top_reasons"]) <= 3 and all(r["label"] for r in body["top_reasons"])

    from feature_store.materialize import get_online_features
    from models.inference import load_churn_predictor

    predictor = load_churn_predictor(settings=world.settings)
    rows = get_online_features(world.tenant_a, [SHARED_CUSTOMER], predictor.feature_names, settings=world.settings)
    expected = predictor.predict(world.tenant_a, rows)[0]
    assert abs(body["churn_probability"] - expected.probability) < 1e-6

    other = client.get(f"/v1/customers/{SHARED_CUSTOMER}/churn", headers=world.auth("other")).json()
    rows_b = get_online_features(world.tenant_b, [SHARED_CUSTOMER], predictor.feature_names, settings=world.settings)
    assert abs(other["churn_probability"] - predictor.predict(world.tenant_b, rows_b)[0].probability) < 1e-6


def test_live_churn_bands_follow_the_tenants_cut_offs(client: Any, world: ApiWorld) -> None:
    """A tenant's `churn_prediction` band cut-offs re-band live scores; the one it leaves unset stays the
    model's per-tenant cut (so an empty override gives the model's band back)."""
    from shironzi.tenancy import TenantContext, get_registry

    def live() -> dict[str, Any]:
        response = client.get(f"/v1/customers/{SHARED_CUSTOMER}/churn", headers=world.auth("own"))
        assert response.status_code == 200, response.text
        return dict(response.json())

    registry, ctx = get_registry(world.settings), TenantContext.admin(actor="test", purpose="band cut-offs")
    model_band = live()["risk_band"]
    try:
        probability = live()["churn_probability"]
        # a calibrated score can be exactly 0.0 (it was in one CI run): the cut-offs must still be ordered
        high = max(probability, 1e-3)
        registry.set_module_settings(ctx, world.tenant_a, "churn_prediction",
                                     {"medium_risk_from": probability / 2, "high_risk_from": high})
        assert live()["risk_band"] == ("high" if probability >= high else "medium")
        registry.set_module_settings(ctx, world.tenant_a, "churn_prediction",
                                     {"medium_risk_from": None, "high_risk_from": min(1.0, probability + 1e-3)})
        assert live()["risk_band"] == ("low" if model_band == "low" else "medium")  # the model's medium cut stays
    finally:
        registry.set_module_settings(ctx, world.tenant_a, "churn_prediction",
                                     {"medium_risk_from": None, "high_risk_from": None})
    assert live()["risk_band"] == model_band


def test_customers_of_another_tenant_are_not_found(client: Any, world: ApiWorld) -> None:
    for source in ("live", "batch"):
        response = client.get(f"/v1/customers/{A_ONLY_CUSTOMER}/churn?source={source}", headers=world.auth("other"))
        assert response.status_code == 404, response.text
        assert world.tenant_a not in response.text and str(A_MARK) not in response.text


def test_tenant_context_features_alone_never_make_a_customer(client: Any, world: ApiWorld) -> None:
    """The world has tenant_context features for both tenants; a made-up id is still not found (live)."""
    from feature_store.materialize import get_online_features
    from models.inference import load_churn_predictor

    names = load_churn_predictor(settings=world.settings).feature_names
    assert any(n.startswith("tenant_context") for n in names), "the champion no longer reads tenant features"
    (row,) = get_online_features(world.tenant_a, ["made-up-id"], names, settings=world.settings)
    assert row["tenant_active_customers_30d"] == 41, "the world lost its tenant-level features"
    for customer in ("made-up-id", f"{world.tenant_b}:{B_ONLY_CUSTOMER}", B_ONLY_CUSTOMER):
        response = client.get(f"/v1/customers/{customer}/churn", headers=world.auth("own"))
        assert response.status_code == 404, response.text
        assert response.json()["error"]["code"] == "customer_not_found"
    body = client.post("/v1/churn:batch", json={"customer_ids": ["made-up-id", SHARED_CUSTOMER]},
                       headers=world.auth("own")).json()
    assert [r["customer_id"] for r in body["results"]] == [SHARED_CUSTOMER] and body["not_found"] == ["made-up-id"]
    only_tenant_view = client.get("/v1/features/made-up-id?features=tenant_context", headers=world.auth("own"))
    assert only_tenant_view.status_code == 404, only_tenant_view.text
    own = client.get(f"/v1/features/{SHARED_CUSTOMER}?features=tenant_context", headers=world.auth("own"))
    assert own.status_code == 200 and own.json()["features"]["tenant_active_customers_30d"] == 41


def test_batch_source_serves_the_latest_batch_score(client: Any, world: ApiWorld) -> None:
    own = client.get(f"/v1/customers/{SHARED_CUSTOMER}/churn?source=batch", headers=world.auth("own")).json()
    other = client.get(f"/v1/customers/{SHARED_CUSTOMER}/churn?source=batch", headers=world.auth("other")).json()
    assert own["churn_probability"] == 0.81 and own["risk_band"] == "high" and own["source"] == "batch"
    assert other["churn_probability"] == 0.11 and str(A_MARK) not in str(other)


def test_churn_batch_scores_many_and_lists_unknown_ids(client: Any, world: ApiWorld) -> None:
    ids = [SHARED_CUSTOMER, A_ONLY_CUSTOMER, B_ONLY_CUSTOMER, "nobody"]
    body = client.post("/v1/churn:batch", json={"customer_ids": ids}, headers=world.auth("own")).json()
    assert [r["customer_id"] for r in body["results"]] == [SHARED_CUSTOMER, A_ONLY_CUSTOMER]
    assert body["not_found"] == [B_ONLY_CUSTOMER, "nobody"]
    batch = client.post("/v1/churn:batch", json={"customer_ids": ids, "source": "batch"},
                        headers=world.auth("other")).json()
    assert [r["customer_id"] for r in batch["results"]] == [SHARED_CUSTOMER, B_ONLY_CUSTOMER]
    assert batch["not_found"] == [A_ONLY_CUSTOMER, "nobody"] and str(A_MARK) not in str(batch)
    too_many = client.post("/v1/churn:batch", json={"customer_ids": [f"c{i}" for i in range(1001)]},
                           headers=world.auth("own"))
    assert too_many.status_code == 422


def test_forecasts_come_from_the_predictions_table(client: Any, world: ApiWorld) -> None:
    body = client.get("/v1/forecasts/revenue", headers=world.auth("own")).json()
    assert body["kpi"] == "revenue" and len(body["points"]) == 28
    assert [p["horizon_day"] for p in body["points"]] == list(range(1, 29))
    assert all(p["yhat_lower"] <= p["yhat"] <= p["yhat_upper"] for p in body["points"])
    other = client.get("/v1/forecasts/revenue", headers=world.auth("other")).json()
    assert other["points"][0]["yhat"] < 1000 and body["points"][0]["yhat"] > 7000
    assert client.get("/v1/forecasts/profit", headers=world.auth("own")).status_code == 422


def test_readyz_reports_model_registry_and_online_store(client: Any, trained_model: TrainedModel) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["model"] == f"ok: {trained_model.version}" and checks["registry"] == "ok"
    assert checks["online_store"] == "ok"
    assert client.get("/healthz").json() == {"status": "ok"}


def test_readyz_is_503_without_a_champion(tmp_path: Any) -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from tests.serving._fixtures import isolated_home

    with isolated_home(tmp_path / "empty") as settings, TestClient(create_app(settings)) as empty:
        response = empty.get("/readyz")
    assert response.status_code == 503
    assert response.json()["status"] == "not_ready" and response.json()["checks"]["model"].startswith("failed")
