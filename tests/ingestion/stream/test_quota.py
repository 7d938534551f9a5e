"""The ingest quota on the stream: the excess of a noisy tenant is quarantined (`quota_exceeded`), the rest and
every other tenant's events land, a replay after raising the quota lands the excess once, and a crash between
two commits neither duplicates nor drops a record (real broker, real Delta tables)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from ingestion.stream.ingestor import StreamIngestor, StreamOptions
from ingestion.stream.quota import IngestQuota
from shironzi.settings import get_settings
from tests.ingestion._fixtures import bronze_uri, provision, quarantine_uri, read_all
from tests.ingestion.stream._fixtures import produce

BURST = 20


def _quota_env(monkeypatch: pytest.MonkeyPatch, *, free_rate: float) -> None:
    monkeypatch.setenv("SHIRONZI_INGEST_QUOTAS", "1")
    monkeypatch.setenv("SHIRONZI_PLAN_QUOTAS", json.dumps({"free": {"ingest_rate": free_rate, "ingest_burst": BURST}}))
    get_settings.cache_clear()


@pytest.fixture
def noisy_and_quiet(home: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A free tenant with a tiny quota (burst 20, ~no refill) and a standard tenant far below its quota."""
    from ingestion.synthetic import simulate

    _quota_env(monkeypatch, free_rate=0.0001)
    noisy, quiet = provision([("noisy-shop", "ecommerce", "free"), ("quiet-shop", "ecommerce", "standard")])
    sim = simulate([(noisy.id, "ecommerce"), (quiet.id, "ecommerce")], customers=100, days=20, seed=23)
    counts = dict(sim.events.group_by("tenant_id").len().iter_rows())
    assert counts[noisy.id] > 3 * BURST and counts[quiet.id] > BURST
    return {"noisy": noisy.id, "quiet": quiet.id, "sim": sim, "counts": counts}


def _land(bootstrap: str, topic: str, **options: Any) -> Any:
    return StreamIngestor(StreamOptions(topic=topic, bootstrap=bootstrap, until_caught_up=True, **options)).run()


