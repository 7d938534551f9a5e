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

`base` holds the interface and what both clients share, `confluent` and `kafka_python` one client each;
the factories below pick one. The keyword signatures repeat on purpose in the interface, each client and
the factories, so that each is typed and documented where it is called. Heavy client imports happen
inside the implementations; importing this package stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, get_args

from ingestion.stream.broker import resolve_bootstrap
from ingestion.stream.client_config import client_properties
from ingestion.stream.kafka.base import (
    CLIENTS,
    DEFAULT_GROUP_ID,
    AssignCallback,
    ClientName,
    Compression,
    EventSink,
    EventSource,
    OffsetReset,
    RecordBatch,
    check_reachable,
    partition_for_key,
)
from ingestion.stream.kafka.confluent import ConfluentSink, ConfluentSource
from ingestion.stream.kafka.kafka_python import KafkaPythonSink, KafkaPythonSource
from shironzi.errors import InvalidInputError

# ------------------------------------------------------------------------------------------ factories


def _resolve(bootstrap: str | None) -> str:
    return bootstrap or resolve_bootstrap()


def _check_client(client: str) -> None:
    if client not in CLIENTS:
        raise InvalidInputError(f"unknown Kafka client {client!r}: use one of {', '.join(CLIENTS)}")


def _client_config(client: ClientName, overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """SHIRONZI_KAFKA_CONFIG in the client's names (security, client id, ...), then the caller's overrides."""
    return {**client_properties(client), **dict(overrides or {})}


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
    `api_version` applies to kafka-python only; `client_config` overrides the native client settings
    (which start from SHIRONZI_KAFKA_CONFIG).
    """
    _check_client(client)
    options: dict[str, Any] = {
        "group_id": group_id,
        "offset_reset": offset_reset,
        "connect_timeout_s": connect_timeout_s,
        "client_config": _client_config(client, client_config),
    }
    resolved = _resolve(bootstrap)
    if client == "confluent":
        return ConfluentSource(resolved, **options)
    return KafkaPythonSource(resolved, api_version=api_version, **options)


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
    options: dict[str, Any] = {
        "compression": compression,
        "idempotent": idempotent,
        "linger_ms": linger_ms,
        "delivery_timeout_s": delivery_timeout_s,
        "connect_timeout_s": connect_timeout_s,
        "client_config": _client_config(client, client_config),
    }
    resolved = _resolve(bootstrap)
    if client == "confluent":
        return ConfluentSink(resolved, **options)
    return KafkaPythonSink(resolved, api_version=api_version, **options)


def consumer_lag(source: EventSource) -> dict[int, int]:
    """Per assigned partition, how many records are behind the source's position."""
    positions = source.positions()
    return {p: max(0, mark - positions.get(p, 0)) for p, mark in source.high_watermarks().items()}


__all__ = [
    "CLIENTS",
    "DEFAULT_GROUP_ID",
    "AssignCallback",
    "ClientName",
    "Compression",
    "ConfluentSink",
    "ConfluentSource",
    "EventSink",
    "EventSource",
    "KafkaPythonSink",
    "KafkaPythonSource",
    "OffsetReset",
    "RecordBatch",
    "check_reachable",
    "consumer_lag",
    "make_sink",
    "make_source",
    "partition_for_key",
]
