"""Prometheus labels (route/method/status/plan, never a tenant id), the model-version gauge, and OpenTelemetry
spans request -> feature lookup -> model predict with the tenant id, checked with an in-memory exporter."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from tests.serving._fixtures import SHARED_CUSTOMER, ApiWorld, TrainedModel


@pytest.fixture(scope="module")
def traced(world: ApiWorld) -> Iterator[tuple[Any, Any]]:
    from fastapi.testclient import TestClient
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from serving.app import create_app

    exporter = InMemorySpanExporter()
    with TestClient(create_app(world.settings, span_exporter=exporter), raise_server_exceptions=False) as client:
        yield client, exporter


def test_a_prediction_is_traced_from_request_to_model(traced: tuple[Any, Any], world: ApiWorld) -> None:
    client, exporter = traced
    exporter.clear()
    response = client.get(f"/v1/customers/{SHARED_CUSTOMER}/churn", headers=world.auth("own"))
    assert response.status_code == 200
    spans = {span.name: span for span in exporter.get_finished_spans()}
    server = spans["GET /v1/customers/{customer_id}/churn"]
    lookup, predict = spans["feature_lookup"], spans["model_predict"]
    assert lookup.parent.span_id == server.context.span_id and predict.parent.span_id == server.context.span_id
    assert {lookup.context.trace_id, predict.context.trace_id} == {server.context.trace_id}
    assert server.attributes["shironzi.tenant_id"] == world.tenant_a
    assert lookup.attributes["shironzi.tenant_id"] == world.tenant_a
    assert server.attributes["http.response.status_code"] == 200
    assert lookup.end_time <= predict.start_time


def test_metrics_label_routes_and_plans_never_tenants(
    traced: tuple[Any, Any], world: ApiWorld, trained_model: TrainedModel
) -> None:
    client, _ = traced
    client.get(f"/v1/customers/{SHARED_CUSTOMER}/churn", headers=world.auth("own"))
    client.get(f"/v1/customers/{SHARED_CUSTOMER}/churn", headers=world.auth("other"))
    client.get("/v1/tenant", headers=world.auth("revoked"))
    text = client.get("/metrics").text
    assert re.search(
        r'shironzi_api_requests_total\{method="GET",route="/v1/customers/\{customer_id\}/churn",status="200"\} [1-9]',
        text,
    )
    assert 'shironzi_api_request_duration_seconds_bucket{le="0.025",method="GET",route="/v1/customers/' in text
    assert 'shironzi_api_plan_requests_total{plan="enterprise"}' in text
    assert 'shironzi_api_plan_requests_total{plan="standard"}' in text
    assert 'shironzi_api_auth_failures_total{code="key_revoked"}' in text
    assert f'shironzi_model_version{{model="shironzi-churn"}} {float(trained_model.version)}' in text
    for secret in (world.tenant_a, world.tenant_b, world.slug_a, world.slug_b, SHARED_CUSTOMER):
        assert secret not in text
    assert "tenant" not in {label for label in re.findall(r"(\w+)=\"", text)}
