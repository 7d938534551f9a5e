"""The monitor process: Pushgateway-protocol pushes (PUT replaces a group, POST adds, DELETE drops), lake figures
from real Delta tables with no tenant id in any label, `/healthz`, clear errors, and the CLI process itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, push_to_gateway, pushadd_to_gateway

from monitoring.server import GROUP_TTL_SECONDS
from shironzi.lake import append, table_version
from shironzi.lake.paths import table_uri
from shironzi.settings import Settings
from tests.monitoring._fixtures import free_port, get, running_monitor, sample


def test_pushes_follow_pushgateway_semantics(settings: Settings) -> None:
    first, second = CollectorRegistry(), CollectorRegistry()
    Counter("job_rows", "rows", registry=first).inc(5)
    Gauge("job_last", "last", registry=second).set(9)
    with running_monitor(settings) as (url, monitor):
        push_to_gateway(url, job="batch", grouping_key={"instance": "host-a/1"}, registry=first)
        pushadd_to_gateway(url, job="batch", grouping_key={"instance": "host-a/1"}, registry=second)
        text = get(url + "/metrics")[1]
        assert sample(text, "job_rows_total", job="batch", instance="host-a/1") == 5
        assert sample(text, "job_last", job="batch", instance="host-a/1") == 9
        push_to_gateway(url, job="batch", grouping_key={"instance": "host-a/1"}, registry=second)  # PUT replaces
        text = get(url + "/metrics")[1]
        assert sample(text, "job_rows_total", job="batch") is None and sample(text, "job_last", job="batch") == 9
        request = urllib.request.Request(url + "/metrics/job/batch/instance@base64/aG9zdC1hLzE", method="DELETE")
        assert urllib.request.urlopen(request, timeout=5).status == 202
        assert sample(get(url + "/metrics")[1], "job_last") is None
        assert monitor.health()["pushed_groups"] == 0
        push_to_gateway(url, job="batch", grouping_key={"instance": "old"}, registry=second)
        monitor.pushed.pushed_at[(("job", "batch"), ("instance", "old"))] -= GROUP_TTL_SECONDS + 1
        assert sample(get(url + "/metrics")[1], "job_last") is None  # a week idle: forgotten
        assert monitor.health()["pushed_groups"] == 0


def test_bad_pushes_get_one_json_error_and_change_nothing(settings: Settings) -> None:
    with running_monitor(settings) as (url, monitor):
        for path, body in (("/metrics/nojob", b"x 1\n"), ("/metrics/job/a", b"not a metric line {{{\n")):
            request = urllib.request.Request(url + path, data=body, method="POST")
            with pytest.raises(urllib.error.HTTPError) as caught:
                urllib.request.urlopen(request, timeout=5)
            assert caught.value.code == 400
            assert json.loads(caught.value.read())["error"]["code"] == "invalid_input"
        assert monitor.pushed.groups == {}
        assert get(url + "/nothing")[0] == 404


def test_lake_figures_sum_dedicated_tables_without_naming_the_tenant(settings: Settings) -> None:
    lake = settings.resolved_lake_uri
    rows = pa.table({"tenant_id": ["t-secret-1"] * 3, "event_id": ["a", "b", "c"]})
    pooled = table_uri(lake, layer="bronze", table="events", region="eu-west")
    append(pooled, rows)
    append(pooled, rows)
    for tenant in ("t-secret-1", "t-secret-2"):
        append(table_uri(lake, layer="bronze", table="events", region="eu-west", placement="dedicated",
                         tenant_id=tenant), rows)
    with running_monitor(settings) as (url, monitor):
        monitor.lake.scan()
        status, text = get(url + "/metrics")
    assert status == 200
    assert sample(text, "shironzi_lake_table_version", region="eu-west", table="events", placement="pooled") == \
        table_version(pooled)
    assert sample(text, "shironzi_lake_table_files", region="eu-west", table="events", placement="pooled") == 2
    assert sample(text, "shironzi_lake_small_file_ratio", table="events", placement="pooled") == 1.0
    assert sample(text, "shironzi_lake_tables", table="events", placement="dedicated") == 2
    assert sample(text, "shironzi_lake_table_files", table="events", placement="dedicated") == 2
    assert "t-secret" not in text


@pytest.mark.integration
def test_monitor_serve_answers_healthz_and_stops_on_sigterm(home: Path) -> None:
    port = free_port()
    cli = Path(sys.executable).with_name("shironzi")
    process = subprocess.Popen([str(cli), "monitor", "serve", "--port", str(port)],
                               env={**os.environ, "SHIRONZI_HOME": str(home)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                status, body = get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                time.sleep(0.2)
        else:
            pytest.fail("the monitor did not come up")
        assert status == 200 and json.loads(body)["status"] == "ok"
        assert get(f"http://127.0.0.1:{port}/metrics")[0] == 200
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_monitor_serve_refuses_a_taken_port_with_one_line(home: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([str(Path(sys.executable).with_name("shironzi")), "monitor", "serve", "--port",
                                 str(port)], env={**os.environ, "SHIRONZI_HOME": str(home)},
                                capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "cannot listen" in result.stderr
