"""The production topology as real server processes on loopback ports, for tests/e2e/test_production_topology.py.

`start_topology` starts, each as its own process: PostgreSQL (registry + MLflow backend), the moto S3-protocol
server behind a fault-injecting TCP proxy (the lake in one bucket; MLflow artifacts in another), Redis, an
MLflow tracking server (PostgreSQL backend, S3 artifacts, proxied to clients), a standalone Sail Spark Connect
server, the bundled Kafka-protocol broker, and later the API (2 workers) and the dashboards. Each process gets
exactly its role's settings from `tests/e2e/_topology.py::ROLE_SETTINGS` and its own SHIRONZI_HOME, so
nothing can pass between them through a local directory. The test process plays the `airflow` role: it runs
the pipeline stages.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import sqlalchemy as sa

from shironzi.settings import get_settings
from tests._services import (
    FaultProxy,
    PostgresCluster,
    S3Server,
    fault_proxy,
    free_port,
    postgres_cluster,
    redis_server,
    server_process,
)
from tests.e2e._topology import ROLE_SETTINGS, role_env
from transformations.spark import object_store_env

BIN = Path(sys.executable).parent
LAKE_BUCKET = "topology-lake"
ARTIFACT_BUCKET = "topology-mlflow"


@dataclass
class Topology:
    """The running servers, the settings each role gets, and what the stages found."""

    root: Path
    pg: PostgresCluster
    s3: S3Server
    proxy: FaultProxy
    values: dict[str, str]
    servers: ExitStack
    redis: ExitStack
    mlflow_stack: ExitStack = field(default_factory=ExitStack)
    mlflow_url: str = ""
    mlflow_port: int = 0
    mlflow_env: dict[str, str] = field(default_factory=dict)
    api_url: str = ""
    dashboard_url: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def cli(self) -> str:
        return str(BIN / "shironzi")

    @property
    def lake(self) -> str:
        return self.values["SHIRONZI_LAKE_URI"]

    def home(self, role: str) -> Path:
        return self.root / f"home-{role}"

    def env(self, role: str) -> dict[str, str]:
        """`role`'s process environment: exactly ROLE_SETTINGS[role], with the role's own home."""
        values = {**self.values, "SHIRONZI_HOME": str(self.home(role))}
        return role_env(role, values, os.environ)

    def shironzi(self, role: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """Run `shironzi ARGS` as `role`'s process; returns the completed process (never raises on exit code)."""
        return subprocess.run([str(BIN / "shironzi"), *args], env=self.env(role), capture_output=True, text=True,
                              timeout=timeout, cwd=self.root)

    def lake_keys(self, prefix: str = "") -> list[str]:
        """Every object key under the lake (read straight from the S3 server, not through the proxy)."""
        client = self.s3.client()
        lake_prefix = self.lake.split(f"s3://{LAKE_BUCKET}/", 1)[1].rstrip("/") + "/" + prefix
        keys: list[str] = []
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=LAKE_BUCKET, Prefix=lake_prefix):
            keys += [o["Key"] for o in page.get("Contents", [])]
        return keys


def _create_databases(admin_url: str, *names: str) -> dict[str, str]:
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        for name in names:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return {name: admin_url.rsplit("/", 1)[0] + "/" + name for name in names}


