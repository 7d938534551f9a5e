"""Structured logging: every stage logs one summary line with rows, seconds and table version.

The summary line is also the one hook for metrics and traces: installed packages register stage observers
under the `shironzi.stage_observers` entry point (`monitoring` turns each summary into Prometheus metrics and
an OpenTelemetry span), so no stage is edited to be measured and the kernel imports none of them.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

STAGE_LOGGER = "shironzi.stage"
STAGE_OBSERVERS_GROUP = "shironzi.stage_observers"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record.created)),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        payload.update(getattr(record, "fields", {}))
        return json.dumps(payload, default=str)


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Install one stderr handler on the `shironzi` logger (idempotent)."""
    logger = logging.getLogger("shironzi")
    logger.setLevel(level.upper())
    if any(getattr(h, "_shironzi", False) for h in logger.handlers):
        return
    handler = logging.StreamHandler(sys.stderr)
    handler._shironzi = True  # type: ignore[attr-defined]
    handler.setFormatter(
        JsonFormatter() if fmt == "json" else logging.Formatter("%(levelname)s %(name)s %(message)s")
    )
    logger.addHandler(handler)
    logger.propagate = False


def log_to_file(path: str | os.PathLike[str]) -> None:
    """Send the `shironzi` logs to a JSON-lines file instead of stderr (the demo keeps its console clean)."""
    logger = logging.getLogger("shironzi")
    for handler in list(logger.handlers):
        if getattr(handler, "_shironzi", False):
            logger.removeHandler(handler)
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    handler = logging.FileHandler(path)
    handler._shironzi = True  # type: ignore[attr-defined]
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.propagate = False


@dataclass
class StageSummary:
    """What one stage did; filled in while it runs and logged once when it ends."""

    stage: str
    rows: int = 0
    table_version: int | dict[str, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def as_fields(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "rows": self.rows,
            "seconds": round(self.seconds, 3),
            "table_version": self.table_version,
            **self.extra,
        }


def log_stage_summary(summary: StageSummary) -> None:
    logging.getLogger(STAGE_LOGGER).info("stage finished", extra={"fields": summary.as_fields()})


StageObserver = Callable[[StageSummary], AbstractContextManager[Any]]


@functools.cache
def stage_observers() -> tuple[StageObserver, ...]:
    """The installed observers (`shironzi.stage_observers` entry points), loaded once per process."""
    found: list[StageObserver] = []
    for ep in sorted(entry_points(group=STAGE_OBSERVERS_GROUP), key=lambda e: e.name):
        try:
            found.append(ep.load())
        except ImportError as exc:  # its extra is not installed: the stage is only logged
            logging.getLogger("shironzi.observability").debug("stage observer %s unavailable: %s", ep.name, exc)
    return tuple(found)


class _Guarded(AbstractContextManager[Any]):
    """An observer that fails never fails the stage it watches (metrics are not worth a lost commit)."""

    def __init__(self, inner: AbstractContextManager[Any]) -> None:
        self.inner = inner

    def __enter__(self) -> Any:
        return self.inner.__enter__()

    def __exit__(self, *exc: Any) -> None:
        try:
            self.inner.__exit__(*exc)
        except Exception as raised:  # noqa: BLE001 - see the class docstring
            if raised is not exc[1]:  # the stage's own error, handed back, is not the observer's
                logging.getLogger("shironzi.observability").warning("stage observer failed", exc_info=True)


def _observe(summary: StageSummary, stack: ExitStack) -> None:
    for observer in stage_observers():
        try:
            stack.enter_context(_Guarded(observer(summary)))
        except Exception:  # noqa: BLE001 - see _Guarded
            logging.getLogger("shironzi.observability").warning("stage observer failed", exc_info=True)


@contextmanager
def stage(name: str, **extra: Any) -> Iterator[StageSummary]:
    """Time a stage and log its one summary line: `with stage("ingest_batch") as s: s.rows = n`.
    The observers see the finished summary (seconds set) and the stage's exception, if any."""
    summary = StageSummary(stage=name, extra=dict(extra))
    with ExitStack() as observers:
        _observe(summary, observers)
        started = time.perf_counter()
        try:
            yield summary
        finally:
            summary.seconds = time.perf_counter() - started
            log_stage_summary(summary)


TRACEPARENT = "traceparent"


def trace_headers() -> dict[str, bytes]:
    """The current W3C trace context as Kafka message headers (`traceparent`, `tracestate`); empty when
    OpenTelemetry is not installed or no span is active."""
    try:
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:  # pragma: no cover - the serve/monitoring extras bring it
        return {}
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return {key: value.encode("ascii") for key, value in carrier.items()}


@contextmanager
def traced_context(traceparent: bytes | str | None) -> Iterator[None]:
    """Run the block inside the trace context of a message's `traceparent` header, so the stages it runs
    join the trace that produced the message (nothing changes without a header or OpenTelemetry)."""
    if not traceparent:
        yield
        return
    try:
        from opentelemetry import context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
    except ImportError:  # pragma: no cover
        yield
        return
    value = traceparent.decode("ascii", "replace") if isinstance(traceparent, bytes) else traceparent
    token = context.attach(TraceContextTextMapPropagator().extract({TRACEPARENT: value}))
    try:
        yield
    finally:
        context.detach(token)
