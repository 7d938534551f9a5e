"""The exactly-once stream ingestor against the real bundled broker and real Delta tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from ingestion.bronze import read_run_log, reconcile_run_log
from ingestion.stream.ingestor import StreamIngestor, StreamOptions
from tests.ingestion._fixtures import bronze_uri, provision, quarantine_uri, read_all
from tests.ingestion.stream._fixtures import produce

pytestmark = pytest.mark.integration


@pytest.fixture
def sim_tenants(home: Path) -> list[tuple[str, str]]:
    tenants = provision(
        [
            ("shop-one", "ecommerce", "standard"),
            ("clinic-one", "healthcare", "enterprise"),
            ("school-one", "education", "free"),
        ]
    )
    return [(t.id, t.industry) for t in tenants]


def test_bad_input_is_quarantined_by_kind_and_reconciles(
    broker_bootstrap: str, topic_name: str, sim_tenants: list[tuple[str, str]]
) -> None:
    from ingestion.synthetic import EXPECTED_REASON, simulate

    sim = simulate(sim_tenants, customers=150, days=14, seed=5, bad_share=0.03)
    sent = produce(broker_bootstrap, topic_name, sim)
    result = StreamIngestor(
        StreamOptions(topic=topic_name, bootstrap=broker_bootstrap, until_caught_up=True, max_batch=2_000)
    ).run()
    totals = result.totals
    assert totals.received == sent and totals.balanced()
    assert totals.landed == sim.events.height
    expected = {EXPECTED_REASON[k]: n for k, n in sim.bad_counts().items() if EXPECTED_REASON[k]}
    assert totals.quarantined_by_reason == expected
    assert totals.duplicates == sim.bad_counts().get("duplicate", 0)
    dedicated = next(t for t, industry in sim_tenants if industry == "healthcare")
    pooled = read_all(bronze_uri())
    own = read_all(bronze_uri(tenant_id=dedicated))
    assert dedicated not in set(pooled.get_column("tenant_id")) and set(own.get_column("tenant_id")) == {
        dedicated
    }
    assert pooled.height + own.height == sim.events.height
    assert read_all(quarantine_uri()).height == totals.quarantined
    log_totals = reconcile_run_log(read_run_log())
    assert log_totals.received == sent and log_totals.balanced()


def test_replay_from_offset_zero_and_a_restart_add_nothing(
    broker_bootstrap: str, topic_name: str, sim_tenants: list[tuple[str, str]]
) -> None:
    from ingestion.synthetic import simulate

    sim = simulate(sim_tenants, customers=100, days=10, seed=6)
    produce(broker_bootstrap, topic_name, sim)
    options = StreamOptions(
        topic=topic_name, bootstrap=broker_bootstrap, until_caught_up=True, max_batch=3_000
    )
    StreamIngestor(options).run()
    rows = read_all(bronze_uri()).height + read_all(bronze_uri(tenant_id=sim_tenants[1][0])).height
    assert rows == sim.events.height
    restarted = StreamIngestor(options).run()  # resumes from the run log: nothing left to read
    assert restarted.totals.received == 0
    assert restarted.start_offsets == restarted.end_offsets
    replay = StreamIngestor(
        StreamOptions(
            topic=topic_name,
            bootstrap=broker_bootstrap,
            until_caught_up=True,
            namespace="replay-all",
            client="kafka-python",
        )
    ).run()
    assert replay.totals.received == sum(restarted.end_offsets.values())
    assert replay.totals.landed == 0 and replay.totals.duplicates_existing == sim.events.height
    after = read_all(bronze_uri()).height + read_all(bronze_uri(tenant_id=sim_tenants[1][0])).height
    assert after == rows


def test_two_ingestors_on_disjoint_partitions_commit_concurrently(
    broker_bootstrap: str, topic_name: str, sim_tenants: list[tuple[str, str]]
) -> None:
    import threading

    from ingestion.synthetic import simulate

    sim = simulate(sim_tenants, customers=200, days=10, seed=8)
    produce(broker_bootstrap, topic_name, sim)
    results = {}

    def work(worker: int) -> None:
        options = StreamOptions(
            topic=topic_name,
            bootstrap=broker_bootstrap,
            worker=worker,
            workers=2,
            until_caught_up=True,
            max_batch=500,
        )
        results[worker] = StreamIngestor(options).run()

    threads = [threading.Thread(target=work, args=(w,)) for w in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert set(results) == {0, 1}
    assert results[0].partitions == [0, 2] and results[1].partitions == [1, 3]
    landed = read_all(bronze_uri()).vstack(read_all(bronze_uri(tenant_id=sim_tenants[1][0])))
    assert landed.height == sim.events.height == landed.select("tenant_id", "event_id").n_unique()
    assert results[0].totals.landed + results[1].totals.landed == sim.events.height


@pytest.mark.slow
def test_consumer_group_members_resume_from_the_delta_log_at_every_assignment(
    broker_bootstrap: str, topic_name: str, sim_tenants: list[tuple[str, str]]
) -> None:
    """Group mode (kafka-python, the only client whose groups work on the bundled broker): a first member lands
    part of the topic and leaves; the group's committed offsets are then rewound to 0; two members join and
    rebalance. Positions must come from the Delta log: nothing is read twice, nothing is lost."""
    import threading

    from ingestion.stream import make_source
    from ingestion.synthetic import simulate

    sim = simulate(sim_tenants, customers=200, days=60, seed=9)
    produce(broker_bootstrap, topic_name, sim)
    group = f"g-{topic_name}"

    def options(**extra: object) -> StreamOptions:
        return StreamOptions(topic=topic_name, bootstrap=broker_bootstrap, client="kafka-python",
                             api_version=(2, 5), group_id=group, subscribe=True, max_batch=300,
                             **{"idle_timeout_s": 60, **extra})  # type: ignore[arg-type]

    first = StreamIngestor(options(max_flushes=3)).run()
    assert first.flushes == 3 and 0 < first.totals.landed < sim.events.height
    landed_first = {p: o for p, o in first.end_offsets.items() if o > 0}
    assert landed_first

    with make_source("kafka-python", broker_bootstrap, group_id=group, api_version=(2, 5)) as rewinder:
        rewinder.assign(topic_name)
        assert rewinder.commit_offsets(dict.fromkeys(range(4), 0))  # the group now says "start at 0"

    results = {}

    def member(name: str) -> None:
        # A group (re)join on the bundled broker takes ~15 s per round: wait long enough for the assignment.
        results[name] = StreamIngestor(options(until_caught_up=True, idle_timeout_s=120)).run()

    threads = [threading.Thread(target=member, args=(name,)) for name in ("b", "c")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert set(results) == {"b", "c"}
    later = list(results.values())
    for partition, offset in landed_first.items():  # whoever got it resumed where the first member stopped
        starts = [r.start_offsets[partition] for r in later if partition in r.start_offsets]
        assert starts and min(starts) == offset
    assert sum(r.totals.duplicates for r in later) == 0
    assert first.totals.landed + sum(r.totals.landed for r in later) == sim.events.height
    landed = read_all(bronze_uri()).vstack(read_all(bronze_uri(tenant_id=sim_tenants[1][0])))
    assert landed.height == sim.events.height == landed.select("tenant_id", "event_id").n_unique()


def test_group_mode_options_are_checked() -> None:
    from shironzi.errors import InvalidInputError

    with pytest.raises(InvalidInputError, match="group id"):
        StreamOptions(topic="t", subscribe=True)
    with pytest.raises(InvalidInputError, match="not both"):
        StreamOptions(topic="t", subscribe=True, group_id="g", workers=2)


def test_stream_cli_rejects_a_malformed_api_version(capsys: pytest.CaptureFixture[str]) -> None:
    from shironzi.cli.main import run

    with pytest.raises(SystemExit) as exit_info:
        run(["ingest", "stream", "--topic", "t", "--group", "g", "--client", "kafka-python", "--api-version", "two"])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--api-version must look like 2.5" in err[0]
