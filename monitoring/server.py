"""The monitor process (`shironzi monitor serve`): `/metrics` for Prometheus and `/healthz` for probes.

It serves three things in one exposition:
- what batch processes push to it, speaking the Pushgateway protocol (`PUT|POST|DELETE /metrics/job/<job>
  {/<label>/<value>}`), so one client (`prometheus_client.pushadd_to_gateway`) pushes to it or to a real
  Pushgateway;
- the lake's table versions, file counts and small-file ratios, read every `SHIRONZI_MONITOR_LAKE_SCAN_SECONDS`
  from the Delta logs (table labels are region, layer, table and placement: a dedicated tenant's tables are
  summed into their placement, never labelled with the tenant);
- its own liveness.

It keeps nothing it cannot rebuild: after a restart the lake figures come back with the next scan and the
batch figures with the next push.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from shironzi.errors import InvalidInputError
from shironzi.settings import Settings, get_settings

log = logging.getLogger("shironzi.monitoring.server")

SMALL_FILE_BYTES = 16 * 1024 * 1024  # a data file under this is "small": compaction (optimize) would merge it
MAX_PUSH_BYTES = 16 * 1024 * 1024
GROUP_TTL_SECONDS = 7 * 24 * 3600  # a pushed group (one process's figures) idle this long is forgotten

GroupKey = tuple[tuple[str, str], ...]


# ------------------------------------------------------------------------------------------- pushed metrics


def parse_grouping(path: str) -> GroupKey:
    """`/metrics/job/<job>/<label>/<value>...` -> (("job", job), (label, value), ...); `<label>@base64`
    marks a base64url value (how prometheus_client sends values holding `/`)."""
    parts = path.strip("/").split("/")
    if len(parts) < 3 or parts[0] != "metrics" or parts[1] != "job" or len(parts) % 2 != 1:
        raise InvalidInputError(f"push path must be /metrics/job/<job>{{/<label>/<value>}}, got {path!r}")
    pairs = []
    for name, value in zip(parts[1::2], parts[2::2], strict=True):
        if name.endswith("@base64"):
            name, value = name[: -len("@base64")], base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
        if not name.isidentifier() or not value:
            raise InvalidInputError(f"invalid grouping label {name!r}={value!r}")
        pairs.append((name, value))
    return tuple(pairs)


@dataclass(eq=False)  # hashable by identity: a registry keeps its collectors in a dict
class PushedMetrics:
    """The pushed groups, with Pushgateway semantics: PUT replaces a group, POST replaces the metrics it names."""

    groups: dict[GroupKey, dict[str, Metric]] = field(default_factory=dict)
    pushed_at: dict[GroupKey, float] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def push(self, group: GroupKey, text: str, *, replace: bool) -> int:
        try:
            families = {f.name: f for f in text_string_to_metric_families(text)}
        except ValueError as exc:
            raise InvalidInputError(f"pushed metrics are not in the Prometheus text format: {exc}") from exc
        with self.lock:
            current = {} if replace else dict(self.groups.get(group, {}))
            current.update(families)
            self.groups[group] = current
            self.pushed_at[group] = time.time()
        return len(families)

    def delete(self, group: GroupKey) -> None:
        with self.lock:
            self.groups.pop(group, None)
            self.pushed_at.pop(group, None)

    def collect(self) -> Iterator[Metric]:
        """Each metric name once, its samples from every group carrying the group's labels."""
        merged: dict[str, Metric] = {}
        with self.lock:
            stale = [g for g, when in self.pushed_at.items() if time.time() - when > GROUP_TTL_SECONDS]
            for group in stale:
                self.groups.pop(group, None)
                self.pushed_at.pop(group, None)
            snapshot = [(dict(g), dict(f), self.pushed_at[g]) for g, f in self.groups.items()]
        pushed = GaugeMetricFamily("shironzi_monitor_push_timestamp_seconds", "When a group was last pushed.",
                                   labels=["job", "instance", "pid"])
        for labels, families, when in snapshot:
            pushed.add_metric([labels.get("job", ""), labels.get("instance", ""), labels.get("pid", "")], when)
            for name, family in families.items():
                out = merged.setdefault(name, Metric(name, family.documentation, family.type, family.unit))
                out.samples.extend(
                    Sample(s.name, {**s.labels, **labels}, s.value, s.timestamp, s.exemplar) for s in family.samples
                )
        yield from merged.values()
        yield pushed


# --------------------------------------------------------------------------------------------- lake figures


@dataclass
class TableFigures:
    version: int = -1
    files: int = 0
    small_files: int = 0
    tables: int = 0

    def add(self, version: int, sizes: Iterable[int]) -> None:
        sizes = list(sizes)
        self.version = max(self.version, version)
        self.files += len(sizes)
        self.small_files += sum(1 for s in sizes if s < SMALL_FILE_BYTES)
        self.tables += 1


def scan_lake(settings: Settings) -> dict[tuple[str, str, str, str], TableFigures]:
    """Per (region, layer, table, placement): the highest version, data files and small files of the lake's
    tables (read from the Delta logs; one table open per table, at the scan interval)."""
    from deltalake import DeltaTable

    from shironzi.lake.discovery import discover_tables

    figures: dict[tuple[str, str, str, str], TableFigures] = {}
    for table in discover_tables(settings.resolved_lake_uri, include_audit=True):
        placement = "platform" if table.platform else ("dedicated" if table.tenant_id else "pooled")
        key = (table.region or "_platform", table.layer or "", table.name, placement)
        try:
            dt = DeltaTable(table.uri, storage_options=settings.storage_options or None)
            sizes = dt.get_add_actions(flatten=True).column("size_bytes").to_pylist()
        except Exception as exc:  # noqa: BLE001 - a table mid-creation or unreadable: skipped this scan
            log.debug("lake scan skipped %s: %s", table.relative, exc)
            continue
        figures.setdefault(key, TableFigures()).add(dt.version(), sizes)
    return figures


