"""The Kafka client layer on confluent-kafka (librdkafka): `consume(num_messages=...)` returns whole batches.

confluent-kafka is imported inside the methods, so importing this module stays cheap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from ingestion.stream.broker import START_HINT
from ingestion.stream.client_config import build_confluent
from ingestion.stream.kafka.base import (
    DEFAULT_GROUP_ID,
    AssignCallback,
    ClientName,
    Compression,
    OffsetReset,
    RecordBatch,
    SinkBase,
    SourceBase,
    traceparent_of,
)
from shironzi.errors import (
    InvalidStateError,
    NotFoundError,
    ServiceUnavailableError,
    ShironziError,
)

librdkafka_log = logging.getLogger("shironzi.ingestion.librdkafka")  # librdkafka's own log lines, not stderr

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


def confluent_error(error: Any, *, bootstrap: str, topic: str | None = None) -> ShironziError:
    """A librdkafka KafkaError (or the KafkaException carrying it) as the matching ShironziError."""
    from confluent_kafka import KafkaError, KafkaException

    if isinstance(error, KafkaException):
        error = error.args[0] if error.args else error
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


class ConfluentSource(SourceBase):
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
        super().__init__(
            bootstrap,
            group_id=group_id,
            offset_reset=offset_reset,
            connect_timeout_s=connect_timeout_s,
            client_config=client_config,
        )
        self._consumer = self._new_consumer(group_id or DEFAULT_GROUP_ID, offset_reset)

    def _new_consumer(self, group_id: str | None, offset_reset: OffsetReset) -> Any:
        from confluent_kafka import Consumer

        config = {
            **CONFLUENT_CONSUMER_DEFAULTS,
            "bootstrap.servers": self.bootstrap,
            "group.id": group_id,
            "auto.offset.reset": offset_reset,
            "logger": librdkafka_log,
            **self._extra,
        }
        return build_confluent(Consumer, config)

    def _available_partitions(self, topic: str) -> list[int]:
        from confluent_kafka import KafkaException

        try:
            metadata = self._consumer.list_topics(topic, timeout=self._timeout_s)
        except KafkaException as exc:
            raise confluent_error(exc, bootstrap=self.bootstrap, topic=topic) from exc
        found = metadata.topics.get(topic)
        if found is None or found.error is not None or not found.partitions:
            raise NotFoundError(f"Kafka topic {topic!r} does not exist on {self.bootstrap}", topic=topic)
        return sorted(found.partitions)

    def _seek(self, topic: str, chosen: list[int], offsets: dict[int, int]) -> None:
        from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

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
            raise confluent_error(exc, bootstrap=self.bootstrap, topic=topic) from exc
        self._starts = starts

    def subscribe(self, topic: str, *, group_id: str, on_assign: AssignCallback | None = None) -> None:
        """Group mode for real Kafka. Does NOT work against the bundled broker (librdkafka never gets an
        assignment from tansu). Each assignment starts where `on_assign` says; other partitions start at
        the group's offset, else per `offset_reset` ("error" is treated as "earliest")."""
        self._regroup(topic, group_id)

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
        self._subscribed_to(topic)

    def _assigned(self) -> list[int]:
        if self._subscribed:
            return sorted(tp.partition for tp in self._consumer.assignment())
        return self._partitions

    def poll_batch(self, max_records: int = 10_000, timeout_s: float = 1.0) -> RecordBatch:
        topic = self._start_poll(max_records, timeout_s)
        messages = self._consumer.consume(num_messages=max_records, timeout=timeout_s)
        if not messages:
            return RecordBatch.empty(topic)
        failed = [m for m in messages if m.error() is not None]
        if failed:
            from confluent_kafka import KafkaError

            fatal = [m.error() for m in failed if m.error().code() != KafkaError._PARTITION_EOF]
            if fatal:
                raise confluent_error(fatal[0], bootstrap=self.bootstrap, topic=topic)
            messages = [m for m in messages if m.error() is None]
        batch = RecordBatch(
            topic,
            [m.partition() for m in messages],
            [m.offset() for m in messages],
            [m.key() for m in messages],
            [m.value() for m in messages],
            [m.timestamp()[1] for m in messages],
            [traceparent_of(m.headers()) for m in messages],
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
            raise confluent_error(exc, bootstrap=self.bootstrap, topic=topic) from exc
        return marks

    def _commit(self, topic: str, offsets: Mapping[int, int]) -> None:
        from confluent_kafka import TopicPartition

        self._consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()], asynchronous=False)

    def _commit_errors(self) -> tuple[type[BaseException], ...]:
        from confluent_kafka import KafkaException

        return (KafkaException,)


class ConfluentSink(SinkBase):
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

        super().__init__(bootstrap, connect_timeout_s=connect_timeout_s)
        self._delivery_timeout_s = delivery_timeout_s
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
        self._producer = build_confluent(Producer, config)

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
        return self._settle(undelivered=remaining, timeout_s=timeout_s)

    def _close_producer(self, timeout_s: float) -> None:
        self._producer.close()
