"""Log shipping: each commit of a region's lake lands verbatim at the same version in the peer's replica,
resumes after a crash, writes nothing twice on replay, and keeps residency-restricted tenants at home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from shironzi.dr.regions import region_lake, replica_lake
from shironzi.dr.replicate import region_lag, replicate_region, residency_violations
from shironzi.lake import Txn, append, read_arrow, table_uri, txn_version
from tests.shironzi.dr._fixtures import events, provision, two_region_settings


def _commits(table: str) -> dict[str, bytes]:
    log = Path(table) / "_delta_log"
    return {p.name: p.read_bytes() for p in sorted(log.glob("*.json"))}


def test_commits_ship_verbatim_with_their_txn_and_resume_after_a_crash(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = two_region_settings(home, monkeypatch)
    ids = provision(settings, ("shop", "eu-west", "ecommerce", "standard", "pooled"))
    source_lake, replica = region_lake(settings, "eu-west").uri, replica_lake(settings, "eu-west").uri
    assert replica == f"{home}/lake-us-east/_replica/eu-west"
    bronze = table_uri(source_lake, layer="bronze", table="events", region="eu-west")
    for batch in range(3):
        append(bronze, events([ids["shop"]], 50, start=batch * 50), partition_by="event_date",
               txn=Txn("ingest:events:p0", batch))

    first = replicate_region("eu-west", settings=settings)
    copy = table_uri(replica, layer="bronze", table="events", region="eu-west")
    assert [t.versions for t in first.tables] == [[0, 1, 2, 3]]  # the create, then three appends
    assert _commits(copy) == _commits(bronze)  # the same commit JSON at the same version
    assert txn_version(copy, "ingest:events:p0") == 2  # the Kafka positions come along
    assert read_arrow(copy).num_rows == 150

    # a crash after copying the files of version 5 but before writing its commit: the pass resumes there
    for batch in (3, 4):
        append(bronze, events([ids["shop"]], 50, start=batch * 50), partition_by="event_date",
               txn=Txn("ingest:events:p0", batch))
    replicate_region("eu-west", settings=settings)
    os.unlink(f"{copy}/_delta_log/{5:020d}.json")
    resumed = replicate_region("eu-west", settings=settings)
    assert resumed.tables[0].versions == [5] and resumed.tables[0].files_copied == 0  # files were already there
    assert _commits(copy) == _commits(bronze)
    replay = replicate_region("eu-west", settings=settings)
    assert replay.versions == 0 and sum(t.files_copied for t in replay.tables) == 0  # nothing written twice
    assert read_arrow(copy).sort_by("event_id").equals(read_arrow(bronze).sort_by("event_id"))
    assert [(lag.relative, lag.lag_versions) for lag in region_lag("eu-west", settings=settings)] == [
        ("eu-west/bronze/events", 0)]


def test_lag_counts_unshipped_versions_and_their_age(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = two_region_settings(home, monkeypatch)
    ids = provision(settings, ("shop", "eu-west", "ecommerce", "standard", "pooled"))
    bronze = table_uri(region_lake(settings, "eu-west").uri, layer="bronze", table="events", region="eu-west")
    append(bronze, events([ids["shop"]], 10))
    replicate_region("eu-west", settings=settings)
    append(bronze, events([ids["shop"]], 10, start=10))
    append(bronze, events([ids["shop"]], 10, start=20))
    [lag] = region_lag("eu-west", settings=settings)
    assert (lag.source_version, lag.replica_version, lag.lag_versions) == (3, 1, 2)
    assert lag.lag_seconds >= 0


def test_residency_restricted_tenants_never_reach_the_peer(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = two_region_settings(home, monkeypatch)
    ids = provision(settings,
                    ("clinic", "eu-west", "healthcare", "enterprise", "dedicated"),
                    ("clinic-pooled", "eu-west", "healthcare", "enterprise", "pooled"),
                    ("shop", "eu-west", "ecommerce", "standard", "pooled"))
    lake = region_lake(settings, "eu-west").uri
    dedicated = table_uri(lake, layer="bronze", table="events", region="eu-west", placement="dedicated",
                          tenant_id=ids["clinic"])
    pooled_gold = table_uri(lake, layer="gold", table="daily", region="eu-west")
    pooled_bronze = table_uri(lake, layer="bronze", table="events", region="eu-west")
    append(dedicated, events([ids["clinic"]], 20))
    append(pooled_bronze, events([ids["shop"]], 20))
    append(pooled_gold, events([ids["shop"], ids["clinic-pooled"]], 20))

    run = replicate_region("eu-west", settings=settings)
    by_table = {t.relative: t for t in run.tables}
    assert by_table[f"eu-west/tenants/{ids['clinic']}/bronze/events"].withheld
    assert ids["clinic-pooled"] in (by_table["eu-west/gold/daily"].blocked or "")
    assert by_table["eu-west/bronze/events"].versions == [0, 1]
    replica = replica_lake(settings, "eu-west").uri
    assert not Path(f"{replica}/eu-west/tenants").exists()
    # refused at the commit holding the restricted tenant's rows, before any file of it was copied
    assert not list(Path(f"{replica}/eu-west/gold").rglob("*.parquet"))
    assert residency_violations(settings) == []
