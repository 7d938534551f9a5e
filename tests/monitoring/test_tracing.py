"""Pipeline spans: one per stage with its tenant ids or tenant count, kept by an in-memory exporter and sent
over OTLP/HTTP (protobuf) to an endpoint the test runs; the trace context crosses a Kafka header."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from monitoring.tracing import configure_tracing, flush_traces, tenant_attributes, tracer
from shironzi.observability import stage, trace_headers, traced_context
from shironzi.settings import Settings


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    configure_tracing(exporter=exporter)
    try:
        yield exporter
    finally:
        configure_tracing(exporter=None, settings=Settings(otel_exporter_otlp_endpoint=None))


def test_stage_spans_carry_tenant_ids_or_the_tenant_count(spans: InMemorySpanExporter) -> None:
    with stage("features:offline", cadence="daily", tenants=["t-b", "t-a"]) as summary:
        summary.rows = 40
    with stage("models:score_churn", tenants=1200):
        pass
    with stage("dbt_build", region="eu-west", tenant="t-z"):
        pass
    by_name = {s.name: s for s in spans.get_finished_spans()}
    features = by_name["features:offline"].attributes
    assert features["shironzi.tenant_ids"] == ("t-a", "t-b") and features["shironzi.tenant_count"] == 2
    assert features["shironzi.rows"] == 40 and features["shironzi.cadence"] == "daily"
    assert by_name["models:score_churn"].attributes["shironzi.tenant_count"] == 1200
    assert "shironzi.tenant_ids" not in by_name["models:score_churn"].attributes
    assert by_name["dbt_build"].attributes["shironzi.tenant_ids"] == ("t-z",)
    many = tenant_attributes({"tenants": [f"t{i}" for i in range(500)]})
    assert many == {"shironzi.tenant_count": 500}


def test_a_failed_stage_span_records_the_error(spans: InMemorySpanExporter) -> None:
    with pytest.raises(ValueError), stage("models:train_churn"):
        raise ValueError("no labels")
    (span,) = [s for s in spans.get_finished_spans() if s.name == "models:train_churn"]
    assert not span.status.is_ok and span.events[0].name == "exception"


def test_the_trace_context_crosses_a_message_header(spans: InMemorySpanExporter) -> None:
    with tracer().start_as_current_span("POST /v1/events") as api:
        headers = trace_headers()
    assert headers["traceparent"].startswith(b"00-")
    with traced_context(headers["traceparent"]), stage("ingest_stream_flush", topic="events"):
        pass
    (flush,) = [s for s in spans.get_finished_spans() if s.name == "ingest_stream_flush"]
    assert flush.context.trace_id == api.get_span_context().trace_id
    assert flush.parent is not None and flush.parent.span_id == api.get_span_context().span_id
    with traced_context(None), stage("ingest_stream_flush", topic="events"):  # no header: a trace of its own
        pass
    assert spans.get_finished_spans()[-1].parent is None


class _Collector(BaseHTTPRequestHandler):
    received: list[Any] = []

    def do_POST(self) -> None:  # noqa: N802
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

        body = self.rfile.read(int(self.headers["Content-Length"]))
        request = ExportTraceServiceRequest()
        request.ParseFromString(body)
        type(self).received.append((self.path, self.headers["Content-Type"], request))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_spans_reach_an_otlp_http_endpoint_as_protobuf() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert configure_tracing(settings=Settings(otel_exporter_otlp_endpoint=endpoint))
        with stage("models:score_churn", tenants=["t-1", "t-2", "t-3"]) as summary:
            summary.rows = 9
        assert flush_traces()
    finally:
        configure_tracing(exporter=None, settings=Settings(otel_exporter_otlp_endpoint=None))
        server.shutdown()
        server.server_close()
    assert _Collector.received, "the OTLP endpoint received nothing"
    path, content_type, request = _Collector.received[-1]
    assert path == "/v1/traces" and content_type == "application/x-protobuf"
    resource = request.resource_spans[0]
    service = {a.key: a.value.string_value for a in resource.resource.attributes}["service.name"]
    assert service == "shironzi-pipelines"
    (span,) = [s for s in resource.scope_spans[0].spans if s.name == "models:score_churn"]
    attributes = {a.key: a.value for a in span.attributes}
    assert attributes["shironzi.tenant_count"].int_value == 3
    assert [v.string_value for v in attributes["shironzi.tenant_ids"].array_value.values] == ["t-1", "t-2", "t-3"]
    assert attributes["shironzi.rows"].int_value == 9
