"""The Kafka client layer: one small interface, two implementations (confluent-kafka and kafka-python).

`EventSource` reads with MANUAL partition assignment at explicit offsets (the stream ingestor keeps its
own offsets in the Delta `txn`, so group offsets are for lag monitoring only) and returns whole
batches as parallel columns (`RecordBatch`), so the per-message Python work is a few list
comprehensions. `EventSink` produces keyed events, routing by `partition_for_key` when no partition is
given, so both clients put a tenant's events on the same partition, and it never loses a failure
silently: `flush()` raises when anything was not delivered.

Known limits of the bundled broker (tansu), measured on this machine:
- consumer-group subscription works with kafka-python only when `api_version=(2, 5)`, and not at all
  with confluent-kafka (librdkafka): use `assign` against it;
- its ListOffsets(latest) answers the base offset of the LAST record batch + 1, not the end offset, so
  `high_watermarks()` also takes the watermark that fetch responses report (which is correct);
- it does not answer OFFSET_OUT_OF_RANGE: a start offset past the end just returns nothing;
- kafka-python can read lz4/snappy/zstd batches only with extra codec packages, so sinks default to
  `compression="none"` (gzip works for both clients without extras).

Heavy client imports happen inside the implementations; importing this module stays cheap.
"""

from __future__ import annotations

import logging
import socket
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from shironzi.errors import (
    ConfigurationError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    ServiceUnavailableError,
    ShironziError,
)

log = logging.getLogger("shironzi.ingestion.kafka")
librdkafka_log = logging.getLogger("shironzi.ingestion.librdkafka")  # librdkafka's own log lines, not stderr

ClientName = Literal["confluent", "kafka-python"]
OffsetReset = Literal["error", "earliest", "latest"]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
CLIENTS: tuple[str, ...] = get_args(ClientName)

START_HINT = "run `shironzi broker start` or set SHIRONZI_KAFKA_BOOTSTRAP"
DEFAULT_GROUP_ID = "shironzi-manual"

# Group mode: called with the partitions the group just assigned; returns where to start reading each of them
# (the stream ingestor answers from the Delta log, so the group's committed offsets never decide a position).
AssignCallback = Callable[[list[int]], Mapping[int, int]]

# Consumer tuning for throughput on a small machine: big fetches, a deep prefetch queue, and a short
# backoff when that queue is full (librdkafka's default of 1 s stalls a busy consumer at every refill).
CONFLUENT_CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable.auto.commit": False,
    "enable.auto.offset.store": False,
    "enable.partition.eof": False,
    "fetch.max.bytes": 64 << 20,
    "max.partition.fetch.bytes": 16 << 20,
    "fetch.wait.max.ms": 100,
    "queued.min.messages": 200_000,
    "queued.max.messages.kbytes": 128 << 10,
    "fetch.queue.backoff.ms": 20,
    "log_level": 3,
}
CONFLUENT_PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "linger.ms": 20,
    "batch.size": 1 << 20,
    "batch.num.messages": 100_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 512 << 10,
    "delivery.report.only.error": True,  # success reports cost a Python call each; failures still arrive
    "log_level": 3,
}
KAFKA_PYTHON_CONSUMER_DEFAULTS: dict[str, Any] = {
    "enable_auto_commit": False,
    "fetch_max_bytes": 64 << 20,
    "max_partition_fetch_bytes": 16 << 20,
    "fetch_max_wait_ms": 100,
    "check_crcs": False,
    "receive_buffer_bytes": 4 << 20,
}
KAFKA_PYTHON_PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "linger_ms": 20,
    "batch_size": 1 << 20,
    "max_request_size": 16 << 20,
    "send_buffer_bytes": 4 << 20,
}


# ----------------------------------------------------------------------------------------- routing


def partition_for_key(key: bytes | str, partitions: int) -> int:
    """The partition a key goes to: CRC32(key) mod partitions, the same as librdkafka's `consistent`
    partitioner, so a tenant's events land on one partition whichever client produced them."""
    if partitions < 1:
        raise InvalidInputError(f"partitions must be >= 1, got {partitions}")
    raw = key.encode() if isinstance(key, str) else key
    return (zlib.crc32(raw) & 0xFFFFFFFF) % partitions


# ------------------------------------------------------------------------------------------ batches


