"""What both Kafka clients share: the interface (`EventSource`, `EventSink`), the batch type, key routing,
argument checks, and the source and sink bases that hold the bookkeeping so that each client module only
speaks its own client's API.

Imports no Kafka client.
"""

from __future__ import annotations

import logging
import socket
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from ingestion.stream.broker import START_HINT, topic_partitions
from shironzi.errors import (
    ConfigurationError,
    InvalidInputError,
    InvalidStateError,
    ServiceUnavailableError,
)
from shironzi.observability import TRACEPARENT

log = logging.getLogger("shironzi.ingestion.kafka")

ClientName = Literal["confluent", "kafka-python"]
OffsetReset = Literal["error", "earliest", "latest"]
Compression = Literal["none", "gzip", "snappy", "lz4", "zstd"]
CLIENTS: tuple[str, ...] = get_args(ClientName)

DEFAULT_GROUP_ID = "shironzi-manual"

# Group mode: called with the partitions the group just assigned; returns where to start reading each of them
# (the stream ingestor answers from the Delta log, so the group's committed offsets never decide a position).
AssignCallback = Callable[[list[int]], Mapping[int, int]]


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
    # row i's W3C `traceparent` header (None: none); empty when the client read no headers
    traceparents: list[bytes | None] = field(default_factory=list)

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
                           [self.timestamps[i] for i in keep],
                           [self.traceparents[i] for i in keep] if self.traceparents else [])

    def first_traceparent(self) -> bytes | None:
        """The trace context of the earliest traced record: its trace continues through the landing."""
        return next((t for t in self.traceparents if t), None)

    def ndjson(self) -> bytes:
        """The values joined by newlines (for pyarrow.json / polars), refusing tombstones."""
        try:
            return b"\n".join(self.values)  # type: ignore[arg-type]
        except TypeError as exc:
            raise InvalidInputError(f"batch from {self.topic!r} holds tombstones (null values)") from exc


def traceparent_of(headers: Any) -> bytes | None:
    """The `traceparent` value among a record's headers (a list of (name, value) pairs, or None)."""
    for name, value in headers or ():
        if name == TRACEPARENT:
            return bytes(value) if value is not None else None
    return None


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


def check_limits(max_records: int, timeout_s: float) -> None:
    if max_records < 1:
        raise InvalidInputError(f"max_records must be >= 1, got {max_records}")
    if timeout_s < 0:
        raise InvalidInputError(f"timeout_s must be >= 0, got {timeout_s}")


