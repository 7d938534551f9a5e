"""The production topology, proven on loopback: every component is its own server process speaking its real
protocol (PostgreSQL, the moto S3-protocol server, Redis, an MLflow tracking server, a standalone Sail Spark
Connect server, the bundled Kafka-protocol broker, the API with 2 workers, the dashboards), each given exactly
its role's settings (tests/e2e/_topology.py). The demo's stages run once against them; the invariants of the
embedded demo are asserted, then faults are injected into the same servers, one test each."""

from __future__ import annotations

import io
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pyarrow.parquet as pq
import pytest

from benchmarks.dashboard_render import (
    CHROMIUM,
    CHROMIUM_ARGS,
    exception_text,
    running_dashboard,
    sign_in,
    wait_rendered,
)
from tests._services import S3Server, free_port, missing_service, running_api
from tests.e2e._fixtures import ARTIFACT_BUCKET, LAKE_BUCKET, Topology, acting_as, run_pipeline, start_topology
from tests.e2e._topology import ROLE_SETTINGS

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def topology(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> Iterator[Topology]:
    if not Path(CHROMIUM).exists():
        missing_service("chromium is not installed (apt-get install chromium)")
    root = tmp_path_factory.mktemp("topology")
    with start_topology(root, s3) as topo:
        run_pipeline(topo)
        api_port = free_port()
        topo.servers.enter_context(running_api(topo.env("api"), port=api_port, workers=2,
                                               log=root / "logs" / "api.log"))
        topo.api_url = f"http://127.0.0.1:{api_port}"
        topo.dashboard_url = topo.servers.enter_context(
            running_dashboard(free_port(), root / "logs" / "dashboard.log", env=topo.env("dashboard")))
        yield topo


def _predict(topo: Topology) -> httpx.Response:
    who = topo.facts["predict"]
    return httpx.get(f"{topo.api_url}/v1/customers/{who['customer']}/churn",
                     headers={"Authorization": f"Bearer {who['key']}"}, timeout=60)


def test_the_stages_ran_on_the_servers_with_the_demos_invariants(topology: Topology) -> None:
    facts = topology.facts
    assert facts["provision"].rows == 9
    landed = facts["landing"]
    assert landed.rows > 500 and "NOT balanced" not in landed.note, landed.note
    assert facts["dbt"].rows >= 5 and any("fct_tenant_daily_kpis" in k for k in facts["dbt"].versions)
    assert facts["features"].rows > 0
    models = facts["models"]
    assert "churn AUC" in models.note and models.rows > 0, models.note
    # The stream ingestor process: every produced event is accounted for, exactly.
    stream = facts["stream_runs"]
    assert stream["received"] == facts["stream_produced"] > 0
    assert stream["received"] == stream["landed"] + stream["quarantined"] + stream["duplicates"]


def test_the_lake_is_in_the_bucket_and_no_process_wrote_a_local_lake(topology: Topology) -> None:
    keys = topology.lake_keys()
    for part in ("/bronze/events/_delta_log/", "/gold/fct_tenant_daily_kpis/_delta_log/", "/features/",
                 "/predictions/", "_platform/ingest/runs/_delta_log/"):
        assert any(part in k for k in keys), f"no {part} object in s3://{LAKE_BUCKET}"
    artifacts = topology.s3.client().list_objects_v2(Bucket=ARTIFACT_BUCKET).get("KeyCount", 0)
    assert artifacts > 0  # the MLflow server stored the runs' artifacts in its bucket
    for role in ROLE_SETTINGS:
        home = topology.home(role)
        assert not (home / "lake").exists(), f"{role} wrote a local lake under {home}"
        assert not (home / "mlflow").exists(), f"{role} used a local MLflow store under {home}"


def test_a_live_prediction_through_the_two_worker_api_and_no_cross_tenant_read(topology: Topology) -> None:
    response = _predict(topology)
    assert response.status_code == 200, response.text
    body = response.json()
    assert 0.0 <= body["churn_probability"] <= 1.0 and body["risk_band"] in ("low", "medium", "high")
    topology.facts["champion_version"] = body["model_version"]
    who = topology.facts["predict"]
    other = httpx.get(f"{topology.api_url}/v1/customers/{who['foreign_customer']}/churn",
                      headers={"Authorization": f"Bearer {who['key']}"}, timeout=60)
    assert other.status_code == 404, other.text  # another tenant's customer does not exist for this key


def test_a_dashboard_page_in_headless_chromium(topology: Topology) -> None:
    from playwright.sync_api import sync_playwright

    who = topology.facts["dashboard"]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            sign_in(page, topology.dashboard_url, who["key"])
            wait_rendered(page, "overview")
            assert exception_text(page) is None, exception_text(page)
            text = page.inner_text("body")
        finally:
            browser.close()
    assert who["name"] in text and who["other_name"] not in text


def test_the_erasure_is_verified_and_the_s3_objects_hold_no_subject(topology: Topology) -> None:
    erasure = topology.facts["erasure"]
    assert "receipt verified" in erasure.note, erasure.note
    receipt = topology.facts["receipt"]
    assert receipt["verification"]["ok"] and receipt["verification"]["files_scanned"] > 0
    tenant, digests = receipt["tenant_id"], set(receipt["subject_digests"])
    from shironzi.audit.erasure_scan import subject_digest

    client = topology.s3.client()
    holding = []
    for key in topology.lake_keys():
        if key.endswith(".parquet") and "/_delta_log/" not in key:
            table = pq.read_table(io.BytesIO(client.get_object(Bucket=LAKE_BUCKET, Key=key)["Body"].read()))
            if {"tenant_id", "customer_id"} <= set(table.column_names):
                rows = table.select(["tenant_id", "customer_id"]).to_pylist()
                if any(r["tenant_id"] == tenant and subject_digest(tenant, str(r["customer_id"])) in digests
                       for r in rows):
                    holding.append(key)
    assert holding == []
    assert any(a["artifact"].endswith("/holdout.parquet") for a in receipt["artifacts"]), receipt["artifacts"]


# --- faults -------------------------------------------------------------------------------------------------


def _error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def _bronze_event_ids(topo: Topology, wanted: set[str]) -> list[str]:
    """The `wanted` event ids found in every bronze table of the lake (pooled and dedicated), repeats kept."""
    from shironzi.lake import read_polars
    from shironzi.lake.discovery import discover_tables

    with acting_as("airflow", topo):
        found: list[str] = []
        for table in discover_tables(include_platform=False):
            if table.layer == "bronze" and table.name == "events":
                ids = read_polars(table.uri, columns=["event_id"]).get_column("event_id")
                found += [i for i in ids.to_list() if i in wanted]
    return found


def test_the_object_store_stopping_mid_landing_loses_nothing_and_a_rerun_lands_the_rest(topology: Topology) -> None:
    from tests.e2e._fixtures import fault_simulation

    landing, expected = fault_simulation(topology, "landing-fault", seed=91, fmt="landing")
    proxy = topology.proxy
    seen = proxy.connections
    process = subprocess.Popen([topology.cli, "ingest", "batch", str(landing), "--skip-quality"],
                               env=topology.env("airflow"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, cwd=topology.root)
    deadline = time.monotonic() + 120
    while proxy.connections < seen + 2 and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proxy.cut()
    try:
        stdout, stderr = process.communicate(timeout=180)
    finally:
        proxy.restore()
    failed = subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)
    assert failed.returncode == 1, (stdout[-2000:], stderr[-2000:])
    lines = _error_lines(failed)
    assert len(lines) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert "service_unavailable" in lines[0] and "object store" in lines[0], lines[0]

    landed_before = _bronze_event_ids(topology, expected)  # the tables read: the Delta logs are consistent
    assert len(landed_before) == len(set(landed_before)) < len(expected)
    rerun = topology.shironzi("airflow", "ingest", "batch", str(landing), "--skip-quality")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    landed = _bronze_event_ids(topology, expected)
    assert sorted(landed) == sorted(expected)  # exactly the missing rows: every event once


def test_training_with_the_mlflow_server_down_is_one_clear_error_and_serving_keeps_its_champion(
    topology: Topology,
) -> None:
    assert _predict(topology).status_code == 200
    topology.mlflow_stack.close()  # the tracking server stops
    failed = topology.shironzi("airflow", "models", "train", "churn", timeout=300)
    assert failed.returncode == 1, failed.stderr[-3000:]
    lines = _error_lines(failed)
    assert len(lines) == 1 and "Traceback" not in failed.stderr, failed.stderr[-3000:]
    assert lines[0].startswith("error: service_unavailable:") and "MLflow" in lines[0], lines[0]
    time.sleep(3)  # a hot-reload poll of the API workers meets the dead server
    for _ in range(4):  # both workers keep answering with the champion they loaded
        again = _predict(topology)
        assert again.status_code == 200, again.text
        assert again.json()["model_version"] == topology.facts.get("champion_version", again.json()["model_version"])


def test_postgres_restarting_during_a_stream_ingest_loses_and_repeats_nothing(topology: Topology) -> None:
    from ingestion.run_log import read_run_log
    from tests.e2e._fixtures import fault_simulation, produce

    topic = "events-pg-restart"
    first, first_ids = fault_simulation(topology, topic + "-1", seed=92, fmt="payloads")
    second, second_ids = fault_simulation(topology, topic + "-2", seed=93, fmt="payloads")
    produce(topology, topic, first)
    log = (topology.root / "logs" / "ingestor-pg.log").open("w")
    ingestor = subprocess.Popen(
        [topology.cli, "ingest", "stream", "--topic", topic, "--max-batch", "50", "--max-wait-ms", "200"],
        env={**topology.env("stream_ingestor"), "SHIRONZI_STREAM_TENANT_REFRESH_SECONDS": "0.5"},
        stdout=log, stderr=subprocess.STDOUT, cwd=topology.root)
    try:
        _wait_for(lambda: len(_bronze_event_ids(topology, first_ids)) == len(first_ids), what="the first half")
        topology.pg.restart(down_seconds=2.0)  # the ingestor's registry connection dies under it
        time.sleep(1.5)
        produce(topology, topic, second)
        _wait_for(lambda: len(_bronze_event_ids(topology, second_ids)) == len(second_ids), what="the second half")
        assert ingestor.poll() is None, "the ingestor died with the database"
    finally:
        ingestor.terminate()
        ingestor.wait(timeout=60)
        log.close()
    everything = first_ids | second_ids
    landed = _bronze_event_ids(topology, everything)
    assert sorted(landed) == sorted(everything)  # exact: nothing lost, nothing twice
    with acting_as("airflow", topology):
        runs = read_run_log().filter((pl.col("source_kind") == "stream") & (pl.col("source_name") == topic))
    assert runs.get_column("received").sum() == len(everything) == runs.get_column("landed").sum()
    text = (topology.root / "logs" / "ingestor-pg.log").read_text()
    assert "registry unreachable" in text, text[-3000:]  # the restart was seen, and survived


def test_redis_stopping_leaves_the_api_answering_on_in_process_limits(topology: Topology) -> None:
    key = topology.facts["predict"]["key"]
    assert httpx.get(f"{topology.api_url}/v1/tenant", headers={"Authorization": f"Bearer {key}"},
                     timeout=30).status_code == 200
    topology.redis.close()  # Redis stops (rate limits, online store, cache invalidation)
    codes = [httpx.get(f"{topology.api_url}/v1/tenant", headers={"Authorization": f"Bearer {key}"},
                       timeout=30).status_code for _ in range(3)]
    assert codes == [200, 200, 200], codes
    ready = httpx.get(f"{topology.api_url}/readyz", timeout=30).json()
    assert ready["checks"]["rate_limit_store"].startswith("ok: degraded"), ready
    api_log = topology.root / "logs" / "api.log"
    assert "falling back to in-process rate limits" in api_log.read_text()


def _wait_for(check: Any, *, what: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(1.0)

