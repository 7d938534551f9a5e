"""The lake on an object store against the local lake, in one run: batch landing, stream ingest, the dbt build
and the feature build, each timed on both, with the ratio S3/local and the S3 requests per Delta commit.

The S3 side is moto's S3-protocol server (an emulator; AWS S3, MinIO and R2 are the production targets),
started by this script as its own process on a loopback port, with a fresh bucket per run. Requests are
counted from the server's access log: each stage's lines, by kind, divided by the Delta commits it made
(a `_delta_log/<version>.json` put that succeeded). Goal: S3 >= 0.5 x local throughput for landing and
ingest on loopback. Both lakes use the same demo tenants and the same simulation (same seed); each has its
own registry under its own SHIRONZI_HOME. The bundled broker serves both stream ingests (a topic each). A
small warm-up run on a throwaway local lake comes first, so neither lake pays the process's first-run costs.

    .venv/bin/python benchmarks/object_store.py [--customers 600] [--days 60] [--live-days 3]
        [--skip-dbt] [--skip-features]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import print_header  # noqa: E402

STAGES = ("landing", "stream", "dbt", "features")
GOAL = {"landing": 0.5, "stream": 0.5}
_REQUEST = re.compile(r'"(GET|PUT|POST|HEAD|DELETE) (\S+) HTTP/[\d.]+" (\d{3})')
_LOG_ENTRY = re.compile(r"/_delta_log/\d{20}\.json$")


# ------------------------------------------------------------------------------------ the S3 server


def _wait_for_port(port: int, *, timeout: float) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"moto_server did not listen on port {port} within {timeout:.0f}s")


class MotoServer:
    """moto's S3-protocol server as a child process; its access log is where requests are counted."""

    def __init__(self, work: Path) -> None:
        from ingestion.stream.broker import free_port

        binary = Path(sys.executable).with_name("moto_server")
        if not binary.exists():
            raise SystemExit("moto_server not found: install the dev extra (moto[server])")
        self.port = free_port()
        self.log_path = work / "moto.log"
        self._log = self.log_path.open("wb")
        self._proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(self.port)],
                                      stdout=self._log, stderr=subprocess.STDOUT)
        _wait_for_port(self.port, timeout=60)
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def storage_options(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench",
                "AWS_SECRET_ACCESS_KEY": "bench-secret", "AWS_ALLOW_HTTP": "true"}

    def create_bucket(self, name: str) -> str:
        import boto3

        options = self.storage_options()
        boto3.client("s3", endpoint_url=self.endpoint, region_name=options["AWS_REGION"],
                     aws_access_key_id=options["AWS_ACCESS_KEY_ID"],
                     aws_secret_access_key=options["AWS_SECRET_ACCESS_KEY"]).create_bucket(Bucket=name)
        return f"s3://{name}"

    def mark(self) -> int:
        self._log.flush()
        return self.log_path.stat().st_size

    def requests_since(self, offset: int) -> Counter[str]:
        """Requests logged after `offset`, by kind (log-entry puts, data puts, gets, lists, heads, ...)."""
        time.sleep(0.3)  # the server writes its access line after the response
        with self.log_path.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", "replace")
        kinds: Counter[str] = Counter()
        for method, path, status in _REQUEST.findall(text):
            key = path.split("?", 1)[0]
            if method == "PUT" and _LOG_ENTRY.search(key):
                kinds["commit" if status.startswith("2") else "lost race (412)"] += 1
            elif method == "GET" and "list-type=" in path:
                kinds["LIST"] += 1
            elif method == "PUT" and key.endswith(".parquet"):
                kinds["PUT data"] += 1
            else:
                kinds[method] += 1
        return kinds

    def stop(self) -> None:
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._log.close()


# ------------------------------------------------------------------------------------ one lake


