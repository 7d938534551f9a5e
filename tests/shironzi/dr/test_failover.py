"""Failover and failback: the epoch fences the old region's writers, reads move to the replica and back, the
outage's writes ship home, and every refused request changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from shironzi.dr.failover import failback, failover
from shironzi.dr.regions import region_lake, region_states, replica_lake
from shironzi.dr.replicate import replicate_region
from shironzi.errors import FencedError, InvalidInputError, InvalidStateError
from shironzi.lake import Txn, append, read_arrow, table_uri, table_version, txn_version
from shironzi.lake.groups import LakeGroup
from tests.shironzi.dr._fixtures import ADMIN, events, provision, two_region_settings


def test_a_fenced_writer_cannot_commit_after_failover(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = two_region_settings(home, monkeypatch, writer_region="eu-west")
    ids = provision(settings, ("shop", "eu-west", "ecommerce", "standard", "pooled"))
    bronze = table_uri(region_lake(settings, "eu-west").uri, layer="bronze", table="events", region="eu-west")
    append(bronze, events([ids["shop"]], 10))  # the writer's first commit takes the region's epoch (0)
    failover("eu-west", ctx=ADMIN, settings=settings)
    before = table_version(bronze)
    with pytest.raises(FencedError, match="epoch 1"):
        append(bronze, events([ids["shop"]], 10, start=10), txn=Txn("ingest:events:p0", 7))
    assert table_version(bronze) == before and txn_version(bronze, "ingest:events:p0") is None


def test_failover_serves_from_the_replica_and_failback_ships_the_outage_home(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = two_region_settings(home, monkeypatch, dr_state_cache_seconds="0")
    ids = provision(settings, ("shop", "eu-west", "ecommerce", "standard", "pooled"))
    home_lake, replica = region_lake(settings, "eu-west").uri, replica_lake(settings, "eu-west").uri
    group = LakeGroup.pooled("eu-west", [ids["shop"]])
    bronze = table_uri(home_lake, layer="bronze", table="events", region="eu-west")
    assert group.uri(settings, layer="bronze", table="events") == bronze
    append(bronze, events([ids["shop"]], 30), txn=Txn("ingest:events:p0", 29))
    replicate_region("eu-west", settings=settings)
    append(bronze, events([ids["shop"]], 5, start=30), txn=Txn("ingest:events:p0", 34))  # never shipped...

    result = failover("eu-west", ctx=ADMIN, settings=settings)  # ...but the last catch-up pass takes it along
    assert (result.serving_region, result.epoch, result.caught_up) == ("us-east", 1, 1)
    state = region_states(settings)["eu-west"]
    assert (state.state, state.serving_region) == ("failed_over", "us-east")
    served = group.uri(settings, layer="bronze", table="events")
    assert served == table_uri(replica, layer="bronze", table="events", region="eu-west")
    assert txn_version(served, "ingest:events:p0") == 34  # where the promoted ingestor resumes

    # the promoted ingestor writes in the peer; a zombie commit lands in the home lake meanwhile
    append(served, events([ids["shop"]], 10, start=35), txn=Txn("ingest:events:p0", 44))
    append(bronze, events([ids["shop"]], 3, start=900))

    done = failback("eu-west", ctx=ADMIN, settings=settings)
    assert done.caught_up == 1 and region_states(settings)["eu-west"].state == "active"
    assert group.uri(settings, layer="bronze", table="events") == bronze
    ids_home = sorted(read_arrow(bronze).column("event_id").to_pylist())
    assert ids_home == sorted(f"ev-{i}" for i in range(45))  # the outage's rows, not the zombie's
    assert txn_version(bronze, "ingest:events:p0") == 44
    assert list(Path(bronze, "_diverged").rglob("*.json"))  # the zombie commit is kept aside, not deleted
    assert replicate_region("eu-west", settings=settings).versions == 0  # forward replication agrees again


def test_bad_requests_are_refused_and_change_nothing(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = two_region_settings(home, monkeypatch, dr_failback_max_lag_versions="1")
    ids = provision(settings, ("shop", "eu-west", "ecommerce", "standard", "pooled"))
    with pytest.raises(InvalidInputError, match="unknown region 'mars'"):
        failover("mars", ctx=ADMIN, settings=settings)
    with pytest.raises(InvalidStateError, match="needs it failed_over"):
        failback("eu-west", ctx=ADMIN, settings=settings)
    assert {s.epoch for s in region_states(settings).values()} == {0}

    failover("us-east", ctx=ADMIN, settings=settings)
    with pytest.raises(InvalidStateError, match="peer is failed_over"):  # the peer is down too
        failover("eu-west", ctx=ADMIN, settings=settings)
    assert region_states(settings)["eu-west"].epoch == 0
    with pytest.raises(InvalidStateError, match="needs it active"):  # a second failover of the same region
        failover("us-east", ctx=ADMIN, settings=settings)
    assert region_states(settings)["us-east"].epoch == 1

    served = LakeGroup.pooled("us-east", []).uri(settings, layer="bronze", table="events")
    for batch in range(3):  # the outage's writes: 4 versions (create + 3) the home lake lacks, past the bound of 1
        append(served, events([ids["shop"]], 5, start=batch * 5))
    with pytest.raises(InvalidStateError, match="lags 4 versions"):
        failback("us-east", ctx=ADMIN, settings=settings)
    assert region_states(settings)["us-east"].state == "failed_over"
    assert not Path(region_lake(settings, "us-east").uri, "us-east").exists()
    assert failback("us-east", ctx=ADMIN, settings=settings, force=True).caught_up == 4


def test_routing_keeps_the_last_known_states_while_the_registry_is_unreachable(
    home: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    settings = two_region_settings(home, monkeypatch, dr_state_cache_seconds="0")
    failover("eu-west", ctx=ADMIN, settings=settings)
    group = LakeGroup.pooled("eu-west", [])
    served = group.uri(settings, layer="gold", table="daily")
    assert served.startswith(replica_lake(settings, "eu-west").uri)
    (home / "registry.db").rename(home / "registry.moved")  # the registry's file is gone: reads fail
    (home / "registry.db").mkdir()
    from shironzi.tenancy import reset_registries

    reset_registries()
    assert group.uri(settings, layer="gold", table="daily") == served
    assert "region states unreadable" in caplog.text
