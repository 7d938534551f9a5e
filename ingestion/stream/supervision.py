"""Supervising long-running stream ingestors: start them detached, see whether they live, measure their lag,
and restart the dead ones (the `stream_supervisor` DAG calls `supervise_ingestors`).

An ingestor started here is `shironzi ingest stream --topic T --worker W --workers N` in its own session,
with a state file `{home}/stream/{topic}-{W}of{N}.json` (pid, started_at, log path). The state file says
which ingestors SHOULD run: `stop_ingestor` removes it, a crash does not.

Lag is measured from the lake, not from Kafka group offsets: per partition, the topic's high watermark
minus the next offset the run log records as landed (`txn` version + 1), so it is exact even on brokers
without consumer groups.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ingestion.bronze import run_log_uri
from ingestion.stream.broker import _CHILDREN, resolve_bootstrap, topic_partitions
from ingestion.stream.broker import _pid_alive as alive
from ingestion.stream.ingestor import partition_app_id
from ingestion.stream.kafka import make_source
from shironzi.errors import InvalidInputError
from shironzi.lake import txn_version
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings

STREAM_DIRNAME = "stream"


@dataclass(frozen=True)
class IngestorSpec:
    """Which partitions of which topic one ingestor owns."""

    topic: str
    worker: int = 0
    workers: int = 1

    def __post_init__(self) -> None:
        if not self.topic or "/" in self.topic:
            raise InvalidInputError(f"invalid topic {self.topic!r}")
        if self.workers < 1 or not 0 <= self.worker < self.workers:
            raise InvalidInputError(f"worker must be in [0, {self.workers}), got {self.worker}")

    @property
    def name(self) -> str:
        return f"{self.topic}-{self.worker}of{self.workers}"


@dataclass
class IngestorStatus:
    """One supervised ingestor: whether its process lives, and its lag per partition (None: unknown)."""

    spec: IngestorSpec
    pid: int | None
    alive: bool
    started_at: str | None = None
    log_path: str | None = None
    lag: dict[int, int] | None = None
    detail: str = ""
    restarted: bool = False

    @property
    def total_lag(self) -> int:
        return sum((self.lag or {}).values())

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["name"] = self.spec.name
        out["total_lag"] = self.total_lag if self.lag is not None else None
        return out


@dataclass
class SupervisionReport:
    """What one supervision pass found and did."""

    ingestors: list[IngestorStatus] = field(default_factory=list)
    max_lag: int = 0

    @property
    def restarted(self) -> list[str]:
        return [s.spec.name for s in self.ingestors if s.restarted]

    @property
    def lagging(self) -> list[str]:
        return [s.spec.name for s in self.ingestors if s.lag is not None and s.total_lag > self.max_lag]

    def as_dict(self) -> dict[str, Any]:
        return {
            "ingestors": [s.as_dict() for s in self.ingestors],
            "restarted": self.restarted,
            "lagging": self.lagging,
            "max_lag": self.max_lag,
        }


def stream_dir(settings: Settings | None = None) -> Path:
    return (settings or get_settings()).home / STREAM_DIRNAME


def _state_path(spec: IngestorSpec, settings: Settings) -> Path:
    return stream_dir(settings) / f"{spec.name}.json"


def _pid_alive(pid: int) -> bool:
    return alive(pid)


def start_ingestor(spec: IngestorSpec, *, settings: Settings | None = None) -> IngestorStatus:
    """Start `shironzi ingest stream` for `spec` as a detached process (a live one is left as is)."""
    settings = settings or get_settings()
    current = ingestor_status(spec, settings=settings, with_lag=False)
    if current.alive:
        return current
    directory = stream_dir(settings)
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / f"{spec.name}.log"
    command = [
        sys.executable, "-c", "from shironzi.cli.main import run; run()",
        "ingest", "stream", "--topic", spec.topic, "--worker", str(spec.worker), "--workers", str(spec.workers),
    ]
    env = {**os.environ, "SHIRONZI_HOME": str(settings.home)}
    with log_path.open("ab") as log:
        process = subprocess.Popen(  # noqa: S603 - our own interpreter and CLI
            command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
            start_new_session=True,
        )
    _CHILDREN[process.pid] = process  # reaped by _pid_alive when it exits (no zombie)
    started_at = datetime.now(UTC).isoformat()
    state = {"pid": process.pid, "started_at": started_at, "log_path": str(log_path), "command": command[3:]}
    _state_path(spec, settings).write_text(json.dumps(state))
    return IngestorStatus(spec, process.pid, True, started_at, str(log_path), detail="started")


def stop_ingestor(spec: IngestorSpec, *, settings: Settings | None = None, timeout_s: float = 5.0) -> bool:
    """Stop a supervised ingestor and forget it (the supervisor will not restart it). True if it ran."""
    settings = settings or get_settings()
    status = ingestor_status(spec, settings=settings, with_lag=False)
    path = _state_path(spec, settings)
    path.unlink(missing_ok=True)
    if not status.alive or status.pid is None:
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(status.pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while _pid_alive(status.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if _pid_alive(status.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(status.pid, signal.SIGKILL)
    return True


def supervised_ingestors(settings: Settings | None = None) -> list[IngestorSpec]:
    """Every ingestor that should run (one state file each)."""
    specs = []
    for path in sorted(stream_dir(settings).glob("*.json")):
        topic, _, owner = path.stem.rpartition("-")
        worker, _, workers = owner.partition("of")
        with contextlib.suppress(ValueError, InvalidInputError):
            specs.append(IngestorSpec(topic, int(worker), int(workers)))
    return specs


def stream_lag(spec: IngestorSpec, *, settings: Settings | None = None) -> dict[int, int]:
    """Per owned partition: records in the topic that the lake does not hold yet."""
    settings = settings or get_settings()
    bootstrap = resolve_bootstrap(settings)
    partitions = [p for p in range(topic_partitions(bootstrap, spec.topic)) if p % spec.workers == spec.worker]
    if not partitions:
        return {}
    uri = run_log_uri(settings)
    landed = {}
    for partition in partitions:
        done = txn_version(uri, partition_app_id(spec.topic, partition))
        landed[partition] = 0 if done is None else done + 1
    with make_source("confluent", bootstrap) as source:
        source.assign(spec.topic, partitions, start_offsets=landed)
        marks = source.high_watermarks()
    return {p: max(0, marks.get(p, 0) - landed[p]) for p in partitions}


def ingestor_status(
    spec: IngestorSpec, *, settings: Settings | None = None, with_lag: bool = True
) -> IngestorStatus:
    """Is the ingestor's process alive, and (with_lag) how far behind is it?"""
    settings = settings or get_settings()
    path = _state_path(spec, settings)
    if not path.exists():
        return IngestorStatus(spec, None, False, detail="not supervised")
    state = json.loads(path.read_text())
    pid = int(state["pid"])
    alive = _pid_alive(pid)
    status = IngestorStatus(
        spec, pid, alive, state.get("started_at"), state.get("log_path"), detail="running" if alive else "dead"
    )
    if with_lag:
        try:
            status.lag = stream_lag(spec, settings=settings)
        except Exception as exc:  # broker down: the lag is unknown, the report says why
            status.detail += f"; lag unknown: {exc}"
    return status