@dataclass
class StageFigure:
    seconds: float = 0.0
    rows: int = 0
    skipped: str | None = None
    requests: Counter[str] = field(default_factory=Counter)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def _use_lake(home: Path, lake_uri: str | None, options: dict[str, str], bootstrap: str) -> Any:
    """Point the process at a fresh SHIRONZI_HOME (and lake); returns the settings."""
    from shironzi.settings import get_settings
    from shironzi.tenancy import reset_registries

    os.environ["SHIRONZI_HOME"] = str(home)
    os.environ["SHIRONZI_KAFKA_BOOTSTRAP"] = bootstrap
    os.environ["SHIRONZI_LOG_LEVEL"] = "WARNING"
    if lake_uri is None:
        os.environ.pop("SHIRONZI_LAKE_URI", None)
        os.environ.pop("SHIRONZI_STORAGE_OPTIONS", None)
    else:
        os.environ["SHIRONZI_LAKE_URI"] = lake_uri
        os.environ["SHIRONZI_STORAGE_OPTIONS"] = json.dumps(options)
    get_settings.cache_clear()
    reset_registries()
    return get_settings()


def _timed(figure: StageFigure, server: MotoServer | None, run: Callable[[], int]) -> None:
    offset = server.mark() if server is not None else 0
    started = time.perf_counter()
    try:
        figure.rows = run()
        figure.seconds = time.perf_counter() - started
    except Exception as exc:  # noqa: BLE001 - a stage that cannot run on this lake is reported, not fatal
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        figure.skipped = f"{type(exc).__name__}: {reason}"
        if os.environ.get("SHIRONZI_BENCH_TRACEBACK"):
            traceback.print_exc()
    if server is not None:
        figure.requests = server.requests_since(offset)


def run_lake(
    kind: str, args: argparse.Namespace, work: Path, server: MotoServer, bootstrap: str
) -> dict[str, StageFigure]:
    """Provision the demo tenants and run the four stages on one lake (`s3`, else a local one named `kind`)."""
    import dataclasses
    from datetime import timedelta

    import polars as pl

    from feature_store.offline import build_features
    from ingestion.batch import ingest_files
    from ingestion.stream import ensure_topic, make_sink
    from ingestion.stream.ingestor import StreamIngestor, StreamOptions
    from ingestion.synthetic import iter_payload_batches, simulate, write_landing_files
    from orchestration.demo import DemoState, provision_demo_tenants
    from shironzi.tenancy import get_registry
    from transformations.dbt_runner import build_region

    on_s3 = kind == "s3"
    lake_uri = server.create_bucket(f"shironzi-bench-{uuid.uuid4().hex[:10]}") + "/lake" if on_s3 else None
    settings = _use_lake(work / kind, lake_uri, server.storage_options(), bootstrap)
    state = DemoState(settings=settings, seed=args.seed, days=args.days, customers=args.customers)
    provision_demo_tenants(state)
    directory = get_registry().tenant_directory(fresh=True)
    sim = simulate([(t, directory[t].industry) for t in state.tenant_ids], customers=args.customers,
                   days=args.days, seed=args.seed, bad_share=0.002)
    cutoff = sim.start + timedelta(days=sim.days - args.live_days)
    day = pl.col("event_time").dt.date()

    def part(keep: pl.Expr) -> Any:
        events = sim.events.filter(keep)
        plan = sim.bad_plan.filter(pl.col("seq").is_in(events.get_column("seq").implode()))
        return dataclasses.replace(sim, events=events, bad_plan=plan)

    history, live = part(day < cutoff), part(day >= cutoff)
    figures = {name: StageFigure() for name in STAGES}
    counting = server if on_s3 else None

    landing = work / kind / "landing-files"
    write_landing_files(history, landing, fmt="jsonl", file_per="day")
    _timed(figures["landing"], counting,
           lambda: ingest_files(landing, check_quality=False, flush_rows=args.flush_rows).totals.received)

    topic = f"events-{kind}"
    ensure_topic(bootstrap, topic, partitions=args.partitions)
    with make_sink("confluent", bootstrap) as sink:
        for batch in iter_payload_batches(live):
            for key, value in zip(batch.keys, batch.values, strict=True):
                sink.produce(topic, key, value)
        sink.flush()
    options = StreamOptions(topic=topic, bootstrap=bootstrap, until_caught_up=True, max_batch=args.max_batch,
                            max_wait_ms=300)
    _timed(figures["stream"], counting, lambda: StreamIngestor(options).run().totals.received)

    bronze_rows = history.events.height + live.events.height
    if args.skip_dbt:
        figures["dbt"].skipped = "--skip-dbt"
    else:
        def dbt() -> int:
            build_region(region="eu-west", settings=settings, raise_on_failure=True)
            return bronze_rows

        _timed(figures["dbt"], counting, dbt)
    if args.skip_features:
        figures["features"].skipped = "--skip-features"
    elif figures["dbt"].skipped is not None:
        figures["features"].skipped = "needs the dbt build"
    else:
        _timed(figures["features"], counting,
               lambda: build_features(cadence="weekly", settings=settings).total_rows)
    return figures


