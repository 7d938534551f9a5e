"""The Kafka client layer on kafka-python (pure Python): `poll(max_records=...)`, looped until the batch is
full or the timeout passes, so both clients return batches the same way.

kafka-python is imported inside the methods, so importing this module stays cheap.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from ingestion.stream.broker import START_HINT
from ingestion.stream.kafka.base import (
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
    ConfigurationError,
    InvalidStateError,
    NotFoundError,
    ServiceUnavailableError,
    ShironziError,
)

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


def kafka_python_error(exc: BaseException, *, bootstrap: str, topic: str | None = None) -> ShironziError:
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


class KafkaPythonSource(SourceBase):
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
        super().__init__(
            bootstrap,
            group_id=group_id,
            offset_reset=offset_reset,
            connect_timeout_s=connect_timeout_s,
            client_config=client_config,
        )
        self._api_version = api_version
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
            raise kafka_python_error(exc, bootstrap=self.bootstrap) from exc

    def _available_partitions(self, topic: str) -> list[int]:
        try:
            found = self._consumer.partitions_for_topic(topic)
            if not found and topic in self._consumer.topics():  # topics() refreshes the metadata
                found = self._consumer.partitions_for_topic(topic)
        except Exception as exc:  # noqa: BLE001
            raise kafka_python_error(exc, bootstrap=self.bootstrap, topic=topic) from exc
        if not found:
            raise NotFoundError(f"Kafka topic {topic!r} does not exist on {self.bootstrap}", topic=topic)
        return sorted(found)

    def _seek(self, topic: str, chosen: list[int], offsets: dict[int, int]) -> None:
        from kafka import TopicPartition

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
            raise kafka_python_error(exc, bootstrap=self.bootstrap, topic=topic) from exc

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

        self._regroup(topic, group_id)
        self._consumer.subscribe([topic], listener=Listener())
        self._subscribed_to(topic)

    def _assigned(self) -> list[Any]:
        from kafka import TopicPartition

        topic = self._require_topic()
        if self._subscribed:
            return sorted(self._consumer.assignment(), key=lambda tp: tp.partition)
        return [TopicPartition(topic, p) for p in self._partitions]

    def poll_batch(self, max_records: int = 10_000, timeout_s: float = 1.0) -> RecordBatch:
        topic = self._start_poll(max_records, timeout_s)
        batch = RecordBatch.empty(topic)
        deadline = time.monotonic() + timeout_s
        while len(batch) < max_records:
            left_ms = max(0, int((deadline - time.monotonic()) * 1000))
            try:
                polled = self._consumer.poll(timeout_ms=left_ms, max_records=max_records - len(batch))
            except Exception as exc:  # noqa: BLE001
                raise kafka_python_error(exc, bootstrap=self.bootstrap, topic=topic) from exc
            for tp, records in polled.items():
                batch.partitions.extend([tp.partition] * len(records))
                batch.offsets.extend([r.offset for r in records])
                batch.keys.extend([r.key for r in records])
                batch.values.extend([r.value for r in records])
                batch.timestamps.extend([r.timestamp for r in records])
                batch.traceparents.extend([traceparent_of(r.headers) for r in records])
            if left_ms == 0:
                break
        if not self._rebalanced:
            return batch
        self._rebalanced = False
        return batch.settled({tp.partition for tp in self._assigned()}, self._starts)

    def positions(self) -> dict[int, int]:
        try:
            return {tp.partition: self._consumer.position(tp) for tp in self._assigned()}
        except Exception as exc:  # noqa: BLE001
            raise kafka_python_error(exc, bootstrap=self.bootstrap, topic=self._topic) from exc

    def high_watermarks(self) -> dict[int, int]:
        tps = self._assigned()
        positions = self.positions()
        try:
            listed = self._consumer.end_offsets(tps)
        except Exception as exc:  # noqa: BLE001
            raise kafka_python_error(exc, bootstrap=self.bootstrap, topic=self._topic) from exc
        return {
            tp.partition: max(self._consumer.highwater(tp) or 0, listed.get(tp) or 0, positions[tp.partition])
            for tp in tps
        }

    def _commit(self, topic: str, offsets: Mapping[int, int]) -> None:
        from kafka import TopicPartition
        from kafka.structs import OffsetAndMetadata

        self._consumer.commit({TopicPartition(topic, p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items()})

    def _commit_errors(self) -> tuple[type[BaseException], ...]:
        return (Exception,)


class KafkaPythonSink(SinkBase):
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

        super().__init__(bootstrap, connect_timeout_s=connect_timeout_s)
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
            raise kafka_python_error(exc, bootstrap=bootstrap) from exc

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
            raise kafka_python_error(exc, bootstrap=self.bootstrap, topic=topic) from exc
        future.add_errback(self._on_error)
        self._produced_since_flush += 1

    def flush(self, timeout_s: float = 30.0) -> int:
        from kafka.errors import KafkaTimeoutError

        undelivered: int | None = 0
        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaTimeoutError:
            undelivered = None  # kafka-python does not say how many are left
        return self._settle(undelivered=undelivered, timeout_s=timeout_s)

    def _close_producer(self, timeout_s: float) -> None:
        self._producer.close(timeout=timeout_s)
