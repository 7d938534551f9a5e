"""OpenTelemetry traces of the pipelines: one span per stage, carrying the tenant ids or the tenant count.

The pipelines trace through a tracer provider of their own (like each API app, never the process-global one:
a global SDK provider would also turn on the spans FastAPI emits on its own, which then nest between an API
request's spans), installed once per process with a processor whose exporter can be swapped: OTLP/HTTP when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set, an in-memory exporter in tests, nothing otherwise (no span is made). The kernel's
`shironzi.observability.trace_headers` / `traced_context` carry the W3C context through Kafka headers, so a
stage run under a context extracted from a message (the stream ingestor's bronze commit) joins the trace of
the API call that produced it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanExporter

from shironzi.observability import StageSummary
from shironzi.settings import Settings, get_settings

TRACER_NAME = "shironzi.pipelines"
MAX_TENANT_IDS = 100  # beyond this a span carries the tenant count only
_lock = threading.Lock()


class _SwappableProcessor(SpanProcessor):
    """Delegates to the processor of the current exporter (None: spans are dropped)."""

    def __init__(self) -> None:
        self.current: SpanProcessor | None = None

    def on_start(self, span: Span, parent_context: Any = None) -> None:
        if self.current is not None:
            self.current.on_start(span, parent_context=parent_context)

    def on_end(self, span: ReadableSpan) -> None:
        if self.current is not None:
            self.current.on_end(span)

    def shutdown(self) -> None:
        if self.current is not None:
            self.current.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.current.force_flush(timeout_millis) if self.current is not None else True


_processor: _SwappableProcessor | None = None
_provider: TracerProvider | None = None
_configured_from_settings = False


def otlp_traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of an endpoint given with or without its `/v1/traces` path."""
    return endpoint if endpoint.rstrip("/").endswith("/v1/traces") else endpoint.rstrip("/") + "/v1/traces"


def configure_tracing(
    *, exporter: SpanExporter | None = None, settings: Settings | None = None, batch: bool | None = None
) -> bool:
    """Send pipeline spans to `exporter`, else to the settings' OTLP endpoint; returns whether spans are kept.
    `batch` (default: for OTLP) exports in a background thread instead of at each span's end."""
    global _processor, _provider, _configured_from_settings
    with _lock:
        _configured_from_settings = True
        if exporter is None:
            endpoint = (settings or get_settings()).otel_exporter_otlp_endpoint
            if endpoint:
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

                exporter = OTLPSpanExporter(endpoint=otlp_traces_url(endpoint))
                batch = True if batch is None else batch
        if _processor is None:
            if exporter is None:  # tracing off: the global provider stays the no-op one (spans cost nothing)
                return False
            _processor = _SwappableProcessor()
            _provider = TracerProvider(resource=Resource.create({"service.name": "shironzi-pipelines"}))
            _provider.add_span_processor(_processor)
        previous = _processor.current
        if exporter is None:
            _processor.current = None
        else:
            _processor.current = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
        if previous is not None:
            previous.shutdown()
        return _processor.current is not None


def flush_traces(timeout_millis: int = 10_000) -> bool:
    return _processor.force_flush(timeout_millis) if _processor is not None else True


def tracer() -> trace.Tracer:
    """The pipeline tracer (configured from the settings on first use); a no-op tracer while no exporter is
    configured, so that no span is made (nor becomes the current one) for nothing."""
    if not _configured_from_settings:
        configure_tracing()
    if _provider is None or _processor is None or _processor.current is None:
        return trace.NoOpTracer()
    return _provider.get_tracer(TRACER_NAME)


def tenant_attributes(extra: dict[str, Any]) -> dict[str, Any]:
    """`shironzi.tenant_ids` / `shironzi.tenant_count` from a stage's summary fields (`tenant_id`, `tenant`,
    `tenants` as a list or a count)."""
    single = extra.get("tenant_id") or extra.get("tenant")
    tenants = extra.get("tenants")
    ids: Sequence[str] | None = [str(single)] if isinstance(single, str) else None
    if isinstance(tenants, list | tuple | set | frozenset):
        ids = sorted(str(t) for t in tenants)
    out: dict[str, Any] = {}
    if ids is not None:
        out["shironzi.tenant_count"] = len(ids)
        if len(ids) <= MAX_TENANT_IDS:
            out["shironzi.tenant_ids"] = list(ids)
    elif isinstance(tenants, int) and not isinstance(tenants, bool):
        out["shironzi.tenant_count"] = tenants
    return out


def _attribute(value: Any) -> Any:
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


@contextmanager
def stage_span(summary: StageSummary) -> Iterator[Any]:
    """A span named after the stage, child of the current context; its attributes are set when it ends,
    from the finished summary (rows, seconds, table versions, tenants)."""
    with tracer().start_as_current_span(summary.stage, record_exception=True) as span:
        try:
            yield span
        finally:
            if span.is_recording():
                span.set_attribute("shironzi.stage", summary.stage)
                span.set_attribute("shironzi.rows", int(summary.rows or 0))
                if summary.table_version is not None:
                    span.set_attribute("shironzi.table_version", _attribute(summary.table_version))
                for key, value in tenant_attributes(summary.extra).items():
                    span.set_attribute(key, value)
                for key, value in summary.extra.items():
                    if key not in ("tenant_id", "tenant", "tenants") and isinstance(value, bool | int | float | str):
                        span.set_attribute(f"shironzi.{key}", value)
