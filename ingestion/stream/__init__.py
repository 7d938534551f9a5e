"""Streaming: the bundled Kafka-protocol broker launcher (`broker`) and the Kafka client layer (`kafka`),
two clients (confluent-kafka, kafka-python) behind one `EventSource` / `EventSink` interface.

Importing this package imports no Kafka client; they load when a source or sink is made.
"""

from ingestion.stream.broker import (
    BrokerInfo,
    BrokerStatus,
    broker_status,
    ensure_topic,
    list_topics,
    resolve_bootstrap,
    running_broker,
    start_broker,
    stop_broker,
    topic_partitions,
)
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

__all__ = [
    "BrokerInfo",
    "BrokerStatus",
    "ClientName",
    "EventSink",
    "EventSource",
    "RecordBatch",
    "broker_status",
    "consumer_lag",
    "ensure_topic",
    "list_topics",
    "make_sink",
    "make_source",
    "partition_for_key",
    "resolve_bootstrap",
    "running_broker",
    "start_broker",
    "stop_broker",
    "topic_partitions",
]
