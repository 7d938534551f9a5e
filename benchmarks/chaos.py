"""Chaos: take a real backend away while the platform works, bring it back, and measure the time to recovery
after the fault clears and the events lost (must be 0) or landed twice (must be 0).

Faults (each on its own fresh home, with real processes):
* `broker`: the bundled broker behind a TCP fault proxy is cut off (its in-memory topics survive, as a
  restarted Kafka keeps its log) while the API takes events; recovery = first 202 after the proxy is restored;
  loss = events answered 202 that the stream ingestor does not land in bronze afterwards.
* `redis`: the rate-limit Redis is killed while the API answers; it falls back to in-process limits; recovery =
  until the API uses Redis again after a new Redis starts on the same port; loss = requests answered 5xx.
* `object-store`: the lake's S3 server (moto) is cut off while the stream ingestor lands; it backs off and
  commits nothing; recovery = until bronze holds every produced event after the store is back; loss = produced
  events missing from bronze; duplicates = rows landed twice.

    .venv/bin/python benchmarks/chaos.py [--down 30] [--faults broker,redis,object-store]
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

POLL_S = 0.1
_ids = itertools.count()


@dataclass
class FaultOutcome:
    """One fault: how long it lasted, how long recovery took after it cleared, what was lost or doubled."""

    fault: str
    down_s: float
    recovery_s: float | None  # None: did not recover within the deadline
    attempted: int  # events sent (or requests made) across the run
    accepted: int  # ... that the platform acknowledged
    lost: int
    duplicates: int = 0
    noticed: int = 0  # signs the platform saw the fault: 503s answered, degraded checks, ingestor backoffs

    @property
    def recovered(self) -> bool:
        return self.recovery_s is not None

    def line(self) -> str:
        recovery = f"{self.recovery_s:6.2f} s" if self.recovery_s is not None else "   never"
        return (f"{self.fault:<13} down {self.down_s:5.1f} s  recovery {recovery}  attempted {self.attempted:>6}  "
                f"accepted {self.accepted:>6}  lost {self.lost}  duplicates {self.duplicates}  noticed {self.noticed}")


def _until(check: Callable[[], bool], *, deadline_s: float) -> float | None:
    """Seconds until `check()` holds (polled), or None past the deadline."""
    started = time.monotonic()
    while time.monotonic() - started < deadline_s:
        if check():
            return time.monotonic() - started
        time.sleep(POLL_S)
    return None


def _through_outage(call: Callable[[], object], *, fault: Callable[[], None], down_s: float) -> None:
    """A few calls while all is well, then `fault()` and calls for `down_s` seconds (the fault's duration)."""
    for _ in range(5):
        call()
    fault()
    ends = time.monotonic() + down_s
    while time.monotonic() < ends:
        call()
        time.sleep(POLL_S)


@contextmanager
def _home(root: Path, **env: str) -> Iterator[Any]:
    from tests.serving._fixtures import isolated_home

    with isolated_home(root, **env) as settings:
        yield settings


def _tenant_key(settings: Any) -> tuple[str, str]:
    from shironzi.tenancy import TenantContext, get_registry

    ctx = TenantContext.admin(actor="chaos", purpose="chaos benchmark")
    tenant, key = get_registry(settings).provision_tenant(ctx, slug=f"chaos-{next(_ids)}", name="Chaos",
                                                          industry="ecommerce", plan="enterprise")
    return tenant.id, key


def _event(tenant_id: str | None = None) -> dict[str, Any]:
    event = {"event_id": f"ev-{next(_ids)}", "customer_id": "c-1", "event_type": "session_started",
             "event_time": "2026-01-05T10:00:00Z", "properties": {"session_id": "s1", "device": "ios"}}
    return event if tenant_id is None else {**event, "tenant_id": tenant_id}


def _bronze(settings: Any) -> Any:
    import polars as pl

    from shironzi.lake import read_polars, table_exists, table_uri

    uri = table_uri(settings.resolved_lake_uri, layer="bronze", table="events", region=settings.default_region)
    if not table_exists(uri, storage_options=settings.storage_options):
        return pl.DataFrame(schema={"event_id": pl.String})
    return read_polars(uri, columns=["event_id"], storage_options=settings.storage_options)


def _ingest_until_caught_up(settings: Any, topic: str) -> None:
    from ingestion.stream.ingestor import StreamIngestor, StreamOptions

    StreamIngestor(StreamOptions(topic=topic, until_caught_up=True, max_wait_ms=200), settings=settings).run()


# ------------------------------------------------------------------------------------------- faults


def broker_fault(root: Path, *, down_s: float) -> FaultOutcome:
    """The API takes events while the broker is cut off; every 202 must reach bronze."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from tests._services import proxied_broker

    with ExitStack() as stack:
        bootstrap, proxy = stack.enter_context(proxied_broker(root / "broker"))
        settings = stack.enter_context(_home(root / "home", SHIRONZI_KAFKA_BOOTSTRAP=bootstrap,
                                             SHIRONZI_API_BREAKER_COOLDOWN_SECONDS="1"))
        _, key = _tenant_key(settings)
        client = stack.enter_context(TestClient(create_app(settings, load_model=False),
                                                raise_server_exceptions=False))
        accepted: list[str] = []
        attempted = refused = 0

        def post() -> bool:
            nonlocal attempted, refused
            events = [_event() for _ in range(2)]
            attempted += len(events)
            answer = client.post("/v1/events", json={"events": events}, headers={"Authorization": f"Bearer {key}"})
            if answer.status_code == 202:
                accepted.extend(e["event_id"] for e in events)
                return True
            if answer.status_code != 503 or "Retry-After" not in answer.headers:
                raise AssertionError(f"unexpected answer during the outage: {answer.status_code} {answer.text}")
            refused += 1
            return False

        _through_outage(post, fault=proxy.cut, down_s=down_s)
        proxy.restore()
        recovery = _until(post, deadline_s=60)
        for _ in range(5):
            post()
        _ingest_until_caught_up(settings, settings.api_events_topic)
        landed = _bronze(settings).get_column("event_id")
    return FaultOutcome("broker", down_s, recovery, attempted, len(accepted),
                        lost=len(set(accepted) - set(landed.to_list())),
                        duplicates=landed.len() - landed.n_unique(), noticed=refused)


def redis_fault(root: Path, *, down_s: float) -> FaultOutcome:
    """The API answers while its rate-limit Redis is killed and started again on the same port."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from tests._services import free_port, redis_server

    port = free_port()
    with ExitStack() as stack:
        redis = ExitStack()
        url = redis.enter_context(redis_server(root / "redis-1", port=port))
        stack.callback(redis.close)
        settings = stack.enter_context(_home(root / "home", SHIRONZI_REDIS_URL=url))
        _, key = _tenant_key(settings)
        client = stack.enter_context(TestClient(create_app(settings, load_model=False),
                                                raise_server_exceptions=False))
        failed = attempted = 0

        def request() -> None:
            nonlocal failed, attempted
            attempted += 1
            if client.get("/v1/tenant", headers={"Authorization": f"Bearer {key}"}).status_code >= 500:
                failed += 1

        def uses_redis() -> bool:
            request()
            return client.get("/readyz").json()["checks"]["rate_limit_store"] == "ok"

        _through_outage(request, fault=redis.close, down_s=down_s)
        degraded = client.get("/readyz").json()["checks"]["rate_limit_store"].startswith("ok: degraded")
        stack.enter_context(redis_server(root / "redis-2", port=port))
        recovery = _until(uses_redis, deadline_s=60)
    return FaultOutcome("redis", down_s, recovery, attempted, attempted - failed, lost=failed, noticed=int(degraded))


def object_store_fault(root: Path, *, down_s: float, events: int = 400) -> FaultOutcome:
    """The stream ingestor lands from the broker into an S3 lake that is cut off for a while."""
    from ingestion.stream import ensure_topic, make_sink, running_broker
    from ingestion.stream.ingestor import StreamIngestor, StreamOptions
    from tests._services import fault_proxy, s3_server

    topic = "events"
    with ExitStack() as stack:
        s3 = stack.enter_context(s3_server(root / "s3"))
        proxy = stack.enter_context(fault_proxy(int(s3.endpoint.rsplit(":", 1)[1])))
        lake = s3.create_bucket("chaos-lake")
        options = {**s3.storage_options(), "AWS_ENDPOINT_URL": proxy.endpoint}
        broker = stack.enter_context(running_broker(root / "broker"))
        settings = stack.enter_context(_home(
            root / "home", SHIRONZI_KAFKA_BOOTSTRAP=broker.bootstrap, SHIRONZI_LAKE_URI=lake,
            SHIRONZI_STORAGE_OPTIONS=json.dumps(options), SHIRONZI_STREAM_BACKOFF_MAX_SECONDS="2"))
        tenant_id, _ = _tenant_key(settings)
        ensure_topic(broker.bootstrap, topic, partitions=2)
        sink = make_sink("confluent", broker.bootstrap)
        stack.callback(sink.close, 5.0)
        produced: list[str] = []

        def produce(n: int) -> None:
            for _ in range(n):
                event = _event(tenant_id)
                sink.produce(topic, tenant_id.encode(), json.dumps(event).encode())
                produced.append(event["event_id"])
            sink.flush(10.0)

        # Runs of the ingestor back to back (each ends after 3 s without events), as a supervised one would.
        ingestor = StreamIngestor(StreamOptions(topic=topic, max_wait_ms=200, max_batch=100, idle_timeout_s=3.0),
                                  settings=settings)
        stop = threading.Event()
        errors: list[BaseException] = []

        def consume() -> None:
            try:
                while not stop.is_set():
                    ingestor.run()
            except BaseException as exc:  # surfaced below
                errors.append(exc)

        def landed_all() -> bool:
            try:
                return _bronze(settings).get_column("event_id").n_unique() >= len(produced)
            except Exception:  # noqa: BLE001 - the store may still be coming back
                return False

        worker = threading.Thread(target=consume, daemon=True)
        produce(events // 4)
        worker.start()
        if _until(landed_all, deadline_s=120) is None:
            raise RuntimeError(f"the ingestor did not land the first events: {errors}")
        proxy.cut()
        ends = time.monotonic() + down_s
        # The outage lasts `down_s`, and until the ingestor has met it (a refused connection or a backoff):
        # a short cut can otherwise fall between two commits and test nothing.
        while time.monotonic() < ends or (proxy.refused + ingestor.backoffs == 0 and time.monotonic() < ends + 60):
            produce(max(1, events // 40))
            time.sleep(0.25)
        proxy.restore()
        produce(events // 4)
        recovery = _until(landed_all, deadline_s=180)
        stop.set()
        worker.join(timeout=30)
        if errors:
            raise RuntimeError(f"the ingestor failed instead of backing off: {errors[0]!r}") from errors[0]
        landed = _bronze(settings).get_column("event_id")
        refused = proxy.refused  # read while the proxy (and its state files) still exist
    return FaultOutcome("object-store", down_s, recovery, len(produced), len(produced),
                        lost=len(set(produced) - set(landed.to_list())),
                        duplicates=landed.len() - landed.n_unique(),
                        # the ingestor's backoffs, or requests the cut store refused: object_store's client
                        # retries a short outage itself, so the ingestor may never see an error
                        noticed=ingestor.backoffs + refused)


FAULTS: dict[str, Callable[..., FaultOutcome]] = {
    "broker": broker_fault, "redis": redis_fault, "object-store": object_store_fault,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--down", type=float, default=30.0, help="seconds each fault lasts")
    parser.add_argument("--faults", default=",".join(FAULTS), help="comma-separated: " + ", ".join(FAULTS))
    args = parser.parse_args(argv)

    import tempfile

    from benchmarks._machine import print_header

    print_header("chaos: time to recovery and events lost per fault")
    outcomes = []
    for name in args.faults.split(","):
        with tempfile.TemporaryDirectory(prefix=f"shironzi-chaos-{name}-") as tmp:
            outcomes.append(FAULTS[name](Path(tmp), down_s=args.down))
        print(outcomes[-1].line(), flush=True)
    bad = [o.fault for o in outcomes if o.lost or o.duplicates or not o.recovered]
    print("invariants: " + ("hold (0 lost, 0 duplicates, every fault recovered)" if not bad else f"BROKEN by {bad}"))


if __name__ == "__main__":
    main()
