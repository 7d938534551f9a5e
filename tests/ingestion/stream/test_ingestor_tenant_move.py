"""Issue 23's move test: a tenant moves pooled -> dedicated and back while a real stream ingestor (a thread,
on the real bundled broker) lands 200,000 events for it and for two other tenants. Afterwards every produced
event is in bronze exactly once, each tenant's rows only in its own placement's table, the others untouched."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from ingestion.stream.ingestor import StreamIngestor, StreamOptions
from tests.ingestion._fixtures import bronze_uri, provision, read_all

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOTAL = 200_000


def _payloads(tenants: list[Any]) -> list[tuple[bytes, bytes]]:
    from ingestion.synthetic import iter_payload_batches, simulate

    sim = simulate([(t.id, t.industry) for t in tenants], customers=400, days=30, seed=3, target_events=TOTAL)
    out: list[tuple[bytes, bytes]] = []
    for batch in iter_payload_batches(sim, batch_size=20_000):
        out.extend(zip(batch.keys, batch.values, strict=True))
    assert len(out) >= TOTAL
    return out[:TOTAL]


def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    from ingestion.stream import make_sink

    with make_sink("confluent", bootstrap) as sink:
        for start in range(0, len(records), 5_000):  # a steady stream, not one burst
            for key, value in records[start : start + 5_000]:
                sink.produce(topic, key, value)
            sink.flush()
            time.sleep(0.05)


def _ingest(bootstrap: str, topic: str, results: list[Any]) -> threading.Thread:
    options = StreamOptions(topic=topic, bootstrap=bootstrap, max_batch=5_000, max_wait_ms=200, idle_timeout_s=4)
    thread = threading.Thread(target=lambda: results.append(StreamIngestor(options).run()))
    thread.start()
    return thread


def _bronze(tenant_ids: list[str]) -> dict[str, pl.DataFrame]:
    """Each bronze table's (tenant_id, event_id) rows: the pooled table and each tenant's own."""
    tables = {"pooled": bronze_uri(), **{t: bronze_uri(tenant_id=t) for t in tenant_ids}}
    return {name: frame.select("tenant_id", "event_id") if frame.height else
            pl.DataFrame(schema={"tenant_id": pl.String, "event_id": pl.String})
            for name, frame in ((n, read_all(u)) for n, u in tables.items())}


def _wait_for(predicate: Any, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def _check(tables: dict[str, pl.DataFrame], produced: dict[str, set[str]], dedicated: set[str]) -> None:
    """Exactly the produced events per tenant, each once, and only in the table its placement names."""
    for tenant_id, events in produced.items():
        home_table = tenant_id if tenant_id in dedicated else "pooled"
        for name, frame in tables.items():
            mine = frame.filter(pl.col("tenant_id") == tenant_id).get_column("event_id")
            if name == home_table:
                assert mine.len() == mine.n_unique() == len(events), (tenant_id, name, mine.len(), len(events))
                assert set(mine.to_list()) == events
            else:
                assert mine.len() == 0, f"{mine.len()} rows of {tenant_id} in the wrong table {name}"


def test_a_tenant_moves_and_back_while_the_stream_lands_200k_events(
    broker_bootstrap: str, topic_name: str, home: Path
) -> None:
    from ingestion.stream import ensure_topic
    from shironzi.tenancy import TenantContext
    from shironzi.tenancy.moves import move_tenant

    tenants = provision([("mover", "ecommerce", "standard"), ("stays", "ecommerce", "standard"),
                         ("school", "education", "free")])
    mover, ids = tenants[0].id, [t.id for t in tenants]
    records = _payloads(tenants)
    ensure_topic(broker_bootstrap, topic_name, partitions=4)
    admin = TenantContext.admin(actor="ops@test", purpose="move test")
    phases = [records[: TOTAL // 2], records[TOTAL // 2 :]]
    produced: dict[str, set[str]] = defaultdict(set)
    receipts, results = [], []
    for phase, (part, placement) in enumerate(zip(phases, ["dedicated", "pooled"], strict=True)):
        for _, value in part:
            event = json.loads(value)
            produced[event["tenant_id"]].add(event["event_id"])
        ingestor = _ingest(broker_bootstrap, topic_name, results)  # phase 2 restarts it from the run log
        producer = threading.Thread(target=_produce, args=(broker_bootstrap, topic_name, part))
        producer.start()
        source = "pooled" if placement == "dedicated" else mover
        already = _bronze(ids)[source].filter(pl.col("tenant_id") == mover).height
        _wait_for(lambda table=source, floor=already + 2_000:
                  _bronze(ids)[table].filter(pl.col("tenant_id") == mover).height > floor,
                  "the stream to land the mover's rows")
        receipts.append(move_tenant(admin, mover, placement=placement))  # while the stream goes on
        producer.join()
        ingestor.join()
        assert results[-1].totals.quarantined == 0 and results[-1].totals.balanced()
        tables = _bronze(ids)
        _check(tables, produced, {mover} if placement == "dedicated" else set())
        target = mover if placement == "dedicated" else "pooled"
        landed_after_flip = tables[target].filter(pl.col("tenant_id") == mover).height - receipts[-1].rows
        assert landed_after_flip > 0, f"phase {phase}: the stream wrote nothing to the target after the flip"
    assert sum(len(e) for e in produced.values()) == TOTAL and len(produced) == 3
    assert [r.epoch for r in receipts] == [1, 2]


def test_a_running_ingestor_re_resolves_a_flipped_tenant_within_seconds(
    broker_bootstrap: str, topic_name: str, home: Path
) -> None:
    """The registry watcher, not a flush: an idle ingestor sees a placement flip (the fence alone would only see it
    at its next commit) and routes the tenant to its new table before any event arrives."""
    from ingestion.stream import ensure_topic
    from shironzi.tenancy import TenantContext, get_registry

    (tenant,) = provision([("flipper", "ecommerce", "standard")])
    ensure_topic(broker_bootstrap, topic_name, partitions=1)
    # idle for 25 s before it stops: its start and the re-resolve both fit on a loaded machine (the suite runs two
    # test processes on two cores). A 20 s budget once ran out in CI: the watcher read its baseline in its thread,
    # after the flip, and never applied it (test_tenancy_invalidation's late-poll-thread test keeps that fixed)
    ingestor = StreamIngestor(StreamOptions(topic=topic_name, bootstrap=broker_bootstrap, max_wait_ms=100,
                                            idle_timeout_s=25))
    built = ingestor.lander.tenants
    runner = threading.Thread(target=ingestor.run)
    runner.start()
    try:  # the run re-reads the directory once it watches the registry: a flip after that is the watcher's
        _wait_for(lambda: ingestor.lander.tenants is not built, "the ingestor to start", 20)
        assert ingestor.lander.tenants[tenant.id].placement == "pooled"
        get_registry().flip_placement(TenantContext.admin(actor="t", purpose="t"), tenant.id,
                                      placement="dedicated", expected_epoch=0)
        flipped = time.monotonic()
        _wait_for(lambda: ingestor.lander.tenants[tenant.id].placement == "dedicated", "the re-resolve", 20)
        assert time.monotonic() - flipped < 20 and ingestor.lander.flushes == 0
    finally:
        runner.join()


def test_a_flip_committed_before_the_ingestor_runs_is_seen_at_its_start(
    broker_bootstrap: str, topic_name: str, home: Path
) -> None:
    """The directory is read when the ingestor is built; a flip committed before `run()` starts its watcher
    reaches no watcher, so the run re-reads the directory once at its start (not at the periodic refresh, 30 s,
    longer than this run)."""
    from ingestion.stream import ensure_topic
    from shironzi.tenancy import TenantContext, get_registry

    (tenant,) = provision([("early", "ecommerce", "standard")])
    ensure_topic(broker_bootstrap, topic_name, partitions=1)
    ingestor = StreamIngestor(StreamOptions(topic=topic_name, bootstrap=broker_bootstrap, max_wait_ms=100,
                                            idle_timeout_s=3))
    assert ingestor.lander.tenants[tenant.id].placement == "pooled"
    get_registry().flip_placement(TenantContext.admin(actor="t", purpose="t"), tenant.id,
                                  placement="dedicated", expected_epoch=0)
    result = ingestor.run()
    assert result.seconds < ingestor.settings.stream_tenant_refresh_seconds
    assert ingestor.lander.tenants[tenant.id].placement == "dedicated" and ingestor.lander.flushes == 0