def select_partitions(
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


class _Closing:
    def close(self, *args: Any, **kwargs: Any) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------------- sources


class SourceBase(_Closing):
    """What both consumers share: the assignment state, the argument checks, group-mode switching and
    best-effort offset commits. A client fills in the hooks below with its own API."""

    def __init__(
        self,
        bootstrap: str,
        *,
        group_id: str | None,
        offset_reset: OffsetReset,
        connect_timeout_s: float,
        client_config: Mapping[str, Any] | None,
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
        self._consumer: Any = None

    # -- hooks a client implements

    def _new_consumer(self, group_id: str | None, offset_reset: OffsetReset) -> Any:
        raise NotImplementedError

    def _available_partitions(self, topic: str) -> list[int]:
        raise NotImplementedError

    def _seek(self, topic: str, chosen: list[int], offsets: dict[int, int]) -> None:
        """Assign `chosen` and position each partition at its offset in `offsets`, else at the earliest."""
        raise NotImplementedError

    def _commit(self, topic: str, offsets: Mapping[int, int]) -> None:
        raise NotImplementedError

    def _commit_errors(self) -> tuple[type[BaseException], ...]:
        """The exceptions a failed group commit raises (logged and answered with False)."""
        raise NotImplementedError

    # -- shared behaviour

    def assign(
        self,
        topic: str,
        partitions: Sequence[int] | None = None,
        start_offsets: Mapping[int, int] | None = None,
    ) -> None:
        chosen = select_partitions(topic, self._available_partitions(topic), partitions, start_offsets)
        self._seek(topic, chosen, dict(start_offsets or {}))
        self._topic, self._partitions, self._subscribed = topic, chosen, False

    def _regroup(self, topic: str, group_id: str) -> None:
        """Replace the consumer by one in `group_id`, after checking that `topic` exists. Partitions without
        a group offset start per `offset_reset` ("error" is treated as "earliest")."""
        self._available_partitions(topic)
        self._consumer.close()
        reset: OffsetReset = "earliest" if self._offset_reset == "error" else self._offset_reset
        self._group_id = group_id
        self._consumer = self._new_consumer(group_id, reset)

    def _subscribed_to(self, topic: str) -> None:
        self._topic, self._partitions, self._starts, self._subscribed = topic, [], {}, True

    def _require_topic(self) -> str:
        if self._topic is None:
            raise InvalidStateError("call assign() (or subscribe()) before reading")
        return self._topic

    def _start_poll(self, max_records: int, timeout_s: float) -> str:
        topic = self._require_topic()
        check_limits(max_records, timeout_s)
        self._rebalanced = False
        return topic

    def commit_offsets(self, offsets: Mapping[int, int]) -> bool:
        topic = self._require_topic()
        if self._group_id is None:
            log.debug("no group_id: not committing offsets for %s", topic)
            return False
        if not offsets:
            return True
        try:
            self._commit(topic, offsets)
        except self._commit_errors() as exc:  # best effort, lag monitoring only
            log.warning("could not commit group offsets for %s (lag monitoring only): %s", topic, exc)
            return False
        return True

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()


# --------------------------------------------------------------------------------------------- sinks


class SinkBase(_Closing):
    """What both producers share: failure bookkeeping, the topic's partition count for key routing, and
    settling a flush into a delivered count or one error."""

    def __init__(self, bootstrap: str, *, connect_timeout_s: float) -> None:
        check_reachable(bootstrap, timeout_s=connect_timeout_s)
        self.bootstrap = bootstrap
        self._timeout_s = connect_timeout_s
        self._partition_counts: dict[str, int] = {}
        self._failures: list[str] = []
        self._failed_since_flush = 0
        self._produced_since_flush = 0
        self._closed = False

    @property
    def failures(self) -> list[str]:
        """Delivery failures not yet raised by flush()."""
        return list(self._failures)

    def _partitions(self, topic: str) -> int:
        count = self._partition_counts.get(topic)
        if count is None:
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

    def _settle(self, *, undelivered: int | None, timeout_s: float) -> int:
        """Close the books since the last flush: the delivered count, or ServiceUnavailableError when anything
        failed or was left undelivered (`undelivered=None`: some were, the client cannot say how many)."""
        failed, failures = self._failed_since_flush, self._failures
        delivered = self._produced_since_flush - failed - (undelivered or 0)
        self._produced_since_flush = self._failed_since_flush = 0
        self._failures = []
        if undelivered == 0 and not failed:
            return delivered
        details: dict[str, Any] = {"failed": failed, "bootstrap": self.bootstrap}
        if undelivered is not None:
            details["undelivered"] = undelivered
        late = ""
        if undelivered != 0:
            late = f" and {'some' if undelivered is None else undelivered} were not delivered within {timeout_s:.0f}s"
        reasons = "; ".join(failures[:3]) or "timed out"
        raise ServiceUnavailableError(f"{failed} message(s) failed{late} to {self.bootstrap}: {reasons}", **details)

    def flush(self, timeout_s: float = 30.0) -> int:
        raise NotImplementedError

    def _close_producer(self, timeout_s: float) -> None:
        raise NotImplementedError

    def close(self, timeout_s: float = 30.0) -> None:
        if self._closed:
            return
        try:
            self.flush(timeout_s)
        finally:
            self._closed = True
            self._close_producer(timeout_s)