@dataclass(slots=True)
class RecordBatch:
    """One polled batch as parallel columns: row i is (partitions[i], offsets[i], keys[i], values[i],
    timestamps[i]); timestamps are epoch milliseconds (-1 when the broker gave none). Within a partition,
    rows are in offset order."""

    topic: str
    partitions: list[int]
    offsets: list[int]
    keys: list[bytes | None]
    values: list[bytes | None]
    timestamps: list[int]

    @classmethod
    def empty(cls, topic: str) -> RecordBatch:
        return cls(topic, [], [], [], [], [])

    def __len__(self) -> int:
        return len(self.offsets)

    def next_offsets(self) -> dict[int, int]:
        """Per partition, the offset after the last record in the batch: where to resume, what to commit."""
        # dict() keeps the last (= highest) offset seen for each partition.
        return {
            partition: offset + 1 for partition, offset in dict(zip(self.partitions, self.offsets, strict=True)).items()
        }

    def settled(self, assigned: set[int], starts: Mapping[int, int]) -> RecordBatch:
        """After a rebalance inside one poll: only records of partitions still assigned, at or after the offset
        their latest assignment started from, each (partition, offset) once. Records of a revoked partition
        were not landed here, so its new owner reads them again from the Delta log's position."""
        seen: set[tuple[int, int]] = set()
        keep: list[int] = []
        for i, (partition, offset) in enumerate(zip(self.partitions, self.offsets, strict=True)):
            if partition in assigned and offset >= starts.get(partition, 0) and (partition, offset) not in seen:
                seen.add((partition, offset))
                keep.append(i)
        if len(keep) == len(self.offsets):
            return self
        return RecordBatch(self.topic, [self.partitions[i] for i in keep], [self.offsets[i] for i in keep],
                           [self.keys[i] for i in keep], [self.values[i] for i in keep],
                           [self.timestamps[i] for i in keep])

    def ndjson(self) -> bytes:
        """The values joined by newlines (for pyarrow.json / polars), refusing tombstones."""
        try:
            return b"\n".join(self.values)  # type: ignore[arg-type]
        except TypeError as exc:
            raise InvalidInputError(f"batch from {self.topic!r} holds tombstones (null values)") from exc


# ------------------------------------------------------------------------------------------ protocol


