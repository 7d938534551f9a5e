"""Noisy neighbour: does a tenant producing 10x its ingest quota on a shared topic raise the other tenants'
end-to-end latency (produce -> committed in bronze)?

Pairs of runs on a private bundled broker, each in a fresh home with the plans' quotas on (`SHIRONZI_INGEST_QUOTAS`),
the stream ingestor running beside the producers:
1. baseline: the quiet tenants produce at a steady rate for `--seconds`;
2. noisy: the same, plus one free-plan tenant producing 10x its quota, keyed like the others on the same
   partitions (its excess is quarantined as `quota_exceeded`, its quota's worth lands).
A quiet event's latency is the commit time of the bronze version that added it (the `commitInfo` timestamp of
the Delta log entry whose file holds it) minus the wall time it was produced. The runs alternate for `--rounds`
rounds (a shared machine's load drifts); the median of the quiet tenants' p99 per kind and their ratio (target
<= 1.20) are printed with the machine and its load average.

    .venv/bin/python benchmarks/noisy_neighbour.py [--seconds 10] [--rounds 3] [--quiet-tenants 4]
        [--quiet-rate 50] [--quota 100] [--partitions 2]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _home(root: Path, name: str, *, quota: float, quiet: int) -> tuple[list[str], str]:
    """A fresh home with quotas on: `quiet` standard tenants and one free tenant whose quota is `quota`/s."""
    os.environ["SHIRONZI_HOME"] = str(root / name)
    os.environ["SHIRONZI_INGEST_QUOTAS"] = "1"
    os.environ["SHIRONZI_PLAN_QUOTAS"] = json.dumps({"free": {"ingest_rate": quota, "ingest_burst": quota}})
    from shironzi.settings import get_settings
    from shironzi.tenancy import TenantContext, get_registry, reset_registries

    get_settings.cache_clear()
    reset_registries()
    registry = get_registry()
    ctx = TenantContext.admin(actor="bench", purpose="noisy neighbour benchmark")
    quiet_ids = [registry.provision_tenant(ctx, slug=f"quiet-{i}", name=f"quiet {i}", industry="ecommerce",
                                           plan="standard")[0].id for i in range(quiet)]
    noisy = registry.provision_tenant(ctx, slug="noisy-shop", name="noisy", industry="ecommerce", plan="free")[0]
    return quiet_ids, noisy.id


def _payload(tenant_id: str, event_id: str) -> bytes:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return json.dumps({"tenant_id": tenant_id, "event_id": event_id, "customer_id": f"c-{event_id[-3:]}",
                       "event_type": "session_started", "event_time": now,
                       "properties": {"session_id": event_id, "device": "web"}}).encode()


def _produce(bootstrap: str, topic: str, rates: dict[str, float], seconds: float) -> tuple[
        dict[str, float], dict[str, int]]:
    """Produce each tenant's events at its steady rate (paced every 5 ms): event id -> produce wall time, and
    the events sent per tenant."""
    from ingestion.stream import make_sink

    sent_at: dict[str, float] = {}
    counts = dict.fromkeys(rates, 0)
    with make_sink("confluent", bootstrap, linger_ms=1) as sink:
        started = time.time()
        while (now := time.time()) - started < seconds:
            for tenant_id, rate in rates.items():
                due = int(rate * (now - started)) - counts[tenant_id]
                for _ in range(due):
                    event_id = f"e-{uuid.uuid4().hex[:16]}"
                    sent_at[event_id] = time.time()
                    sink.produce(topic, tenant_id.encode(), _payload(tenant_id, event_id))
                counts[tenant_id] += due
            time.sleep(0.005)
        sink.flush()
    return sent_at, counts


def _commit_times(uri: str) -> dict[str, float]:
    """Each bronze data file -> the commit time (epoch s) of the Delta log entry that added it."""
    from shironzi.lake.discovery import list_log_files, read_bytes

    files: dict[str, float] = {}
    for entry in list_log_files(uri, suffixes=(".json",)):
        actions = [json.loads(line) for line in read_bytes(entry).decode().splitlines() if line.strip()]
        stamp = next((a["commitInfo"]["timestamp"] for a in actions if "commitInfo" in a), None)
        for action in actions:
            if "add" in action and stamp is not None:
                files[action["add"]["path"]] = stamp / 1000
    return files


def _latencies(quiet: list[str], sent_at: dict[str, float]) -> list[float]:
    """Seconds from produce to bronze commit of every quiet tenant's event."""
    import pyarrow.parquet as pq

    from shironzi.lake import table_uri
    from shironzi.settings import get_settings

    uri = table_uri(get_settings().resolved_lake_uri, layer="bronze", table="events", region="eu-west")
    wanted = set(quiet)
    out = []
    for path, committed in _commit_times(uri).items():
        rows = pq.read_table(f"{uri}/{path}", columns=["tenant_id", "event_id"]).to_pylist()
        out += [committed - sent_at[r["event_id"]] for r in rows if r["tenant_id"] in wanted]
    return out