# ------------------------------------------------------------------------------------ report


def _requests_line(figure: StageFigure) -> str:
    commits = figure.requests.get("commit", 0)
    total = sum(figure.requests.values())
    if not total:
        return "no S3 requests counted"
    kinds = ", ".join(f"{k} {n:,}" for k, n in sorted(figure.requests.items(), key=lambda kv: -kv[1]))
    per = f"{total / commits:,.1f} requests per commit over {commits} commits" if commits else "no commits"
    return f"{total:,} requests: {per} ({kinds})"


def report(local: dict[str, StageFigure], s3: dict[str, StageFigure]) -> None:
    print(f"{'stage':<9} {'lake':<6} {'seconds':>8} {'rows':>10} {'rows/s':>10}   S3/local")
    for name in STAGES:
        for kind, figures in (("local", local), ("s3", s3)):
            figure = figures[name]
            if figure.skipped is not None:
                print(f"{name:<9} {kind:<6} skipped: {figure.skipped}")
                continue
            ratio = ""
            if kind == "s3" and local[name].skipped is None and local[name].rows_per_second:
                value = figure.rows_per_second / local[name].rows_per_second
                goal = GOAL.get(name)
                verdict = "" if goal is None else (" (goal >= 0.5: met)" if value >= goal else " (goal >= 0.5: MISSED)")
                ratio = f"{value:.2f}{verdict}"
            print(f"{name:<9} {kind:<6} {figure.seconds:>8.2f} {figure.rows:>10,} {figure.rows_per_second:>10,.0f}   "
                  f"{ratio}")
    print()
    print("S3 requests (moto access log) per stage:")
    for name in STAGES:
        figure = s3[name]
        if figure.requests:
            print(f"  {name:<9} {_requests_line(figure)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=600, help="customers across the demo tenants")
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--live-days", type=int, default=3, help="newest days that arrive through the stream")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=20_000)
    parser.add_argument("--flush-rows", type=int, default=250_000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-dbt", action="store_true")
    parser.add_argument("--skip-features", action="store_true")
    parser.add_argument("--keep", type=Path, default=None,
                        help="work in this directory and keep it (homes, lakes, the moto access log)")
    args = parser.parse_args(argv)

    print_header("object-store lake (moto S3 server on loopback) vs local lake")
    from ingestion.stream import running_broker

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp) if args.keep is None else args.keep
        work.mkdir(parents=True, exist_ok=True)
        server = MotoServer(work)
        try:
            with running_broker(work / "broker") as broker:
                # Warm-up on a throwaway local lake: the first run of each stage in a process pays its imports
                # and caches (seconds for landing, a minute for dbt), which would otherwise count against
                # whichever lake runs first.
                warm = argparse.Namespace(**{**vars(args), "customers": 100, "days": 7, "live_days": 2})
                run_lake("warm-up", warm, work, server, broker.bootstrap)
                local = run_lake("local", args, work, server, broker.bootstrap)
                s3 = run_lake("s3", args, work, server, broker.bootstrap)
        finally:
            server.stop()
    report(local, s3)


if __name__ == "__main__":
    main()