def _rows(tenant_id: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    bronze = read_all(bronze_uri()).filter(pl.col("tenant_id") == tenant_id)
    quarantine = read_all(quarantine_uri())
    return bronze, quarantine.filter(pl.col("tenant_id") == tenant_id)


@pytest.mark.integration
def test_excess_is_quarantined_and_replayed_once_the_quota_rises(
    broker_bootstrap: str, topic_name: str, noisy_and_quiet: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ingestion.replay import parse_since, replay_quarantine

    noisy, quiet, counts = noisy_and_quiet["noisy"], noisy_and_quiet["quiet"], noisy_and_quiet["counts"]
    sent = produce(broker_bootstrap, topic_name, noisy_and_quiet["sim"])
    totals = _land(broker_bootstrap, topic_name, max_batch=1_000).totals
    assert totals.received == sent and totals.balanced()
    excess = counts[noisy] - BURST
    assert totals.quarantined_by_reason == {"quota_exceeded": excess}
    assert totals.landed == sent - excess
    bronze, held = _rows(noisy)
    assert bronze.height == BURST and held.height == excess
    assert set(held.get_column("reason_code")) == {"quota_exceeded"}
    held_ids = {json.loads(p)["event_id"] for p in held.get_column("raw_payload").to_list()}
    assert len(held_ids) == excess and not held_ids & set(bronze.get_column("event_id"))
    assert _rows(quiet)[0].height == counts[quiet] and _rows(quiet)[1].is_empty()  # the quiet tenant: all landed

    since = parse_since("2000-01-01")
    before = replay_quarantine(reason="quota_exceeded", since=since)  # the quota has not risen: nothing moves
    assert before.still_failing == {"quota_exceeded": excess} and before.counts.landed == 0
    _quota_env(monkeypatch, free_rate=1_000.0)
    after = replay_quarantine(reason="quota_exceeded", since=since)
    assert after.counts.landed == excess and not after.still_failing
    again = replay_quarantine(reason="quota_exceeded", since=since)
    assert again.already_replayed == excess and again.counts.landed == 0
    bronze = read_all(bronze_uri()).filter(pl.col("tenant_id") == noisy)
    assert bronze.height == counts[noisy] == bronze.get_column("event_id").n_unique()  # all, none twice


@pytest.mark.integration
def test_a_crash_between_commits_neither_duplicates_nor_drops_quota_decisions(
    broker_bootstrap: str, topic_name: str, noisy_and_quiet: dict[str, Any]
) -> None:
    import ingestion.bronze as bronze_module

    noisy, quiet, counts = noisy_and_quiet["noisy"], noisy_and_quiet["quiet"], noisy_and_quiet["counts"]
    sent = produce(broker_bootstrap, topic_name, noisy_and_quiet["sim"], partitions=1)

    class Crash(Exception):
        pass

    def crash(point: str, flush: int) -> None:
        if point == "between_commits" and flush == 2:  # bronze committed, quarantine and run log not
            raise Crash

    bronze_module.landing_hook = crash
    try:
        with pytest.raises(Crash):
            _land(broker_bootstrap, topic_name, max_batch=200, overlap=False)
    finally:
        bronze_module.landing_hook = None
    first = read_all(bronze_uri()).filter(pl.col("tenant_id") == noisy).height
    assert first == BURST  # flush 1 spent the burst; flush 2 committed its bronze rows, not its quarantine
    # The retry starts over from flush 2 with a fresh bucket, which would admit flush 2's noisy records again:
    # they were decided (quarantined) by the interrupted landing and must stay so, not vanish as "recovered".
    _land(broker_bootstrap, topic_name, max_batch=200)
    bronze, held = _rows(noisy)
    payload_ids = {json.loads(p)["event_id"] for p in held.get_column("raw_payload").to_list()}
    assert not payload_ids & set(bronze.get_column("event_id"))  # never in both
    assert bronze.height + len(payload_ids) == counts[noisy] == bronze.height + held.height  # none lost or doubled
    assert _rows(quiet)[0].height == counts[quiet]
    assert bronze.height + _rows(quiet)[0].height + held.height == sent


def test_the_bucket_admits_its_burst_then_the_refill_in_produce_time(settings: Any) -> None:
    from shironzi.tenancy.records import TenantInfo

    tenants = {t: TenantInfo(t, t, "ecommerce", "eu-west", plan, "pooled", "active")
               for t, plan in (("a", "free"), ("b", "enterprise"))}
    quota = IngestQuota(tenants, settings=settings.model_copy(update={"plan_quotas": {
        "free": {"ingest_rate": 10.0, "ingest_burst": 5.0}}}))
    # batch 1: tenant a sends 20 records in the same millisecond; tenant b, interleaved, is far below its quota
    first = pl.DataFrame({"tenant_id": ["a", "b"] * 20, "_ts": [0] * 40})
    ok = first.with_columns(quota.admit(first).alias("ok"))
    a = ok.filter(pl.col("tenant_id") == "a").get_column("ok").to_list()
    assert a == [True] * 5 + [False] * 15  # the burst, then nothing in the same instant
    assert all(ok.filter(pl.col("tenant_id") == "b").get_column("ok"))
    # batch 2, 1 s later: the bucket refilled to its cap (5), then 10/s while a sends 20 records over 0.95 s
    second = pl.DataFrame({"tenant_id": ["a"] * 20, "_ts": [1_000 + 50 * i for i in range(20)]})
    a = quota.admit(second).to_list()
    assert sum(a) == 5 + 9 and a[:9] == [True] * 9
    # the state carries over: straight after, a has no token left, b still has
    later = pl.DataFrame({"tenant_id": ["a", "b"], "_ts": [1_950, 1_950]})
    assert quota.admit(later).to_list() == [False, True]