class LakeCollector:
    """Lake metrics from the last scan; a scrape after the interval triggers the next scan in the background."""

    METRIC_NAMES = frozenset({
        "shironzi_lake_table_version", "shironzi_lake_table_files", "shironzi_lake_small_file_ratio",
        "shironzi_lake_tables", "shironzi_lake_scan_timestamp_seconds",
    })
    LABELS = ["region", "layer", "table", "placement"]

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.figures: dict[tuple[str, str, str, str], TableFigures] = {}
        self.scanned_at: float | None = None
        self.error: str | None = None
        self._scanning = threading.Lock()

    def scan(self) -> None:
        if not self._scanning.acquire(blocking=False):
            return
        try:
            self.figures = scan_lake(self.settings)
            self.error = None
        except Exception as exc:  # noqa: BLE001 - an unreachable lake shows in /healthz, the process stays up
            self.error = f"{type(exc).__name__}: {exc}"
            log.warning("lake scan failed: %s", self.error)
        finally:
            self.scanned_at = time.time()
            self._scanning.release()

    def refresh_if_stale(self) -> None:
        if self.scanned_at is None or time.time() - self.scanned_at >= self.settings.monitor_lake_scan_seconds:
            threading.Thread(target=self.scan, name="shironzi-lake-scan", daemon=True).start()

    def collect(self) -> Iterator[Metric]:
        self.refresh_if_stale()
        version = GaugeMetricFamily("shironzi_lake_table_version", "Latest Delta version (max over a "
                                    "placement's tables).", labels=self.LABELS)
        files = GaugeMetricFamily("shironzi_lake_table_files", "Data files in the current table snapshot.",
                                  labels=self.LABELS)
        ratio = GaugeMetricFamily("shironzi_lake_small_file_ratio",
                                  f"Share of data files under {SMALL_FILE_BYTES // (1024 * 1024)} MiB.",
                                  labels=self.LABELS)
        tables = GaugeMetricFamily("shironzi_lake_tables", "Delta tables behind a series (dedicated tenants' "
                                   "tables are summed).", labels=self.LABELS)
        for key, fig in sorted(self.figures.items()):
            labels = list(key)
            version.add_metric(labels, fig.version)
            files.add_metric(labels, fig.files)
            ratio.add_metric(labels, fig.small_files / fig.files if fig.files else 0.0)
            tables.add_metric(labels, fig.tables)
        yield from (version, files, ratio, tables)
        if self.scanned_at is not None:
            yield GaugeMetricFamily("shironzi_lake_scan_timestamp_seconds", "When the lake was last scanned.",
                                    value=self.scanned_at)


# ----------------------------------------------------------------------------------------------- the server


class Monitor:
    """What the monitor process serves: one registry over the pushed groups and the lake figures."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self.pushed = PushedMetrics()
        self.lake = LakeCollector(self.settings)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.pushed)  # type: ignore[arg-type]
        self.registry.register(self.lake)  # type: ignore[arg-type]
        self.started_at = time.time()

    def health(self) -> dict[str, Any]:
        return {
            "status": "ok",
            "uptime_seconds": round(time.time() - self.started_at, 1),
            "pushed_groups": len(self.pushed.groups),
            "lake_scanned_at": self.lake.scanned_at,
            "lake_error": self.lake.error,
        }


def _handler(monitor: Monitor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "shironzi-monitor"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's signature
            log.debug("%s " + format, self.address_string(), *args)

        def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: int, code: str, message: str) -> None:
            self._answer(status, json.dumps({"error": {"code": code, "message": message}}).encode())

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's names
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._answer(200, generate_latest(monitor.registry), CONTENT_TYPE_LATEST)
            elif path == "/healthz":
                self._answer(200, json.dumps(monitor.health()).encode())
            else:
                self._error(404, "not_found", f"no route {path}")

        def _push(self, *, replace: bool) -> None:
            try:
                group = parse_grouping(self.path.split("?", 1)[0])
                length = int(self.headers.get("Content-Length") or 0)
                if length > MAX_PUSH_BYTES:
                    self._error(413, "payload_too_large", f"pushes are limited to {MAX_PUSH_BYTES} bytes")
                    return
                monitor.pushed.push(group, self.rfile.read(length).decode("utf-8"), replace=replace)
            except (InvalidInputError, UnicodeDecodeError, ValueError) as exc:
                self._error(400, "invalid_input", str(exc))
                return
            self._answer(200, b"")

        def do_PUT(self) -> None:  # noqa: N802
            self._push(replace=True)

        def do_POST(self) -> None:  # noqa: N802
            self._push(replace=False)

        def do_DELETE(self) -> None:  # noqa: N802
            try:
                monitor.pushed.delete(parse_grouping(self.path.split("?", 1)[0]))
            except InvalidInputError as exc:
                self._error(400, "invalid_input", str(exc))
                return
            self._answer(202, b"")

    return Handler


def make_server(host: str, port: int, *, settings: Settings | None = None) -> tuple[ThreadingHTTPServer, Monitor]:
    """A bound monitor server (not yet serving): `server.serve_forever()` runs it."""
    monitor = Monitor(settings)
    server = ThreadingHTTPServer((host, port), _handler(monitor))
    server.daemon_threads = True
    return server, monitor
