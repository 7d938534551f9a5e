"""Event intake against a real bundled broker: accepted events are produced with an idempotency key,
and oversized bodies, bad JSON, a wrong industry's event types and a foreign tenant id produce nothing."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from tests.serving._fixtures import ApiWorld

pytestmark = pytest.mark.integration
_ids = itertools.count()


@pytest.fixture(scope="module")
def events_client(broker_world: ApiWorld) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from serving.app import create_app

    with TestClient(create_app(broker_world.settings, load_model=False), raise_server_exceptions=False) as c:
        yield c


def _consume_all(bootstrap: str, topic: str) -> list[Any]:
    """Every message on the topic, with headers (read from the beginning of each partition)."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"test-{next(_ids)}",
                         "enable.auto.commit": False, "log_level": 3})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        messages: list[Any] = []
        idle = 0
        while idle < 3:
            batch = consumer.consume(num_messages=1000, timeout=0.5)
            got = [m for m in batch if m.error() is None]
            messages.extend(got)
            idle = 0 if got else idle + 1
        return messages
    finally:
        consumer.close()


def _event(event_id: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "customer_id": "c-1", "event_type": "session_started",
            "event_time": "2026-01-05T10:00:00Z", "properties": {"session_id": "s1", "device": "ios"}, **extra}


def test_events_are_validated_and_produced_with_an_idempotency_key(
    events_client: Any, broker_world: ApiWorld, broker_bootstrap: str
) -> None:
    world = broker_world
    body = {"events": [
        _event("ok-1"),
        _event("ok-2", tenant_id=world.tenant_a, event_type="product_viewed",
               properties={"product_id": "p-1", "category": "shoes", "price": 59.9}),
        _event("foreign-1", tenant_id=world.tenant_b),
        _event("health-1", event_type="appointment_booked", properties={"appointment_id": "a"}),
        _event("ok-1"),
        {"event_id": "broken-1", "customer_id": "c-1"},
    ]}
    response = events_client.post("/v1/events", json=body, headers=world.auth("own"))
    assert response.status_code == 202, response.text
    result = response.json()
    outcomes = {(o["index"], o["event_id"]): o for o in result["results"]}
    reasons = {o["event_id"]: o["reason_code"] for o in result["results"] if not o["accepted"]}
    assert len(outcomes) == 6
    accepted = sorted(o["event_id"] for o in result["results"] if o["accepted"])
    assert result["accepted"] == 2 and result["rejected"] == 4, result
    assert reasons["foreign-1"] == "tenant_mismatch"
    assert reasons["health-1"] == "unknown_event_type"
    assert reasons["broken-1"] == "missing_field"
    assert outcomes[(4, "ok-1")]["reason_code"] == "duplicate_in_request"
    assert all(o["reason"] for o in result["results"] if not o["accepted"])

    messages = _consume_all(broker_bootstrap, world.settings.api_events_topic)
    import json

    produced = {json.loads(m.value())["event_id"]: m for m in messages}
    assert sorted(produced) == accepted == ["ok-1", "ok-2"]
    for event_id, message in produced.items():
        assert message.key() == world.tenant_a.encode()
        assert dict(message.headers())["idempotency-key"] == f"{world.tenant_a}:{event_id}".encode()
        assert json.loads(message.value())["tenant_id"] == world.tenant_a


def test_rejected_requests_produce_nothing(events_client: Any, broker_world: ApiWorld, broker_bootstrap: str) -> None:
    world = broker_world
    topic = world.settings.api_events_topic
    events_client.post("/v1/events", json={"events": [_event("seed-0")]}, headers=world.auth("own"))
    before = len(_consume_all(broker_bootstrap, topic))

    huge = {"events": [_event(f"big-{i}", properties={"session_id": "x" * 2000, "device": "d"})
                       for i in range(600)]}
    too_big = events_client.post("/v1/events", json=huge, headers=world.auth("own"))
    assert too_big.status_code == 413 and too_big.json()["error"]["code"] == "payload_too_large"

    bad_json = events_client.post("/v1/events", content=b'{"events": [{"event_id": ', headers={
        **world.auth("own"), "content-type": "application/json"})
    assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "invalid_json"

    wrong_industry = events_client.post("/v1/events", headers=world.auth("own"), json={"events": [
        _event("edu-1", event_type="lesson_completed", properties={"course_id": "c", "lesson_id": "l"})]})
    assert wrong_industry.status_code == 202
    assert wrong_industry.json()["results"][0]["reason_code"] == "unknown_event_type"
    assert "lesson_completed" in wrong_industry.json()["results"][0]["reason"]

    foreign = events_client.post("/v1/events", headers=world.auth("own"),
                                 json={"events": [_event("f-1", tenant_id=world.tenant_b)]})
    assert foreign.json()["accepted"] == 0 and foreign.json()["results"][0]["reason_code"] == "tenant_mismatch"

    read_only = events_client.post("/v1/events", json={"events": [_event("ro-1")]}, headers=world.auth("read_only"))
    assert read_only.status_code == 403 and read_only.json()["error"]["code"] == "scope_denied"

    assert len(_consume_all(broker_bootstrap, topic)) == before


def test_one_trace_runs_from_the_api_call_to_the_bronze_commit(broker_world: ApiWorld, broker_bootstrap: str) -> None:
    """The API span's W3C context rides in the Kafka headers; the stream ingestor's flush (validate, bronze
    commit, run log) continues that trace."""
    from fastapi.testclient import TestClient
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ingestion.stream.ingestor import StreamOptions, ingest_stream
    from monitoring.tracing import configure_tracing
    from serving.app import create_app
    from shironzi.settings import Settings

    settings = broker_world.settings.model_copy(update={"api_events_topic": "traced-events"})
    exporter = InMemorySpanExporter()
    configure_tracing(exporter=exporter)
    try:
        with TestClient(create_app(settings, load_model=False, span_exporter=exporter)) as client:
            response = client.post("/v1/events", json={"events": [_event("traced-1"), _event("traced-2")]},
                                   headers=broker_world.auth("own"))
        assert response.status_code == 202 and response.json()["accepted"] == 2, response.text
        message = _consume_all(broker_bootstrap, "traced-events")[0]
        assert dict(message.headers())["traceparent"].startswith(b"00-")
        result = ingest_stream(StreamOptions(topic="traced-events", bootstrap=broker_bootstrap, until_caught_up=True),
                               settings=settings)
        assert result.totals.landed == 2
    finally:
        configure_tracing(exporter=None, settings=Settings(otel_exporter_otlp_endpoint=None))
    spans = exporter.get_finished_spans()
    (api,) = [s for s in spans if s.name == "POST /v1/events" and s.instrumentation_scope.name == "shironzi.serving"]
    (flush,) = [s for s in spans if s.name == "ingest_stream_flush"]
    assert flush.context.trace_id == api.context.trace_id
    assert flush.attributes["shironzi.rows"] == 2 and "shironzi.table_version" in flush.attributes
    by_id = {s.context.span_id: s for s in spans}
    ancestors, span = [], flush
    while span.parent is not None and span.parent.span_id in by_id:
        span = by_id[span.parent.span_id]
        ancestors.append(span)
    names = [a.name for a in ancestors]  # flush <- api_event_intake <- ... <- the API's request span
    assert api in ancestors and names.index("api_event_intake") < ancestors.index(api), names
