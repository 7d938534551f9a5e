"""Structured logging: every stage logs one summary line with rows, seconds and table version."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

STAGE_LOGGER = "shironzi.stage"


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


@contextmanager
def stage(name: str, **extra: Any) -> Iterator[StageSummary]:
    """Time a stage and log its one summary line: `with stage("ingest_batch") as s: s.rows = n`."""
    summary = StageSummary(stage=name, extra=dict(extra))
    started = time.perf_counter()
    try:
        yield summary
    finally:
        summary.seconds = time.perf_counter() - started
        log_stage_summary(summary)
