"""Prometheus metrics, OpenTelemetry tracing and the ASGI middleware that applies both to every request.

Metric labels are route templates, methods, status codes and plans — never a tenant id (cardinality).
Each app gets its own metrics registry and tracer provider, so several apps can live in one process.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from starlette.exceptions import HTTPException

from shironzi.errors import PayloadTooLargeError
from shironzi.settings import Settings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

class BodyTooLargeError(HTTPException):
    """A body that outgrew the cap while being read (chunked, or longer than announced). An HTTPException,
    because FastAPI re-raises those from body parsing (any other error there becomes a 400)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body is larger than {limit} bytes")


LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class ApiMetrics:
    """The API's Prometheus metrics in their own registry.

    With `multiproc_dir` (PROMETHEUS_MULTIPROC_DIR, which `serve api --workers N` sets) every worker writes its
    values to files there, and `/metrics` answers with the sum over all workers, whichever worker serves it."""

    def __init__(self, multiproc_dir: Path | None = None) -> None:
        self.multiproc_dir = multiproc_dir
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "shironzi_api_requests_total",
            "API requests by route template, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "shironzi_api_request_duration_seconds",
            "API request latency by route template and method.",
            ["route", "method"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.plan_requests = Counter(
            "shironzi_api_plan_requests_total",
            "Authenticated tenant requests by plan.",
            ["plan"],
            registry=self.registry,
        )
        self.rate_limited = Counter(
            "shironzi_api_rate_limited_total",
            "Requests refused by the rate limiter, by plan.",
            ["plan"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "shironzi_api_auth_failures_total",
            "Failed authentications by error code.",
            ["code"],
            registry=self.registry,
        )
        self.model_version = Gauge(
            "shironzi_model_version",
            "Version of the model this worker serves (0 when none is loaded).",
            ["model"],
            registry=self.registry,
            multiprocess_mode="max",
        )
        self.model_requests = Counter(
            "shironzi_model_requests_total",
            "Live predictions by model, served version and outcome (ok, error): the canary analysis compares "
            "a rollout's candidate with its baseline on these.",
            ["model", "version", "outcome"],
            registry=self.registry,
        )
        self.model_latency = Histogram(
            "shironzi_model_request_duration_seconds",
            "Live prediction latency (feature lookup + model) by model and served version.",
            ["model", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.events = Counter(
            "shironzi_api_events_total",
            "Events received through POST /v1/events by outcome.",
            ["outcome"],
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        """The `/metrics` body: this worker's registry, or every worker's in multiprocess mode."""
        if self.multiproc_dir is None:
            return generate_latest(self.registry)
        from prometheus_client.multiprocess import MultiProcessCollector

        merged = CollectorRegistry()
        MultiProcessCollector(merged, path=str(self.multiproc_dir))
        return generate_latest(merged)

    def set_model_version(self, model: str, version: str | None) -> None:
        try:
            value = float(version) if version is not None else 0.0
        except ValueError:
            value = 0.0
        self.model_version.labels(model=model).set(value)


def make_tracer(settings: Settings, exporter: Any = None) -> Any:
    """A tracer for the app: spans go to `exporter` (tests: an in-memory one), else to the OTLP endpoint
    in the settings; with neither, a no-op tracer (tracing off costs nothing)."""
    from opentelemetry import trace

    endpoint = settings.otel_exporter_otlp_endpoint
    if exporter is None and not endpoint:
        return trace.NoOpTracer()
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": "shironzi-api"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        assert endpoint is not None
        target = endpoint if endpoint.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=target)))
    return provider.get_tracer("shironzi.serving")


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return bytes(value)
    return None


def _request_id(scope: Scope) -> str:
    given = _header(scope, b"x-request-id")
    if given and 8 <= len(given) <= 64 and given.replace(b"-", b"").isalnum():
        return given.decode("ascii")
    return uuid.uuid4().hex


class ServingMiddleware:
    """Request id, body-size limit, a server span, and the request count/latency metrics (pure ASGI)."""

    def __init__(self, app: ASGIApp, *, metrics: ApiMetrics, tracer: Any, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.tracer = tracer
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = rid
        method = scope.get("method", "GET")
        started = time.perf_counter()
        status_holder = [500]
        limit = self.max_body_bytes
        length = _header(scope, b"content-length")
        too_large = length is not None and length.isdigit() and int(length) > limit
        received = [0]

        async def limited_receive() -> Message:
            message = await receive()
            if message.get("type") == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder[0] = int(message["status"])
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):
                    headers.append((b"x-request-id", rid.encode("ascii")))
                message["headers"] = headers
            await send(message)

        # A request's span continues only the trace its caller sent (W3C traceparent), never whatever span the
        # serving thread happens to have current.
        parent = _incoming_context(scope)
        with self.tracer.start_as_current_span(f"{method} {scope.get('path', '')}", context=parent,
                                               kind=_server_kind()) as span:
            span.set_attribute("http.request.method", method)
            span.set_attribute("shironzi.request_id", rid)
            try:
                if too_large:
                    await _send_too_large(send_with_id, rid, limit)
                else:
                    await self.app(scope, limited_receive, send_with_id)
            finally:
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                span.update_name(f"{method} {template}")
                span.set_attribute("http.route", template)
                span.set_attribute("http.response.status_code", status_holder[0])
                self.metrics.requests.labels(route=template, method=method, status=str(status_holder[0])).inc()
                self.metrics.latency.labels(route=template, method=method).observe(time.perf_counter() - started)


def _server_kind() -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind.SERVER


async def _send_too_large(send: Send, rid: str, limit: int) -> None:
    import json

    body = json.dumps(
        {
            "error": {
                "code": PayloadTooLargeError.code,
                "message": f"request body is larger than {limit} bytes",
                "request_id": rid,
            }
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


def _incoming_context(scope: Scope) -> Any:
    """The trace context the request's own headers carry (an empty context without a `traceparent`)."""
    from opentelemetry.context import Context
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])
               if k.lower() in (b"traceparent", b"tracestate")}
    return TraceContextTextMapPropagator().extract(carrier, context=Context())