@runtime_checkable
class EventSource(Protocol):
    """Reads one topic with manual partition assignment at explicit offsets."""

    client: ClientName

    def assign(
        self,
        topic: str,
        partitions: Sequence[int] | None = None,
        start_offsets: Mapping[int, int] | None = None,
    ) -> None:
        """Read `partitions` of `topic` (all when None), each from its start offset (earliest when absent)."""
        ...

    def subscribe(self, topic: str, *, group_id: str, on_assign: AssignCallback | None = None) -> None:
        """Consumer-group mode for real Kafka (not supported by the bundled broker for confluent). At every
        assignment, `on_assign` says where each newly assigned partition starts (else: the group's offsets)."""
        ...

    def poll_batch(self, max_records: int = 10_000, timeout_s: float = 1.0) -> RecordBatch:
        """Up to `max_records` records; returns when that many are collected or `timeout_s` has passed."""
        ...

    def positions(self) -> dict[int, int]:
        """Per assigned partition, the offset of the next record poll_batch will return."""
        ...

    def high_watermarks(self) -> dict[int, int]:
        """Per assigned partition, the offset after the last record in the log (for lag)."""
        ...

    def commit_offsets(self, offsets: Mapping[int, int]) -> bool:
        """Best effort: record group offsets for lag monitoring. False when not done (no group, broker)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> EventSource: ...

    def __exit__(self, *exc: object) -> None: ...


@runtime_checkable
class EventSink(Protocol):
    """Produces keyed events; `flush` raises when any of them was not delivered."""

    client: ClientName

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        partition: int | None = None,
        headers: Mapping[str, bytes] | None = None,
    ) -> None: ...

    def flush(self, timeout_s: float = 30.0) -> int:
        """Wait for every produced message; returns how many were delivered since the last flush."""
        ...

    def close(self, timeout_s: float = 30.0) -> None: ...

    def __enter__(self) -> EventSink: ...

    def __exit__(self, *exc: object) -> None: ...


# ------------------------------------------------------------------------------------------- helpers


def check_reachable(bootstrap: str, *, timeout_s: float = 5.0) -> None:
    """Fail fast with ServiceUnavailableError when no bootstrap server accepts a TCP connection."""
    addresses = [item.strip().split("://", 1)[-1] for item in bootstrap.split(",") if item.strip()]
    if not addresses:
        raise ConfigurationError("empty Kafka bootstrap address; " + START_HINT)
    last_error: OSError | None = None
    for address in addresses:
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ConfigurationError(f"invalid Kafka bootstrap address {address!r}: expected host:port")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
                return
        except OSError as exc:
            last_error = exc
    raise ServiceUnavailableError(
        f"Kafka broker at {bootstrap} is unreachable ({last_error}); {START_HINT}", bootstrap=bootstrap
    )


def _check_limits(max_records: int, timeout_s: float) -> None:
    if max_records < 1:
        raise InvalidInputError(f"max_records must be >= 1, got {max_records}")
    if timeout_s < 0:
        raise InvalidInputError(f"timeout_s must be >= 0, got {timeout_s}")


def _select_partitions(
    topic: str,
    available: Sequence[int],
    partitions: Sequence[int] | None,
    start_offsets: Mapping[int, int] | None,
) -> list[int]:
    chosen = sorted(available) if partitions is None else list(dict.fromkeys(partitions))
    unknown = sorted(set(chosen) - set(available))
    if unknown:
        raise InvalidInputError(f"topic {topic!r} has no partition(s) {unknown}; it has {len(available)}", topic=topic)
    offsets = dict(start_offsets or {})
    stray = sorted(set(offsets) - set(chosen))
    if stray:
        raise InvalidInputError(f"start offsets given for unassigned partition(s) {stray}", topic=topic)
    negative = {p: o for p, o in offsets.items() if o < 0}
    if negative:
        raise InvalidInputError(f"start offsets must be >= 0, got {negative}", topic=topic)
    return chosen


def _confluent_error(error: Any, *, bootstrap: str, topic: str | None = None) -> ShironziError:
    """A librdkafka KafkaError as the matching ShironziError."""
    from confluent_kafka import KafkaError

    code = error.code() if isinstance(error, KafkaError) else None
    text = error.str() if isinstance(error, KafkaError) else str(error)
    if code in (
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._TIMED_OUT,
        KafkaError._RESOLVE,
        KafkaError._MSG_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.REQUEST_TIMED_OUT,
    ):
        return ServiceUnavailableError(
            f"Kafka broker at {bootstrap} is unreachable or timing out ({text}); {START_HINT}",
            bootstrap=bootstrap,
        )
    if code in (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION):
        return NotFoundError(f"Kafka topic or partition not found ({text})", topic=topic)
    if code in (KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET):
        return InvalidStateError(
            f"offset out of range on {topic!r} ({text}): the records were deleted by "
            "retention or the offset is past the end",
            topic=topic,
        )
    return ServiceUnavailableError(f"Kafka client error on {topic or bootstrap!r}: {text}", bootstrap=bootstrap)


def _kafka_python_error(exc: BaseException, *, bootstrap: str, topic: str | None = None) -> ShironziError:
    """A kafka-python exception as the matching ShironziError."""
    from kafka import errors as kerr

    name = type(exc).__name__
    if isinstance(exc, kerr.UnsupportedCodecError):
        return ConfigurationError(
            f"kafka-python cannot decompress {topic!r}: {exc} (install the codec package, "
            "or produce with compression='none' or 'gzip')",
            topic=topic,
        )
    if isinstance(exc, kerr.KafkaConfigurationError):
        return ConfigurationError(f"invalid kafka-python settings: {exc}")
    if isinstance(exc, kerr.OffsetOutOfRangeError | kerr.NoOffsetForPartitionError):
        return InvalidStateError(f"offset out of range on {topic!r} ({name}: {exc})", topic=topic)
    if isinstance(exc, kerr.UnknownTopicOrPartitionError):
        return NotFoundError(f"Kafka topic or partition not found ({exc})", topic=topic)
    if isinstance(exc, kerr.KafkaConnectionError | kerr.KafkaTimeoutError | kerr.BrokerNotAvailableError):
        return ServiceUnavailableError(
            f"Kafka broker at {bootstrap} is unreachable or timing out ({name}); {START_HINT}",
            bootstrap=bootstrap,
        )
    return ServiceUnavailableError(f"Kafka client error on {topic or bootstrap!r}: {name}: {exc}", bootstrap=bootstrap)


class _Closing:
    def close(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------ confluent-kafka


class ConfluentSource(_Closing):
    """EventSource on confluent-kafka (librdkafka): `consume(num_messages=...)` returns whole batches."""

    client: ClientName = "confluent"

    def __init__(
        self,
        bootstrap: str,
        *,
        group_id: str | None = None,
        offset_reset: OffsetReset = "error",
        connect_timeout_s: float = 5.0,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        check_reachable(bootstrap, timeout_s=connect_timeout_s)
        self.bootstrap = bootstrap
        self._group_id = group_id
        self._offset_reset = offset_reset
        self._timeout_s = connect_timeout_s
        self._extra = dict(client_config or {})
        self._topic: str | None = None
        self._partitions: list[int] = []
        self._starts: dict[int, int] = {}
        self._subscribed = False
        self._rebalanced = False
        self._closed = False
        self._consumer = self._new_consumer(group_id or DEFAULT_GROUP_ID, offset_reset)

    def _new_consumer(self, group_id: str, offset_reset: OffsetReset) -> Any:
        from confluent_kafka import Consumer

        config = {
            **CONFLUENT_CONSUMER_DEFAULTS,
            "bootstrap.servers": self.bootstrap,
            "group.id": group_id,
            "auto.offset.reset": offset_reset,
            "logger": librdkafka_log,
            **self._extra,
        }
        return Consumer(config)

    def _available_partitions(self, topic: str) -> list[int]:
        from confluent_kafka import KafkaException

        try:
            metadata = self._consumer.list_topics(topic, timeout=self._timeout_s)
        except KafkaException as exc:
            raise _confluent_error(exc.args[0] if exc.args else exc, bootstrap=self.bootstrap, topic=topic) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise NotFoundError(f"Kafka topic {topic!r} does not exist on {self.bootstrap}", topic=topic)
        return sorted(found.partitions)

    def assign(
        self,
        topic: str,
        partitions: Sequence[int] | None = None,
        start_offsets: Mapping[int, int] | None = None,
    ) -> None:
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

        chosen = _select_partitions(topic, self._available_partitions(topic), partitions, start_offsets)
        offsets = dict(start_offsets or {})
        starts: dict[int, int] = {}
        try:
            for partition in chosen:
                if partition in offsets:
                    starts[partition] = offsets[partition]
                else:
                    starts[partition] = self._consumer.get_watermark_offsets(
                        TopicPartition(topic, partition), timeout=self._timeout_s
                    )[0]
            self._consumer.assign([TopicPartition(topic, p, offsets.get(p, OFFSET_BEGINNING)) for p in chosen])
        except KafkaException as exc:
            raise _confluent_error(exc.args[0] if exc.args else exc, bootstrap=self.bootstrap, topic=topic) from exc
        self._topic, self._partitions, self._starts, self._subscribed = topic, chosen, starts, False

    def subscribe(self, topic: str, *, group_id: str, on_assign: AssignCallback | None = None) -> None:
        """Group mode for real Kafka. Does NOT work against the bundled broker (librdkafka never gets an
        assignment from tansu). Each assignment starts where `on_assign` says; other partitions start at
        the group's offset, else per `offset_reset` ("error" is treated as "earliest")."""
        self._available_partitions(topic)
        self._consumer.close()
        reset: OffsetReset = "earliest" if self._offset_reset == "error" else self._offset_reset
        self._group_id = group_id
        self._consumer = self._new_consumer(group_id, reset)

        def assigned(consumer: Any, partitions: list[Any]) -> None:
            starts = dict(on_assign(sorted(tp.partition for tp in partitions))) if on_assign else {}
            for tp in partitions:
                if tp.partition in starts:
                    tp.offset = starts[tp.partition]
            self._starts.update(starts)
            self._rebalanced = True
            consumer.assign(partitions)

        def revoked(consumer: Any, partitions: list[Any]) -> None:
            self._rebalanced = True
            consumer.unassign()

        self._consumer.subscribe([topic], on_assign=assigned, on_revoke=revoked)
        self._topic, self._partitions, self._starts, self._subscribed = topic, [], {}, True

    def _assigned(self) -> list[int]:
        if self._subscribed:
            return sorted(tp.partition for tp in self._consumer.assignment())
        return self._partitions

    def _require_topic(self) -> str:
        if self._topic is None:
            raise InvalidStateError("call assign() (or subscribe()) before reading")
        return self._topic

    def poll_batch(self, max_records: int = 10_000, timeout_s: float = 1.0) -> RecordBatch:
        topic = self._require_topic()
        _check_limits(max_records, timeout_s)
        self._rebalanced = False
        messages = self._consumer.consume(num_messages=max_records, timeout=timeout_s)
        if not messages:
            return RecordBatch.empty(topic)
        failed = [m for m in messages if m.error() is not None]
        if failed:
            from confluent_kafka import KafkaError

            fatal = [m.error() for m in failed if m.error().code() != KafkaError._PARTITION_EOF]
            if fatal:
                raise _confluent_error(fatal[0], bootstrap=self.bootstrap, topic=topic)
            messages = [m for m in messages if m.error() is None]
        batch = RecordBatch(
            topic,
            [m.partition() for m in messages],
            [m.offset() for m in messages],
            [m.key() for m in messages],
            [m.value() for m in messages],
            [m.timestamp()[1] for m in messages],
        )
        return batch.settled(set(self._assigned()), self._starts) if self._rebalanced else batch

    def positions(self) -> dict[int, int]:
        from confluent_kafka import TopicPartition

        topic = self._require_topic()
        partitions = self._assigned()
        current = self._consumer.position([TopicPartition(topic, p) for p in partitions])
        return {tp.partition: tp.offset if tp.offset >= 0 else self._starts.get(tp.partition, 0) for tp in current}

    def high_watermarks(self) -> dict[int, int]:
        from confluent_kafka import KafkaException, TopicPartition

        topic = self._require_topic()
        positions = self.positions()
        marks: dict[int, int] = {}
        try:
            for partition in self._assigned():
                tp = TopicPartition(topic, partition)
                fetched = self._consumer.get_watermark_offsets(tp, cached=True)[1]
                listed = self._consumer.get_watermark_offsets(tp, timeout=self._timeout_s)[1]
                marks[partition] = max(fetched, listed, positions.get(partition, 0))
        except KafkaException as exc:
            raise _confluent_error(exc.args[0] if exc.args else exc, bootstrap=self.bootstrap, topic=topic) from exc
        return marks

    def commit_offsets(self, offsets: Mapping[int, int]) -> bool:
        from confluent_kafka import KafkaException, TopicPartition

        topic = self._require_topic()
        if self._group_id is None:
            log.debug("no group_id: not committing offsets for %s", topic)
            return False
        if not offsets:
            return True
        try:
            self._consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)
        except KafkaException as exc:
            log.warning("could not commit group offsets for %s (lag monitoring only): %s", topic, exc)
            return False
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()


