"""Helpers of the monitoring tests: a monitor server on a free port, and small platform tables."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from shironzi.settings import Settings
from tests._services import free_port, serving_in_thread


@contextmanager
def running_monitor(settings: Settings) -> Iterator[tuple[str, Any]]:
    """The monitor HTTP server in a thread of this process: (its URL, the Monitor)."""
    from monitoring.server import make_server

    port = free_port()
    server, monitor = make_server("127.0.0.1", port, settings=settings)
    with serving_in_thread(server, poll_interval=0.1):
        yield f"http://127.0.0.1:{port}", monitor


def get(url: str) -> tuple[int, str]:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample `name` whose labels include `labels` in an exposition text (None: absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def write_platform_health_tables(settings: Settings, *, today: Any, tenants: tuple[str, str]) -> None:
    """`_platform/alerts` (one open, one resolved) and `_platform/monitoring/anomalies` (two anomalies of the
    first tenant today, one of the second tenant yesterday), shaped as the alerting and detector helpers write."""
    import datetime as dt

    import pyarrow as pa

    from shironzi.lake import append
    from shironzi.lake.paths import platform_uri

    lake = settings.resolved_lake_uri
    fired = dt.datetime.now(dt.UTC)
    append(platform_uri(lake, "alerts"), pa.table({  # the columns of shironzi.alerts.engine's table
        "fingerprint": ["fp-open", "fp-done"], "rule": ["ingest_lag_high", "dbt_test_failures"],
        "severity": ["critical", "warning"], "tenant_id": [None, None], "status": ["firing", "resolved"],
        "started_at": [fired, fired], "summary": ["lag", "tests"],
    }))
    append(platform_uri(lake, "monitoring", "anomalies"), pa.table({  # the columns of monitoring.detector's table
        "tenant_id": [tenants[0], tenants[0], tenants[1]],
        "event_date": [today, today, today - dt.timedelta(days=1)],
        "kind": ["volume_drop", "silent", "volume_spike"],
        "score": [7.5, 9.25, 12.0],
        "expected": [100.0, 100.0, 50.0], "observed": [40.0, 0.0, 300.0],
        "detected_at": [fired, fired, fired],
    }))