@contextmanager
def start_topology(root: Path, s3: S3Server) -> Iterator[Topology]:
    """Every backend server of the topology (the API and dashboards start later, once there is a model)."""
    (root / "logs").mkdir(parents=True, exist_ok=True)
    with ExitStack() as servers, ExitStack() as redis:
        pg = servers.enter_context(postgres_cluster())
        databases = _create_databases(pg.url, "registry", "mlflow")
        lake_bucket, artifact_bucket = s3.create_bucket(LAKE_BUCKET), s3.create_bucket(ARTIFACT_BUCKET)
        proxy = servers.enter_context(fault_proxy(int(s3.endpoint.rsplit(":", 1)[1])))
        through_proxy = {**s3.storage_options(), "AWS_ENDPOINT_URL": proxy.endpoint}
        store_env = object_store_env(through_proxy)
        redis_url = redis.enter_context(redis_server(root / "redis"))
        secrets = root / "secrets"  # one keystore for every process (production: Vault)
        secrets.mkdir(parents=True)
        values = {
            "SHIRONZI_DATABASE_URL": databases["registry"],
            "SHIRONZI_LAKE_URI": f"{lake_bucket}/lake",
            "SHIRONZI_STORAGE_OPTIONS": json.dumps(through_proxy),
            "SHIRONZI_SECRETS_URL": f"file://{secrets}",
            "SHIRONZI_MASTER_KEY": "topology-master-key-not-for-production",
            "SHIRONZI_PLATFORM_KEY": "topology-platform-key-not-for-production",
            "SHIRONZI_REDIS_URL": redis_url,
            "SHIRONZI_ONLINE_STORE_URL": redis_url.rsplit("/", 1)[0] + "/1",
            **{k: store_env[k] for k in ROLE_SETTINGS["spark"]},
        }
        topology = Topology(root=root, pg=pg, s3=s3, proxy=proxy, values=values, servers=servers, redis=redis)

        mlflow_port = free_port()
        values.update({
            "MLFLOW_BACKEND_STORE_URI": databases["mlflow"],
            "MLFLOW_ARTIFACTS_DESTINATION": f"{artifact_bucket}/artifacts",
            "MLFLOW_S3_ENDPOINT_URL": s3.endpoint,  # the artifact store, straight (not through the fault proxy)
            "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{mlflow_port}",
        })
        topology.mlflow_port = mlflow_port
        topology.mlflow_url = values["MLFLOW_TRACKING_URI"]
        topology.mlflow_env = topology.env("mlflow")
        topology.mlflow_stack = servers.enter_context(ExitStack())
        topology.mlflow_stack.enter_context(mlflow_server(topology))

        sail_port = free_port()
        servers.enter_context(server_process(
            [str(BIN / "sail"), "spark", "server", "--ip", "127.0.0.1", "--port", str(sail_port)],
            env={**topology.env("spark"), "RUST_LOG": "error"}, port=sail_port, log=root / "logs" / "sail.log"))
        values["SHIRONZI_SPARK_REMOTE"] = f"sc://127.0.0.1:{sail_port}"

        broker_port = free_port()
        broker_home = topology.home("broker")
        started = subprocess.run([str(BIN / "shironzi"), "broker", "start", "--port", str(broker_port)],
                                 env={**os.environ, "SHIRONZI_HOME": str(broker_home)}, capture_output=True,
                                 text=True, timeout=120)
        assert started.returncode == 0, started.stderr
        servers.callback(subprocess.run, [str(BIN / "shironzi"), "broker", "stop"],
                         env={**os.environ, "SHIRONZI_HOME": str(broker_home)}, capture_output=True, timeout=60)
        values["SHIRONZI_KAFKA_BOOTSTRAP"] = f"127.0.0.1:{broker_port}"
        yield topology


@contextmanager
def mlflow_server(topology: Topology) -> Iterator[str]:
    """`mlflow server` (PostgreSQL backend store, S3 artifacts proxied to clients) on its port."""
    command = [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(topology.mlflow_port),
               "--workers", "2"]
    with server_process(command, env=topology.mlflow_env, port=topology.mlflow_port,
                        log=topology.root / "logs" / "mlflow.log", timeout=180):
        yield topology.mlflow_url


@contextmanager
def acting_as(role: str, topology: Topology) -> Iterator[None]:
    """This (the test) process with `role`'s environment and settings, restored afterwards."""
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(topology.env(role))
    get_settings.cache_clear()
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)
        get_settings.cache_clear()


SEED, DAYS, CUSTOMERS = 3, 60, 300  # the embedded demo test's size: enough history for a churn champion
STREAM_TOPIC = "events"


def run_pipeline(topo: Topology) -> None:
    """The demo's stages against the servers, as the `airflow` role (the stream as its own ingestor process);
    what each returned goes to `topo.facts`."""
    from orchestration.demo import (
        DEMO_TENANTS,
        DemoState,
        build_and_materialize_features,
        build_curated_layer,
        erase_example_subject,
        provision_demo_tenants,
        simulate_and_land_files,
        train_promote_and_score,
    )

    facts = topo.facts
    with acting_as("airflow", topo):
        settings = get_settings()
        settings.ensure_home()
        state = DemoState(settings=settings, seed=SEED, days=DAYS, customers=CUSTOMERS)
        facts["provision"] = provision_demo_tenants(state)
        facts["landing"] = simulate_and_land_files(state)
        produce(topo, STREAM_TOPIC, state.facts["live_simulation"])
        facts["stream_produced"] = state.facts["live_simulation"].events.height + \
            state.facts["live_simulation"].bad_plan.height
        ingest = topo.shironzi("stream_ingestor", "ingest", "stream", "--topic", STREAM_TOPIC, "--until-caught-up")
        assert ingest.returncode == 0, ingest.stderr[-3000:]
        facts["stream_runs"] = _stream_totals(STREAM_TOPIC)
        facts["dbt"] = build_curated_layer(state)
        facts["features"] = build_and_materialize_features(state)
        facts["models"] = train_promote_and_score(state)
        facts["predict"], facts["dashboard"] = _callers(state, exclude=DEMO_TENANTS[0].slug)
        facts["erasure"] = erase_example_subject(state)
        facts["receipt"] = json.loads(Path(state.facts["erasure_receipt"]).read_text())
        facts["state"] = state