class _SinkCommon(_Closing):
    """What both producers share: failure bookkeeping and the topic's partition count for key routing."""

    bootstrap: str
    _timeout_s: float
    _failures: list[str]
    _partition_counts: dict[str, int]
    _failed_since_flush: int
    _closed: bool

    @property
    def failures(self) -> list[str]:
        """Delivery failures not yet raised by flush()."""
        return list(self._failures)

    def _partitions(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
            from ingestion.stream.broker import topic_partitions

            count = self._partition_counts[topic] = topic_partitions(self.bootstrap, topic, timeout_s=self._timeout_s)
        return count

    def _record_failure(self, text: str) -> None:
        self._failed_since_flush += 1
        if len(self._failures) < 100:
            self._failures.append(text)

    def _target_partition(self, topic: str, key: bytes | None, partition: int | None) -> int | None:
        """The explicit partition (checked), else the key's partition, else None (the client picks)."""
        if self._closed:
            raise InvalidStateError("this sink is closed")
        count = self._partitions(topic)
        if partition is None:
            return partition_for_key(key, count) if key is not None else None
        if not 0 <= partition < count:
            raise InvalidInputError(f"topic {topic!r} has no partition {partition}; it has {count}", topic=topic)
        return partition


class ConfluentSink(_SinkCommon):
    """EventSink on confluent-kafka: idempotent, batched (linger 20 ms, 1 MiB batches)."""

    client: ClientName = "confluent"

    def __init__(
        self,
        bootstrap: str,
        *,
        compression: Compression = "none",
        idempotent: bool = True,
        linger_ms: int = 20,
        delivery_timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        from confluent_kafka import Producer

        check_reachable(bootstrap, timeout_s=connect_timeout_s)
        self.bootstrap = bootstrap
        self._timeout_s = connect_timeout_s
        self._delivery_timeout_s = delivery_timeout_s
        self._partition_counts: dict[str, int] = {}
        self._failures: list[str] = []
        self._failed_since_flush = 0
        self._produced_since_flush = 0
        config = {
            **CONFLUENT_PRODUCER_DEFAULTS,
            "bootstrap.servers": bootstrap,
            "enable.idempotence": idempotent,
            "linger.ms": linger_ms,
            "compression.type": compression,
            "message.timeout.ms": int(delivery_timeout_s * 1000),
            "on_delivery": self._on_delivery,
            "logger": librdkafka_log,
            **dict(client_config or {}),
        }
        self._producer = Producer(config)
        self._closed = False

    def _on_delivery(self, error: Any, message: Any) -> None:
        if error is not None:
            self._record_failure(f"{message.topic()}[{message.partition()}]: {error.str()}")

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        partition: int | None = None,
        headers: Mapping[str, bytes] | None = None,
    ) -> None:
        target = self._target_partition(topic, key, partition)
        partition = -1 if target is None else target  # -1: librdkafka picks
        deadline = None
        while True:
            try:
                self._producer.produce(
                    topic,
                    value=value,
                    key=key,
                    partition=partition,
                    headers=dict(headers) if headers else None,
                )
                self._produced_since_flush += 1
                return
            except BufferError:  # local queue full: serve delivery reports and retry (back-pressure)
                deadline = deadline or time.monotonic() + self._delivery_timeout_s
                if time.monotonic() > deadline:
                    raise ServiceUnavailableError(
                        f"producer queue for {topic!r} stayed full for {self._delivery_timeout_s:.0f}s: "
                        f"is the broker at {self.bootstrap} down?",
                        bootstrap=self.bootstrap,
                    ) from None
                self._producer.poll(0.05)

    def flush(self, timeout_s: float = 30.0) -> int:
        remaining = self._producer.flush(timeout_s)
        failed, failures = self._failed_since_flush, self._failures
        delivered = self._produced_since_flush - failed - remaining
        self._produced_since_flush = self._failed_since_flush = 0
        self._failures = []
        if remaining or failed:
            raise ServiceUnavailableError(
                f"{failed} message(s) failed and {remaining} were not delivered within {timeout_s:.0f}s "
                f"to {self.bootstrap}: {'; '.join(failures[:3]) or 'timed out'}",
                failed=failed,
                undelivered=remaining,
                bootstrap=self.bootstrap,
            )
        return delivered

    def close(self, timeout_s: float = 30.0) -> None:
        if self._closed:
            return
        try:
            self.flush(timeout_s)
        finally:
            self._closed = True
            self._producer.close()


# --------------------------------------------------------------------------------------- kafka-python


class KafkaPythonSource(_Closing):
    """EventSource on kafka-python (pure Python): `poll(max_records=...)`, looped until the batch is full
    or the timeout passes, so both clients return batches the same way."""

    client: ClientName = "kafka-python"

    def __init__(
        self,
        bootstrap: str,
        *,
        group_id: str | None = None,
        offset_reset: OffsetReset = "error",
        api_version: tuple[int, int] | None = None,
        connect_timeout_s: float = 5.0,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        check_reachable(bootstrap, timeout_s=connect_timeout_s)
        self.bootstrap = bootstrap
        self._group_id = group_id
        self._offset_reset = offset_reset
        self._api_version = api_version
        self._timeout_s = connect_timeout_s
        self._extra = dict(client_config or {})
        self._topic: str | None = None
        self._partitions: list[int] = []
        self._starts: dict[int, int] = {}
        self._subscribed = False
        self._rebalanced = False
        self._closed = False
        self._consumer = self._new_consumer(group_id, offset_reset)

    def _new_consumer(self, group_id: str | None, offset_reset: OffsetReset) -> Any:
        from kafka import KafkaConsumer

        config: dict[str, Any] = {
            **KAFKA_PYTHON_CONSUMER_DEFAULTS,
            "bootstrap_servers": self.bootstrap.split(","),
            "group_id": group_id,
            "auto_offset_reset": "none" if offset_reset == "error" else offset_reset,
            "bootstrap_timeout_ms": int(self._timeout_s * 1000),
            **self._extra,
        }
        if self._api_version is not None:
            config["api_version"] = self._api_version
        try:
            return KafkaConsumer(**config)
        except Exception as exc:  # noqa: BLE001 - translated below
            raise _kafka_python_error(exc, bootstrap=self.bootstrap) from exc

    def _topic_partitions(self, topic: str) -> list[int]:
        try:
            found = self._consumer.partitions_for_topic(topic)
            if not found and topic in self._consumer.topics():  # topics() refreshes the metadata
                found = self._consumer.partitions_for_topic(topic)
        except Exception as exc:  # noqa: BLE001
            raise _kafka_python_error(exc, bootstrap=self.bootstrap, topic=topic) from exc
        if not found:
            raise NotFoundError(f"Kafka topic {topic!r} does not exist on {self.bootstrap}", topic=topic)
        return sorted(found)

    def assign(
        self,
        topic: str,
        partitions: Sequence[int] | None = None,
        start_offsets: Mapping[int, int] | None = None,
    ) -> None:
        from kafka import TopicPartition

        chosen = _select_partitions(topic, self._topic_partitions(topic), partitions, start_offsets)
        offsets = dict(start_offsets or {})
        tps = [TopicPartition(topic, p) for p in chosen]
        try:
            self._consumer.assign(tps)
            earliest = [tp for tp in tps if tp.partition not in offsets]
            if earliest:
                self._consumer.seek_to_beginning(*earliest)
            for tp in tps:
                if tp.partition in offsets:
                    self._consumer.seek(tp, offsets[tp.partition])
        except Exception as exc:  # noqa: BLE001
            raise _kafka_python_error(exc, bootstrap=self.bootstrap, topic=topic) from exc
        self._topic, self._partitions, self._subscribed = topic, chosen, False

    def subscribe(self, topic: str, *, group_id: str, on_assign: AssignCallback | None = None) -> None:
        """Group mode. Against the bundled broker it works only with `api_version=(2, 5)`. Each assignment
        starts where `on_assign` says; other partitions start at the group's offset, else the earliest."""
        from kafka import ConsumerRebalanceListener

        source = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                source._rebalanced = True

            def on_partitions_assigned(self, assigned: Any) -> None:
                source._rebalanced = True
                if on_assign is None:
                    return
                starts = dict(on_assign(sorted(tp.partition for tp in assigned)))
                source._starts.update(starts)
                for tp in assigned:
                    if tp.partition in starts:
                        source._consumer.seek(tp, starts[tp.partition])

        self._topic_partitions(topic)
        self._consumer.close()
        self._group_id = group_id
        self._consumer = self._new_consumer(
            group_id, "earliest" if self._offset_reset == "error" else self._offset_reset
        )
        self._consumer.subscribe([topic], listener=Listener())
        self._topic, self._partitions, self._starts, self._subscribed = topic, [], {}, True

    def _assigned(self) -> list[Any]:
        from kafka import TopicPartition

        topic = self._require_topic()
        if self._subscribed:
            return sorted(self._consumer.assignment(), key=lambda tp: tp.partition)
        return [TopicPartition(topic, p) for p in self._partitions]

    def _require_topic(self) -> str:
        if self._topic is None:
            raise InvalidStateError("call assign() (or subscribe()) before reading")
        return self._topic

    def poll_batch(self, max_records: int = 10_000, timeout_s: float = 1.0) -> RecordBatch:
        topic = self._require_topic()
        _check_limits(max_records, timeout_s)
        partitions: list[int] = []
        offsets: list[int] = []
        keys: list[bytes | None] = []
        values: list[bytes | None] = []
        timestamps: list[int] = []
        self._rebalanced = False
        deadline = time.monotonic() + timeout_s
        while len(offsets) < max_records:
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            try:
                polled = self._consumer.poll(timeout_ms=left_ms, max_records=max_records - len(offsets))
            except Exception as exc:  # noqa: BLE001
                raise _kafka_python_error(exc, bootstrap=self.bootstrap, topic=topic) from exc
            for tp, records in polled.items():
                partitions.extend([tp.partition] * len(records))
                offsets.extend([r.offset for r in records])
                keys.extend([r.key for r in records])
                values.extend([r.value for r in records])
                timestamps.extend([r.timestamp for r in records])
            if left_ms == 0:
                break
        batch = RecordBatch(topic, partitions, offsets, keys, values, timestamps)
        if not self._rebalanced:
            return batch
        self._rebalanced = False
        return batch.settled({tp.partition for tp in self._assigned()}, self._starts)

    def positions(self) -> dict[int, int]:
        try:
            return {tp.partition: self._consumer.position(tp) for tp in self._assigned()}
        except Exception as exc:  # noqa: BLE001
            raise _kafka_python_error(exc, bootstrap=self.bootstrap, topic=self._topic) from exc

    def high_watermarks(self) -> dict[int, int]:
        tps = self._assigned()
        positions = self.positions()
        try:
            listed = self._consumer.end_offsets(tps)
        except Exception as exc:  # noqa: BLE001
            raise _kafka_python_error(exc, bootstrap=self.bootstrap, topic=self._topic) from exc
        return {
            tp.partition: max(self._consumer.highwater(tp) or 0, listed.get(tp) or 0, positions[tp.partition])
            for tp in tps
        }

    def commit_offsets(self, offsets: Mapping[int, int]) -> bool:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        topic = self._require_topic()
        if self._group_id is None:
            log.debug("no group_id: not committing offsets for %s", topic)
            return False
        if not offsets:
            return True
        try:
            self._consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})
        except Exception as exc:  # noqa: BLE001 - best effort, lag monitoring only
            log.warning("could not commit group offsets for %s (lag monitoring only): %s", topic, exc)
            return False
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()