def supervise_ingestors(
    *, settings: Settings | None = None, max_lag: int | None = None, restart: bool = True
) -> SupervisionReport:
    """One supervision pass: restart every dead supervised ingestor, then measure every one's lag."""
    settings = settings or get_settings()
    report = SupervisionReport(max_lag=settings.stream_max_lag if max_lag is None else max_lag)
    with stage("stream_supervisor") as summary:
        for spec in supervised_ingestors(settings):
            status = ingestor_status(spec, settings=settings, with_lag=False)
            if not status.alive and restart:
                status = start_ingestor(spec, settings=settings)
                status.restarted = True
                status.detail = "restarted"
            with contextlib.suppress(Exception):
                status.lag = stream_lag(spec, settings=settings)
            report.ingestors.append(status)
        summary.rows = len(report.ingestors)
        summary.extra.update(restarted=len(report.restarted), lagging=len(report.lagging),
                             lag=_lag_by_topic(report.ingestors))
    return report


def _lag_by_topic(ingestors: list[IngestorStatus]) -> dict[str, dict[int, int]]:
    """Lag per topic and partition (what the monitoring metrics export); unknown lags are left out."""
    out: dict[str, dict[int, int]] = {}
    for status in ingestors:
        if status.lag is not None:
            out.setdefault(status.spec.topic, {}).update(status.lag)
    return out
