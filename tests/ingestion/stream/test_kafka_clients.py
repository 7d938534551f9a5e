"""Both Kafka clients behind one interface, against the real bundled broker: every record produced is
read back exactly once, values intact, from explicit offsets."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import get_args

import pytest

from ingestion.stream.broker import ensure_topic, running_broker
from ingestion.stream.kafka import (
    ClientName,
    EventSink,
    EventSource,
    RecordBatch,
    consumer_lag,
    make_sink,
    make_source,
    partition_for_key,
)
from shironzi.errors import InvalidInputError, InvalidStateError, NotFoundError, ServiceUnavailableError
from tests._services import free_port
from tests.ingestion.stream._fixtures import require_broker_binary

CLIENTS: tuple[ClientName, ...] = get_args(ClientName)
PARTITIONS = 3
EVENTS = 600


def _event(i: int) -> tuple[bytes, bytes]:
    tenant = f"tenant-{i % 11:02d}"
    value = json.dumps({"tenant_id": tenant, "event_id": f"e-{i:06d}", "amount": i * 1.5}).encode()
    return tenant.encode(), value


def _read_all(source: EventSource, expected: int, *, deadline_s: float = 20.0) -> RecordBatch:
    """Poll until `expected` records arrived (or the deadline), then once more to prove nothing follows."""
    merged = RecordBatch.empty("")
    stop = time.monotonic() + deadline_s
    while len(merged) < expected and time.monotonic() < stop:
        batch = source.poll_batch(max_records=250, timeout_s=0.5)
        merged.topic = batch.topic
        for column in ("partitions", "offsets", "keys", "values", "timestamps"):
            getattr(merged, column).extend(getattr(batch, column))
    extra = source.poll_batch(max_records=250, timeout_s=0.3)
    assert len(extra) == 0, f"read {len(extra)} records beyond the {expected} expected"
    return merged


@pytest.fixture(scope="module", params=CLIENTS)
def produced(request: pytest.FixtureRequest, broker_bootstrap: str) -> Iterator[tuple[str, str, ClientName]]:
    """A topic filled with EVENTS keyed events by one sink client (routed by partition_for_key)."""
    client: ClientName = request.param
    topic = f"events-by-{client}"
    ensure_topic(broker_bootstrap, topic, partitions=PARTITIONS)
    with make_sink(client, broker_bootstrap) as sink:
        assert isinstance(sink, EventSink) and sink.client == client
        for i in range(EVENTS):
            key, value = _event(i)
            sink.produce(topic, key, value)
        assert sink.flush() == EVENTS
    yield broker_bootstrap, topic, client


@pytest.mark.integration
@pytest.mark.parametrize("reader", CLIENTS)
def test_every_record_comes_back_exactly_once(
    produced: tuple[str, str, ClientName], reader: ClientName
) -> None:
    bootstrap, topic, _writer = produced
    with make_source(reader, bootstrap) as source:
        assert isinstance(source, EventSource) and source.client == reader
        source.assign(topic)
        batch = _read_all(source, EVENTS)
        positions, marks = source.positions(), source.high_watermarks()

    assert batch.topic == topic and len(batch) == EVENTS
    pairs = list(zip(batch.partitions, batch.offsets, strict=True))
    assert len(set(pairs)) == EVENTS, "a (partition, offset) was delivered twice"
    per_partition = Counter(batch.partitions)
    for partition, count in per_partition.items():
        offsets = [o for p, o in pairs if p == partition]
        assert offsets == list(range(count)), "offsets must be contiguous and in order within a partition"
    assert sorted(batch.values) == sorted(_event(i)[1] for i in range(EVENTS))  # type: ignore[type-var]
    for key, value, partition in zip(batch.keys, batch.values, batch.partitions, strict=True):
        assert key is not None and value is not None
        assert json.loads(value)["tenant_id"] == key.decode()
        assert partition == partition_for_key(key, PARTITIONS), "sinks must route by partition_for_key"
    assert all(ts > 1_600_000_000_000 for ts in batch.timestamps)
    assert positions == dict(per_partition)
    assert marks == dict(per_partition)
    assert batch.next_offsets() == dict(per_partition)


@pytest.mark.integration
@pytest.mark.parametrize("reader", CLIENTS)
def test_resume_from_a_middle_offset_returns_only_the_rest(
    produced: tuple[str, str, ClientName], reader: ClientName
) -> None:
    bootstrap, topic, _writer = produced
    with make_source(reader, bootstrap) as source:
        source.assign(topic)
        everything = _read_all(source, EVENTS)
    ends = everything.next_offsets()
    middle = {p: end // 2 for p, end in ends.items()}
    expected = {
        (p, o) for p, o in zip(everything.partitions, everything.offsets, strict=True) if o >= middle[p]
    }
    by_position = dict(
        zip(zip(everything.partitions, everything.offsets, strict=True), everything.values, strict=True)
    )

    with make_source(reader, bootstrap) as source:
        source.assign(topic, [0, 1], {0: middle[0], 1: middle[1]})
        assert source.positions() == {0: middle[0], 1: middle[1]}
        rest = _read_all(source, sum(ends[p] - middle[p] for p in (0, 1)))
        assert consumer_lag(source) == {0: 0, 1: 0}

    got = set(zip(rest.partitions, rest.offsets, strict=True))
    assert got == {(p, o) for p, o in expected if p in (0, 1)}, (
        "only partitions 0-1, only offsets >= the start"
    )
    assert rest.values == [by_position[pair] for pair in zip(rest.partitions, rest.offsets, strict=True)]


@pytest.mark.integration
@pytest.mark.parametrize("client", CLIENTS)
def test_lag_counts_records_behind_the_position(
    broker_bootstrap: str, topic_name: str, client: ClientName
) -> None:
    ensure_topic(broker_bootstrap, topic_name, partitions=2)
    with make_sink(client, broker_bootstrap) as sink:
        for i in range(8):  # one flush per record: one record batch each
            sink.produce(topic_name, None, b'{"i": %d}' % i, partition=i % 2)
            sink.flush()
    with make_source(client, broker_bootstrap) as source:
        source.assign(topic_name, start_offsets={0: 1})
        assert source.high_watermarks() == {0: 4, 1: 4}
        assert consumer_lag(source) == {0: 3, 1: 4}
        batch = _read_all(source, 7)
        assert sorted(zip(batch.partitions, batch.offsets, strict=True)) == [(0, 1), (0, 2), (0, 3)] + [
            (1, o) for o in range(4)
        ]
        assert consumer_lag(source) == {0: 0, 1: 0}
        assert source.positions() == {0: 4, 1: 4}


@pytest.mark.integration
@pytest.mark.parametrize("client", CLIENTS)
def test_commit_offsets_records_group_offsets(
    broker_bootstrap: str, topic_name: str, client: ClientName
) -> None:
    from confluent_kafka import Consumer, TopicPartition

    ensure_topic(broker_bootstrap, topic_name, partitions=1)
    with make_sink(client, broker_bootstrap) as sink:
        for i in range(5):
            sink.produce(topic_name, b"k", b"%d" % i)
    group = f"lag-{topic_name}"
    with make_source(client, broker_bootstrap, group_id=group) as source:
        source.assign(topic_name)
        batch = _read_all(source, 5)
        assert source.commit_offsets(batch.next_offsets()) is True
    oracle = Consumer({"bootstrap.servers": broker_bootstrap, "group.id": group})
    try:
        committed = oracle.committed([TopicPartition(topic_name, 0)], timeout=10)
    finally:
        oracle.close()
    assert committed[0].offset == 5
    with make_source(client, broker_bootstrap) as no_group:
        no_group.assign(topic_name)
        assert no_group.commit_offsets({0: 5}) is False


@pytest.mark.integration
@pytest.mark.slow
def test_kafka_python_consumer_group_with_api_version_2_5(broker_bootstrap: str, topic_name: str) -> None:
    ensure_topic(broker_bootstrap, topic_name, partitions=2)
    with make_sink("confluent", broker_bootstrap) as sink:
        for i in range(20):
            sink.produce(topic_name, b"key-%d" % i, b"%d" % i)
    with make_source("kafka-python", broker_bootstrap, api_version=(2, 5)) as source:
        source.subscribe(topic_name, group_id=f"g-{topic_name}")
        batch = _read_all(source, 20, deadline_s=30)
        assert sorted(batch.values) == sorted(b"%d" % i for i in range(20))  # type: ignore[type-var]


@pytest.mark.integration
def test_bad_requests_are_clear_errors(broker_bootstrap: str, topic_name: str) -> None:
    ensure_topic(broker_bootstrap, topic_name, partitions=2)
    for client in CLIENTS:
        with make_source(client, broker_bootstrap) as source:
            with pytest.raises(InvalidStateError, match="assign"):
                source.poll_batch()
            with pytest.raises(NotFoundError, match="no-such-topic"):
                source.assign("no-such-topic")
            with pytest.raises(InvalidInputError, match=r"no partition\(s\) \[7\]"):
                source.assign(topic_name, [0, 7])
            with pytest.raises(InvalidInputError, match="unassigned"):
                source.assign(topic_name, [0], {1: 0})
            with pytest.raises(InvalidInputError, match=">= 0"):
                source.assign(topic_name, [0], {0: -5})
            source.assign(topic_name)
            with pytest.raises(InvalidInputError, match="max_records"):
                source.poll_batch(0)
        with make_sink(client, broker_bootstrap) as sink:
            with pytest.raises(NotFoundError, match="no-such-topic"):
                sink.produce("no-such-topic", b"k", b"v")
            with pytest.raises(InvalidInputError, match="no partition 2"):
                sink.produce(topic_name, b"k", b"v", partition=2)
            assert sink.flush() == 0
    with pytest.raises(InvalidInputError, match="unknown Kafka client"):
        make_source("franz", broker_bootstrap)  # type: ignore[arg-type]


@pytest.mark.integration
@pytest.mark.parametrize("client", CLIENTS)
def test_unreachable_bootstrap_is_service_unavailable(client: ClientName) -> None:
    dead = f"127.0.0.1:{free_port()}"
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match="unreachable") as caught:
        make_source(client, dead, connect_timeout_s=1)
    assert "shironzi broker start" in caught.value.message
    with pytest.raises(ServiceUnavailableError, match="unreachable"):
        make_sink(client, dead, connect_timeout_s=1)
    assert time.monotonic() - started < 10


@pytest.mark.integration
@pytest.mark.parametrize("client", CLIENTS)
def test_undelivered_messages_make_flush_raise(
    tmp_path_factory: pytest.TempPathFactory, client: ClientName
) -> None:
    require_broker_binary()
    with running_broker(tmp_path_factory.mktemp("dying")) as info:
        ensure_topic(info.bootstrap, "doomed", partitions=1)
        sink = make_sink(client, info.bootstrap, delivery_timeout_s=2)
        sink.produce("doomed", b"k", b"before")
        assert sink.flush() == 1
    # the broker is gone: these can never be delivered, and flush must say so
    for i in range(3):
        sink.produce("doomed", b"k", b"after-%d" % i)
    with pytest.raises(ServiceUnavailableError, match="not delivered|failed"):
        sink.flush(timeout_s=10)


def test_partition_for_key_is_stable_and_matches_librdkafka() -> None:
    assert partition_for_key(b"tenant-a", 8) == partition_for_key("tenant-a", 8)
    assert [partition_for_key(b"tenant-%d" % i, 4) for i in range(6)] == [
        partition_for_key(b"tenant-%d" % i, 4) for i in range(6)
    ]
    spread = Counter(partition_for_key(f"tenant-{i}", 4) for i in range(400))
    assert set(spread) == {0, 1, 2, 3} and min(spread.values()) > 50
    assert all(partition_for_key(f"t{i}", 1) == 0 for i in range(10))
    with pytest.raises(InvalidInputError):
        partition_for_key(b"x", 0)


@pytest.mark.integration
def test_partition_for_key_agrees_with_librdkafkas_consistent_partitioner(
    broker_bootstrap: str, topic_name: str
) -> None:
    from confluent_kafka import Producer

    ensure_topic(broker_bootstrap, topic_name, partitions=5)
    placed: dict[bytes, int] = {}

    def remember(err: object, msg: object) -> None:
        assert err is None
        placed[msg.key()] = msg.partition()  # type: ignore[attr-defined]

    producer = Producer({"bootstrap.servers": broker_bootstrap, "partitioner": "consistent"})
    keys = [b"tenant-%03d" % i for i in range(40)]
    for key in keys:
        producer.produce(topic_name, b"v", key, on_delivery=remember)
    assert producer.flush(10) == 0
    assert placed == {key: partition_for_key(key, 5) for key in keys}


def test_record_batch_columns() -> None:
    batch = RecordBatch(
        "t", [0, 1, 0, 1], [5, 9, 6, 10], [b"a", None, b"c", b"d"], [b"{}", b"[]", b"1", b"2"], [1, 2, 3, 4]
    )
    assert len(batch) == 4
    assert batch.next_offsets() == {0: 7, 1: 11}
    assert batch.ndjson() == b"{}\n[]\n1\n2"
    assert RecordBatch.empty("t").next_offsets() == {}
    with pytest.raises(InvalidInputError, match="tombstones"):
        RecordBatch("t", [0], [0], [b"k"], [None], [0]).ndjson()


@pytest.mark.integration
@pytest.mark.parametrize("client", CLIENTS)
def test_each_record_keeps_its_traceparent_header(broker_bootstrap: str, client: ClientName) -> None:
    """The trace context the API puts in the headers reaches the polled batch, row by row, with either client."""
    topic = f"traced-{client}"
    ensure_topic(broker_bootstrap, topic, partitions=1)
    parent = b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with make_sink(client, broker_bootstrap) as sink:
        sink.produce(topic, b"k", b"{}", headers={"idempotency-key": b"t:1"})
        sink.produce(topic, b"k", b"{}", headers={"idempotency-key": b"t:2", "traceparent": parent})
        assert sink.flush() == 2
    with make_source(client, broker_bootstrap) as source:
        source.assign(topic)
        batch = source.poll_batch(max_records=10, timeout_s=5)
        while len(batch) < 2:
            more = source.poll_batch(max_records=10, timeout_s=5)
            assert len(more), "the two records did not come back"
            batch = RecordBatch(batch.topic, batch.partitions + more.partitions, batch.offsets + more.offsets,
                                batch.keys + more.keys, batch.values + more.values,
                                batch.timestamps + more.timestamps, batch.traceparents + more.traceparents)
    assert batch.traceparents == [None, parent]
    assert batch.first_traceparent() == parent