class KafkaPythonSink(_SinkCommon):
    """EventSink on kafka-python: batched, acks=all, idempotent when asked."""

    client: ClientName = "kafka-python"

    def __init__(
        self,
        bootstrap: str,
        *,
        compression: Compression = "none",
        idempotent: bool = True,
        linger_ms: int = 20,
        delivery_timeout_s: float = 60.0,
        connect_timeout_s: float = 5.0,
        api_version: tuple[int, int] | None = None,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        from kafka import KafkaProducer

        check_reachable(bootstrap, timeout_s=connect_timeout_s)
        self.bootstrap = bootstrap
        self._timeout_s = connect_timeout_s
        self._partition_counts: dict[str, int] = {}
        self._failures: list[str] = []
        self._failed_since_flush = 0
        self._produced_since_flush = 0
        config: dict[str, Any] = {
            **KAFKA_PYTHON_PRODUCER_DEFAULTS,
            "bootstrap_servers": bootstrap.split(","),
            "linger_ms": linger_ms,
            "compression_type": None if compression == "none" else compression,
            "enable_idempotence": idempotent,
            "delivery_timeout_ms": int(delivery_timeout_s * 1000),
            "request_timeout_ms": max(1000, min(30_000, int(delivery_timeout_s * 1000) - linger_ms - 1)),
            "max_block_ms": int(delivery_timeout_s * 1000),
            "bootstrap_timeout_ms": int(connect_timeout_s * 1000),
            **dict(client_config or {}),
        }
        if api_version is not None:
            config["api_version"] = api_version
        try:
            self._producer = KafkaProducer(**config)
        except Exception as exc:  # noqa: BLE001
            raise _kafka_python_error(exc, bootstrap=bootstrap) from exc
        self._closed = False

    def _on_error(self, exc: BaseException) -> None:
        self._record_failure(f"{type(exc).__name__}: {exc}")

    def produce(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        *,
        partition: int | None = None,
        headers: Mapping[str, bytes] | None = None,
    ) -> None:
        partition = self._target_partition(topic, key, partition)
        try:
            future = self._producer.send(
                topic,
                value=value,
                key=key,
                partition=partition,
                headers=list(headers.items()) if headers else None,
            )
        except Exception as exc:  # noqa: BLE001
            raise _kafka_python_error(exc, bootstrap=self.bootstrap, topic=topic) from exc
        future.add_errback(self._on_error)
        self._produced_since_flush += 1

    def flush(self, timeout_s: float = 30.0) -> int:
        from kafka.errors import KafkaTimeoutError

        try:
            self._producer.flush(timeout=timeout_s)
            timed_out = False
        except KafkaTimeoutError:
            timed_out = True  # kafka-python does not say how many are left
        return self._settle(timed_out=timed_out, timeout_s=timeout_s)

    def _settle(self, *, timed_out: bool, timeout_s: float) -> int:
        failed, failures = self._failed_since_flush, self._failures
        delivered = self._produced_since_flush - failed
        self._produced_since_flush = self._failed_since_flush = 0
        self._failures = []
        if timed_out or failed:
            late = f" and some were not delivered within {timeout_s:.0f}s" if timed_out else ""
            reasons = "; ".join(failures[:3]) or "timed out"
            raise ServiceUnavailableError(
                f"{failed} message(s) failed{late} to {self.bootstrap}: {reasons}",
                failed=failed,
                bootstrap=self.bootstrap,
            )
        return delivered

    def close(self, timeout_s: float = 30.0) -> None:
        if self._closed:
            return
        try:
            self.flush(timeout_s)
        finally:
            self._closed = True
            self._producer.close(timeout=timeout_s)


# ------------------------------------------------------------------------------------------ factories


def _resolve(bootstrap: str | None) -> str:
    if bootstrap:
        return bootstrap
    from ingestion.stream.broker import resolve_bootstrap

    return resolve_bootstrap()


def _check_client(client: str) -> None:
    if client not in CLIENTS:
        raise InvalidInputError(f"unknown Kafka client {client!r}: use one of {', '.join(CLIENTS)}")


def make_source(
    client: ClientName = "confluent",
    bootstrap: str | None = None,
    *,
    group_id: str | None = None,
    offset_reset: OffsetReset = "error",
    connect_timeout_s: float = 5.0,
    api_version: tuple[int, int] | None = None,
    client_config: Mapping[str, Any] | None = None,
) -> EventSource:
    """An EventSource on `client`. `bootstrap=None` resolves SHIRONZI_KAFKA_BOOTSTRAP or the bundled broker.

    `group_id` is only needed for `commit_offsets` (lag monitoring) and `subscribe`; `offset_reset` says
    what happens when a start offset is out of range (real Kafka; the bundled broker returns nothing);
    `api_version` applies to kafka-python only; `client_config` overrides the native client settings.
    """
    _check_client(client)
    resolved = _resolve(bootstrap)
    if client == "confluent":
        return ConfluentSource(
            resolved,
            group_id=group_id,
            offset_reset=offset_reset,
            connect_timeout_s=connect_timeout_s,
            client_config=client_config,
        )
    return KafkaPythonSource(
        resolved,
        group_id=group_id,
        offset_reset=offset_reset,
        api_version=api_version,
        connect_timeout_s=connect_timeout_s,
        client_config=client_config,
    )


def make_sink(
    client: ClientName = "confluent",
    bootstrap: str | None = None,
    *,
    compression: Compression = "none",
    idempotent: bool = True,
    linger_ms: int = 20,
    delivery_timeout_s: float = 60.0,
    connect_timeout_s: float = 5.0,
    api_version: tuple[int, int] | None = None,
    client_config: Mapping[str, Any] | None = None,
) -> EventSink:
    """An EventSink on `client` (acks=all, idempotent by default; `compression="none"` so both clients
    can read what it writes)."""
    _check_client(client)
    if compression not in get_args(Compression):
        raise InvalidInputError(f"unknown compression {compression!r}: use one of {', '.join(get_args(Compression))}")
    resolved = _resolve(bootstrap)
    if client == "confluent":
        return ConfluentSink(
            resolved,
            compression=compression,
            idempotent=idempotent,
            linger_ms=linger_ms,
            delivery_timeout_s=delivery_timeout_s,
            connect_timeout_s=connect_timeout_s,
            client_config=client_config,
        )
    return KafkaPythonSink(
        resolved,
        compression=compression,
        idempotent=idempotent,
        linger_ms=linger_ms,
        delivery_timeout_s=delivery_timeout_s,
        connect_timeout_s=connect_timeout_s,
        api_version=api_version,
        client_config=client_config,
    )


def consumer_lag(source: EventSource) -> dict[int, int]:
    """Per assigned partition, how many records are behind the source's position."""
    positions = source.positions()
    return {p: max(0, mark - positions.get(p, 0)) for p, mark in source.high_watermarks().items()}
