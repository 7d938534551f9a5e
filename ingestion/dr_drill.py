"""The disaster-recovery drill: two regions, each with its own lake, broker, stream ingestor and API process,
a replicator shipping each region's lake to the other, and a steady stream of events throughout.

1. every process of region A that holds its serving state (ingestor, API) is SIGKILLed mid-ingest;
2. `failover(A)`: A's writers are fenced, A's tenants are served from the replica in B, and an ingestor for A's
   topic starts in B on the replica lake, resuming from the Kafka positions in the replica's Delta `txn`s;
3. ingesting and serving go on; 4. A comes back: the replicator ships the outage's commits home;
5. `failback(A)`: the takeover ingestor is fenced, A's own ingestor and API start again.

Then: every produced event is in bronze exactly once, A's tenants got 200s from B's API after the failover,
and no file of any region's lake holds a tenant outside its residency.

The bundled broker keeps its topics in memory, so A's broker is the stand-in for the mirrored (MirrorMaker 2)
or stretched Kafka cluster that must survive a region loss for its topic to stay readable: it is not killed.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa

from ingestion.stream import make_sink
from ingestion.stream.broker import ensure_topic, free_port, running_broker
from ingestion.synthetic import iter_payload_batches, simulate
from shironzi.dr.failover import failback, failover
from shironzi.dr.regions import replica_lake, serving_lake
from shironzi.dr.replicate import region_lag, residency_violations
from shironzi.errors import ShironziError
from shironzi.lake import append, read_arrow, table_exists, table_uri
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import TenantContext, get_registry, reset_registries

A, B = "eu-west", "us-east"
TOPIC = "events"
Progress = Callable[[str], None]


class DrillFailedError(ShironziError):
    code = "drill_failed"


FAILBACK_MAX_LAG_VERSIONS = 20  # the run log commits every flush: a few passes' worth of them under load
CATCH_UP_STALL_SECONDS = 60.0


def _wait_for_reverse_catch_up(region: str, settings: Settings) -> None:
    """Wait, as an operator would, until the replica's outage writes are shipped home to within the failback
    bound: as long as the replicator keeps shrinking the worst lag (a loaded machine ships slowly), and at most
    `CATCH_UP_STALL_SECONDS` without progress; failback itself then refuses if the bound is still not met."""
    best, last_progress = None, time.monotonic()
    while time.monotonic() - last_progress < CATCH_UP_STALL_SECONDS:
        worst = max((lag.lag_versions for lag in region_lag(region, direction="reverse", settings=settings)),
                    default=0)
        if worst <= FAILBACK_MAX_LAG_VERSIONS // 2:
            return
        if best is None or worst < best:
            best, last_progress = worst, time.monotonic()
        time.sleep(0.5)


@dataclass
class DrillConfig:
    base: Path
    events_per_second: int = 2_000
    steady_seconds: float = 8.0
    outage_seconds: float = 8.0
    after_seconds: float = 4.0
    partitions: int = 2
    max_batch: int = 5_000
    catch_up_timeout: float = 90.0


@dataclass
class DrillReport:
    produced: int = 0
    landed: int = 0
    lost: int = 0
    lost_by_region: dict[str, int] = field(default_factory=dict)
    duplicated: int = 0
    rto_seconds: float | None = None
    failover_seconds: float | None = None
    failback_seconds: float | None = None  # the switch itself: fence, last reverse pass, flip
    home_serving_again_seconds: float | None = None  # from the failback until A's API answers again
    lag_seconds: list[float] = field(default_factory=list)
    api_after_failover: list[int] = field(default_factory=list)
    api_after_failback: int | None = None
    residency_violations: int = 0
    replica_served: bool = False

    @property
    def passed(self) -> bool:
        return (self.lost == 0 and self.duplicated == 0 and self.residency_violations == 0 and self.replica_served
                and bool(self.api_after_failover) and set(self.api_after_failover) == {200}
                and self.api_after_failback == 200)

    def percentile(self, q: float) -> float | None:
        if not self.lag_seconds:
            return None
        ordered = sorted(self.lag_seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("lag_seconds")
        out.update(passed=self.passed, lag_p50_seconds=self.percentile(0.5), lag_p99_seconds=self.percentile(0.99),
                   lag_samples=len(self.lag_seconds))
        return out


class _Process:
    """One drill process (`shironzi ...`), its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], logs: Path) -> None:
        self.name = name
        self.log = (logs / f"{name}.log").open("ab")
        cli = [sys.executable, "-c", "from shironzi.cli.main import run; run()"]
        self.popen = subprocess.Popen([*cli, *args], env=env, stdout=self.log, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[Settings]:
    """This process's settings for the drill (restored afterwards)."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("SHIRONZI_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(values)
    get_settings.cache_clear()
    reset_registries()
    try:
        yield get_settings()
    finally:
        for key in values:
            os.environ.pop(key, None)
        os.environ.update(saved)
        get_settings.cache_clear()
        reset_registries()


def _wait_port(port: int, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on port {port} after {timeout:.0f}s")


def _get(port: int, key: str) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/v1/tenant", headers={"Authorization": f"Bearer {key}"},
                         timeout=5).status_code
    except httpx.HTTPError:
        return 0


class _Producer(threading.Thread):
    """Produces each region's simulated events at a steady rate until stopped; remembers what it sent."""

    def __init__(self, streams: dict[str, tuple[str, Any]], rate: int) -> None:
        super().__init__(daemon=True)
        self.streams, self.rate = streams, rate
        self.stop_event = threading.Event()
        self.sent: dict[str, list[tuple[str, str]]] = {region: [] for region in streams}
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with ExitStack() as stack:
                sinks = {r: stack.enter_context(make_sink("confluent", boot)) for r, (boot, _) in self.streams.items()}
                payloads = {r: self._payloads(iter_payload_batches(sim, batch_size=5_000))
                            for r, (_, sim) in self.streams.items()}
                tick, per_tick = 0.1, max(1, self.rate // 10 // len(self.streams))
                while not self.stop_event.is_set():
                    started = time.monotonic()
                    for region, source in payloads.items():
                        for _ in range(per_tick):
                            item = next(source, None)
                            if item is None:
                                break
                            key, value, ident = item
                            sinks[region].produce(TOPIC, key, value)
                            self.sent[region].append(ident)
                        sinks[region].flush()
                    time.sleep(max(0.0, tick - (time.monotonic() - started)))
        except BaseException as exc:  # noqa: BLE001 - reported by the drill
            self.error = exc

    @staticmethod
    def _payloads(batches: Iterator[Any]) -> Iterator[tuple[bytes, bytes, tuple[str, str]]]:
        for batch in batches:
            for key, value in zip(batch.keys, batch.values, strict=True):
                row = json.loads(value)
                yield key, value, (row["tenant_id"], row["event_id"])


def _bronze_ids(lake: str, region: str) -> list[tuple[str, str]]:
    uri = table_uri(lake, layer="bronze", table="events", region=region)
    if not table_exists(uri):
        return []
    table = read_arrow(uri, columns=["tenant_id", "event_id"])
    return list(zip(table.column("tenant_id").to_pylist(), table.column("event_id").to_pylist(), strict=True))


def run_drill(config: DrillConfig, *, progress: Progress | None = None) -> DrillReport:
    """Run the drill under `config.base` (see the module docstring) and report what it measured."""
    say = progress or (lambda _: None)
    base = config.base.resolve()
    logs = base / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    report = DrillReport()
    with ExitStack() as stack:
        boots = {r: stack.enter_context(running_broker(base / f"broker-{r}")).bootstrap for r in (A, B)}
        lakes = {r: str(base / f"lake-{r}") for r in (A, B)}
        common = {
            "SHIRONZI_HOME": str(base / "home"),
            "SHIRONZI_DATABASE_URL": f"sqlite:///{base / 'registry.db'}",
            "SHIRONZI_REGIONS": json.dumps([A, B]),
            "SHIRONZI_REGION_PEERS": json.dumps({A: B, B: A}),
            "SHIRONZI_REGION_LAKES": json.dumps({r: {"uri": lakes[r], "kafka_bootstrap": boots[r]} for r in (A, B)}),
            "SHIRONZI_DR_STATE_CACHE_SECONDS": "1",
            "SHIRONZI_DR_REPLICATE_INTERVAL_SECONDS": "0.5",
            "SHIRONZI_DR_FAILBACK_MAX_LAG_VERSIONS": str(FAILBACK_MAX_LAG_VERSIONS),
            "SHIRONZI_LOG_LEVEL": "WARNING",
        }
        settings = stack.enter_context(_environment({**common, "SHIRONZI_LAKE_URI": str(base / "control-lake")}))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SHIRONZI_")} | common
        ctx = TenantContext.admin(actor="dr-drill", purpose="disaster recovery drill")
        registry = get_registry(settings)
        tenants: dict[str, tuple[str, str]] = {}
        for slug, region, industry, plan, placement in (
            ("drill-shop-a", A, "ecommerce", "standard", "pooled"),
            ("drill-school-a", A, "education", "free", "pooled"),
            ("drill-clinic-a", A, "healthcare", "enterprise", "dedicated"),
            ("drill-shop-b", B, "ecommerce", "standard", "pooled"),
        ):
            tenant, key = registry.provision_tenant(ctx, slug=slug, name=slug, industry=industry, plan=plan,
                                                    region=region, placement=placement)
            tenants[slug] = (tenant.id, key)
        # the restricted tenant's own table: it must never reach B
        clinic = tenants["drill-clinic-a"][0]
        append(table_uri(lakes[A], layer="bronze", table="events", region=A, placement="dedicated", tenant_id=clinic),
               pa.table({"tenant_id": [clinic] * 10, "event_id": [f"c{i}" for i in range(10)]}))
        seconds = config.steady_seconds + config.outage_seconds + config.after_seconds + 40  # + the switches
        total = int(config.events_per_second * seconds / 2) + 10_000  # per region
        sims = {
            A: simulate([(tenants["drill-shop-a"][0], "ecommerce"), (tenants["drill-school-a"][0], "education")],
                        target_events=total, days=30, seed=1),
            B: simulate([(tenants["drill-shop-b"][0], "ecommerce")], target_events=total, days=30, seed=2),
        }
        for region in (A, B):
            ensure_topic(boots[region], TOPIC, partitions=config.partitions)

        processes: list[_Process] = []

        def start(name: str, args: list[str], **extra: str) -> _Process:
            process = _Process(name, args, env | extra, logs)
            processes.append(process)
            return process

        def ingestor(name: str, region: str, lake: str) -> _Process:
            return start(name, ["ingest", "stream", "--topic", TOPIC, "--bootstrap", boots[region], "--max-batch",
                                str(config.max_batch), "--max-wait-ms", "300"],
                         SHIRONZI_LAKE_URI=lake, SHIRONZI_WRITER_REGION=region)

        try:
            ports = {A: free_port(), B: free_port()}
            procs = {
                "ingest-a": ingestor("ingest-a", A, lakes[A]),
                "ingest-b": ingestor("ingest-b", B, lakes[B]),
                "api-a": start("api-a", ["serve", "api", "--port", str(ports[A])], SHIRONZI_LAKE_URI=lakes[A]),
                "api-b": start("api-b", ["serve", "api", "--port", str(ports[B])], SHIRONZI_LAKE_URI=lakes[B]),
                "replicator": start("replicator", ["dr", "replicate"], SHIRONZI_LAKE_URI=lakes[B]),
            }
            for region in (A, B):
                _wait_port(ports[region])
            say("regions up: brokers, ingestors, APIs and the replicator")
            producer = _Producer({r: (boots[r], sims[r]) for r in (A, B)}, config.events_per_second)
            producer.start()
            sampling = threading.Event()

            def sample_lag() -> None:
                while not sampling.is_set():
                    try:
                        lags = region_lag(A, settings=settings) + region_lag(B, settings=settings)
                        report.lag_seconds.append(max((lag.lag_seconds for lag in lags), default=0.0))
                    except Exception:  # noqa: BLE001 - a table mid-write: the next sample
                        pass
                    sampling.wait(0.5)

            deadline = time.monotonic() + 120  # steady state: A's ingestor lands and the replicator ships it
            replica_bronze = replica_lake(settings, A).uri
            while not _bronze_ids(replica_bronze, A) and time.monotonic() < deadline:
                time.sleep(0.5)
            sampler = threading.Thread(target=sample_lag, daemon=True)
            sampler.start()
            time.sleep(config.steady_seconds)

            sampling.set()
            sampler.join()
            say("SIGKILL region A's ingestor and API")
            killed_at, produced_before_kill = time.time(), len(producer.sent[A])
            procs["ingest-a"].kill()
            procs["api-a"].kill()
            switched = failover(A, ctx=ctx, settings=settings)
            report.failover_seconds = switched.seconds
            takeover = ingestor("ingest-a-in-b", A, replica_lake(settings, A).uri)
            report.replica_served = serving_lake(settings, A).uri == replica_bronze
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:  # RTO: new events of A's tenants readable from the serving copy
                sent_after = set(producer.sent[A][produced_before_kill:produced_before_kill + 1000])
                if sent_after and sent_after & set(_bronze_ids(replica_bronze, A)):
                    status = _get(ports[B], tenants["drill-shop-a"][1])
                    if status == 200:
                        report.rto_seconds = time.time() - killed_at
                        break
                time.sleep(0.5)
            say(f"failed over; RTO {report.rto_seconds}")
            outage_end = time.monotonic() + config.outage_seconds
            while time.monotonic() < outage_end:
                report.api_after_failover.append(_get(ports[B], tenants["drill-shop-a"][1]))
                time.sleep(1.0)

            say("region A back: the replicator ships the outage home; failback")
            _wait_for_reverse_catch_up(A, settings)
            started = time.monotonic()
            report.failback_seconds = failback(A, ctx=ctx, settings=settings).seconds
            takeover.stop()
            procs["ingest-a"] = ingestor("ingest-a-again", A, lakes[A])
            procs["api-a"] = start("api-a-again", ["serve", "api", "--port", str(ports[A])],
                                   SHIRONZI_LAKE_URI=lakes[A])
            _wait_port(ports[A])
            report.home_serving_again_seconds = time.monotonic() - started
            report.api_after_failback = _get(ports[A], tenants["drill-shop-a"][1])
            time.sleep(config.after_seconds)
            producer.stop_event.set()
            producer.join()
            if producer.error is not None:
                raise producer.error
            say("producing stopped; waiting for the ingestors to catch up")
            produced = {r: producer.sent[r] for r in (A, B)}
            report.produced = sum(len(v) for v in produced.values())
            deadline = time.monotonic() + config.catch_up_timeout
            last, progressed_at = -1, time.monotonic()
            while True:  # until all landed, or no progress for 60 s (lost, not late), or the deadline
                landed = {r: _bronze_ids(lakes[r], r) for r in (A, B)}
                count = sum(len(v) for v in landed.values())
                if count > last:
                    last, progressed_at = count, time.monotonic()
                if count >= report.produced or time.monotonic() > deadline or time.monotonic() - progressed_at > 60:
                    break
                time.sleep(2.0)
            all_landed = landed[A] + landed[B]
            wanted = set(produced[A]) | set(produced[B])
            report.landed = len(all_landed)
            report.duplicated = len(all_landed) - len(set(all_landed))
            report.lost = len(wanted - set(all_landed))
            report.lost_by_region = {r: len(set(produced[r]) - set(landed[r])) for r in (A, B)}
            report.residency_violations = len(residency_violations(settings))
        finally:
            for process in processes:
                process.stop()
    return report