def _stream_totals(topic: str) -> dict[str, int]:
    from ingestion.run_log import read_run_log

    runs = read_run_log().filter((pl.col("source_kind") == "stream") & (pl.col("source_name") == topic))
    return {name: int(runs.get_column(name).sum()) for name in ("received", "landed", "quarantined", "duplicates")}


def _callers(state: Any, *, exclude: str) -> tuple[dict[str, str], dict[str, str]]:
    """A churn tenant's read key, one of its customers with online features and another tenant's customer
    it does not have (for the API); a tenant key with its name and another tenant's name (for the dashboards)."""
    from feature_store.online import open_online_store
    from shironzi.tenancy import TenantContext, get_registry

    registry = get_registry()
    directory = registry.tenant_directory(fresh=True)
    excluded = registry.get_tenant(exclude).id
    store = open_online_store()
    try:
        customers = {t: sorted({r.entity_key for r in store.iter_rows(tenant_id=t) if r.entity_key})
                     for t in directory}
    finally:
        store.close()
    churn = [t for t in registry.tenants_with_module("churn_prediction") if t != excluded and customers.get(t)]
    assert churn, "no churn tenant has online features"
    tenant = churn[0]
    other = next(t for t in directory if t != tenant and set(customers.get(t, [])) - set(customers[tenant]))
    foreign = sorted(set(customers[other]) - set(customers[tenant]))[0]
    ctx = TenantContext.admin(actor="topology-test", purpose="production topology test keys")
    _, key = registry.issue_key(ctx, tenant, scopes=["read"], label="topology test")
    viewer = state.api_keys[tenant]
    names = {t: registry.get_tenant(t).name for t in (tenant, other)}
    return ({"tenant": tenant, "key": key, "customer": customers[tenant][-1], "foreign_customer": foreign},
            {"key": viewer, "name": names[tenant], "other_name": names[other]})


def produce(topo: Topology, topic: str, simulation: Any) -> int:
    """Produce `simulation`'s events (bad copies included) to `topic` on the broker; returns how many."""
    from ingestion.stream import ensure_topic, make_sink
    from ingestion.synthetic import iter_payload_batches

    bootstrap = topo.values["SHIRONZI_KAFKA_BOOTSTRAP"]
    ensure_topic(bootstrap, topic, partitions=2)
    sent = 0
    with make_sink("confluent", bootstrap) as sink:
        for batch in iter_payload_batches(simulation):
            for key, value in zip(batch.keys, batch.values, strict=True):
                sink.produce(topic, key, value)
                sent += 1
        sink.flush()
    return sent


def fault_simulation(topo: Topology, name: str, *, seed: int, fmt: str) -> tuple[Any, set[str]]:
    """A small fresh slice of events for the demo tenants (no bad records; event ids carry the seed):
    as landing files under the airflow home (`fmt="landing"`: returns the directory) or as the simulation
    itself (`fmt="payloads"`), with the set of its event ids."""
    from datetime import UTC, datetime, timedelta

    from ingestion.synthetic import simulate, write_landing_files
    from shironzi.tenancy import get_registry

    with acting_as("airflow", topo):
        directory = get_registry().tenant_directory(fresh=True)
        tenants = sorted((t, info.industry) for t, info in directory.items() if info.status == "active")
        start = (datetime.now(UTC) - timedelta(days=4)).date()
        sim = simulate(tenants, customers=60, days=3, start=start, seed=seed)
        ids = set(sim.events.get_column("event_id").to_list())
        if fmt == "payloads":
            return sim, ids
        landing = topo.home("airflow") / name
        write_landing_files(sim, landing, fmt="jsonl", file_per="day")
        return landing, ids