def _run(root: Path, bootstrap: str, name: str, args: argparse.Namespace, *, noisy: bool) -> dict[str, Any]:
    from ingestion.stream import ensure_topic
    from ingestion.stream.ingestor import StreamIngestor, StreamOptions

    quiet, noisy_id = _home(root, name, quota=args.quota, quiet=args.quiet_tenants)
    topic = f"events-{name}"
    ensure_topic(bootstrap, topic, partitions=args.partitions)
    rates = {tenant_id: args.quiet_rate for tenant_id in quiet}
    if noisy:
        rates[noisy_id] = 10 * args.quota
    options = StreamOptions(topic=topic, bootstrap=bootstrap, max_batch=20_000, max_wait_ms=args.max_wait_ms,
                            idle_timeout_s=3.0)
    outcome: dict[str, Any] = {}
    ingestor = threading.Thread(target=lambda: outcome.update(result=StreamIngestor(options).run()))
    ingestor.start()
    time.sleep(1.0)  # the ingestor is polling before the first event
    sent_at, counts = _produce(bootstrap, topic, rates, args.seconds)
    ingestor.join()
    totals = outcome["result"].totals
    assert totals.received == len(sent_at) and totals.balanced(), totals.as_dict()
    latencies = sorted(_latencies(quiet, sent_at))
    assert len(latencies) == sum(counts[t] for t in quiet), "every quiet event lands in bronze"

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {"p50": pct(0.50), "p99": pct(0.99), "quiet_events": len(latencies), "received": totals.received,
            "quarantined": totals.quarantined_by_reason.get("quota_exceeded", 0)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="producing time of each run")
    parser.add_argument("--rounds", type=int, default=3, help="baseline/noisy pairs, interleaved")
    parser.add_argument("--quiet-tenants", type=int, default=4)
    parser.add_argument("--quiet-rate", type=float, default=50.0, help="events/s of each quiet tenant")
    parser.add_argument("--quota", type=float, default=100.0, help="the noisy (free) tenant's quota, events/s")
    parser.add_argument("--partitions", type=int, default=2)
    parser.add_argument("--max-wait-ms", type=int, default=200)
    args = parser.parse_args(argv)

    from benchmarks._machine import print_header
    from ingestion.stream import running_broker

    print_header("noisy neighbour: quiet tenants' produce -> bronze latency, with a tenant at 10x its quota")
    print(f"setup      {args.quiet_tenants} quiet tenants x {args.quiet_rate:g} events/s, noisy tenant "
          f"{10 * args.quota:g} events/s against a quota of {args.quota:g}/s, {args.partitions} partitions, "
          f"{args.seconds:g} s per run")
    runs: dict[str, list[dict[str, Any]]] = {"baseline": [], "noisy": []}
    with tempfile.TemporaryDirectory() as tmp, running_broker(Path(tmp) / "broker") as info:
        for round_ in range(args.rounds):  # interleaved, so a load change on the machine hits both alike
            for name, noisy in (("baseline", False), ("noisy", True)):
                figures = _run(Path(tmp), info.bootstrap, f"{name}-{round_}", args, noisy=noisy)
                runs[name].append(figures)
                print(f"{name:<10} round {round_ + 1}: quiet events {figures['quiet_events']:,}, "
                      f"p50 {figures['p50'] * 1000:,.0f} ms, p99 {figures['p99'] * 1000:,.0f} ms; received "
                      f"{figures['received']:,}, quarantined quota_exceeded {figures['quarantined']:,}; "
                      f"load average {os.getloadavg()[0]:.1f}")
    p99 = {name: statistics.median(f["p99"] for f in found) for name, found in runs.items()}
    ratio = p99["noisy"] / p99["baseline"]
    verdict = "OK" if ratio <= 1.20 else "ABOVE TARGET"
    print(f"p99        median over {args.rounds} rounds: baseline {p99['baseline'] * 1000:,.0f} ms, noisy "
          f"{p99['noisy'] * 1000:,.0f} ms")
    print(f"ratio      quiet tenants' p99 noisy / baseline = {ratio:.2f} (target <= 1.20: {verdict})")

if __name__ == "__main__":
    main()
