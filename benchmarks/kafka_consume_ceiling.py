"""The raw consume ceiling: how many events/s each Kafka client can read AND decode into columns on this
machine, with nothing else (no validation, no Delta write). Any stream ingestor built on
`ingestion.stream.kafka` is bounded by these figures.

Produces N canonical JSON events (~250 bytes, keyed by tenant_id) to a P-partition topic on a private
bundled broker (or `--bootstrap`), then, for each client, reads every partition from offset 0 with
manual assignment and decodes each polled batch with pyarrow.json into an Arrow table (plus partition
and offset columns). Prints consume-only and consume+decode rates per client and their ratio.

    .venv/bin/python benchmarks/kafka_consume_ceiling.py [--events 1000000] [--partitions 4]

`measure_consume_decode_rate(bootstrap, topic, client, ...)` is importable by other benchmarks.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ingestion.stream.broker import ensure_topic, running_broker  # noqa: E402
from ingestion.stream.kafka import ClientName, RecordBatch, make_sink, make_source  # noqa: E402

EVENT_TYPES = ("page_view", "add_to_cart", "purchase", "refund", "login", "search")
CURRENCIES = ("EUR", "USD", "GBP", "INR")


def canonical_event_schema() -> Any:
    """Arrow schema of the canonical event as it travels on the wire (event_date is derived later)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("tenant_id", pa.string()),
            ("event_id", pa.string()),
            ("customer_id", pa.string()),
            ("event_type", pa.string()),
            ("event_time", pa.timestamp("ms", tz="UTC")),
            ("amount", pa.float64()),
            ("currency", pa.string()),
            ("properties", pa.string()),
        ]
    )


# Compact JSON of the canonical event; `properties` is a JSON string inside the JSON, hence the escapes.
EVENT_TEMPLATE = (
    '{"tenant_id":"%s","event_id":"evt-%012d","customer_id":"cust-%07d","event_type":"%s",'
    '"event_time":"2025-01-01T%02d:%02d:%02d.%03dZ","amount":%.2f,"currency":"%s",'
    '"properties":"{\\"channel\\":\\"%s\\",\\"page\\":\\"/p/%d\\",\\"sku\\":\\"sku-%05d\\"}"}'
)
CHANNELS = ("web", "ios", "android")


def make_event_values(count: int, *, tenants: int = 200) -> list[tuple[bytes, bytes]]:
    """`count` (key, value) pairs: canonical events as compact JSON (~250 bytes), keyed by tenant_id.
    Deterministic; spread over `tenants` tenants and one day of event times."""
    tenant_ids = [f"tenant-{t:05d}" for t in range(tenants)]
    pairs: list[tuple[bytes, bytes]] = []
    for i in range(count):
        tenant = tenant_ids[(i * 7919) % tenants]
        event_type = EVENT_TYPES[i % len(EVENT_TYPES)]
        ms_of_day = (i * 37) % 86_400_000
        seconds, millis = divmod(ms_of_day, 1000)
        minutes, sec = divmod(seconds, 60)
        hour, minute = divmod(minutes, 60)
        amount = ((i * 104_729) % 50_000) / 100 if event_type in ("purchase", "refund") else 0.0
        value = EVENT_TEMPLATE % (
            tenant,
            i,
            (i * 15_485_863) % 10_000_000,
            event_type,
            hour,
            minute,
            sec,
            millis,
            amount,
            CURRENCIES[i % len(CURRENCIES)],
            CHANNELS[i % 3],
            (i * 31) % 5000,
            (i * 131) % 100_000,
        )
        pairs.append((tenant.encode(), value.encode()))
    return pairs


def decode_batch(batch: RecordBatch, schema: Any) -> Any:
    """One polled batch as an Arrow table: the JSON fields plus `_partition` and `_offset` columns."""
    import pyarrow as pa
    import pyarrow.json as pj

    table = pj.read_json(
        io.BytesIO(batch.ndjson()),
        read_options=pj.ReadOptions(block_size=64 << 20),
        parse_options=pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
    )
    return table.append_column("_partition", pa.array(batch.partitions, pa.int32())).append_column(
        "_offset", pa.array(batch.offsets, pa.int64())
    )


@dataclass(frozen=True)
class ConsumeRate:
    """One measured read of a topic: events and seconds up to the last record, and the rate."""

    client: str
    decode: bool
    events: int
    seconds: float
    events_per_s: float
    batches: int
    bytes_read: int


def measure_consume_decode_rate(
    bootstrap: str,
    topic: str,
    client: ClientName,
    *,
    expected: int | None = None,
    partitions: list[int] | None = None,
    max_records: int = 20_000,
    poll_timeout_s: float = 0.5,
    idle_timeout_s: float = 3.0,
    decode: bool = True,
) -> ConsumeRate:
    """Read `topic` from offset 0 with `client` (manual assignment), decoding every batch into Arrow when
    `decode`. Stops at `expected` events, or after `idle_timeout_s` without records; the clock stops at
    the last record, so the idle wait is not counted."""
    schema = canonical_event_schema()
    if decode:  # pyarrow.json's first call pays a one-off initialisation (~1-2 s here): keep it off the clock
        _, sample = make_event_values(1)[0]
        decode_batch(RecordBatch(topic, [0], [0], [None], [sample], [0]), schema)
    events = batches = bytes_read = 0
    with make_source(client, bootstrap) as source:
        source.assign(topic, partitions)
        started = last = time.perf_counter()
        while expected is None or events < expected:
            batch = source.poll_batch(max_records, poll_timeout_s)
            if not len(batch):
                if time.perf_counter() - last > idle_timeout_s:
                    break
                continue
            if decode:
                rows = decode_batch(batch, schema).num_rows
                assert rows == len(batch), "decode lost rows"
            bytes_read += sum(map(len, batch.values))  # type: ignore[arg-type]
            events += len(batch)
            batches += 1
            last = time.perf_counter()
    seconds = max(last - started, 1e-9)
    return ConsumeRate(str(client), decode, events, seconds, events / seconds, batches, bytes_read)


def produce_events(bootstrap: str, topic: str, pairs: list[tuple[bytes, bytes]]) -> float:
    """Produce every pair with the confluent sink; returns events/s including the final flush."""
    started = time.perf_counter()
    with make_sink("confluent", bootstrap) as sink:
        for key, value in pairs:
            sink.produce(topic, key, value)
        delivered = sink.flush(timeout_s=300)
    assert delivered == len(pairs), f"only {delivered} of {len(pairs)} delivered"
    return len(pairs) / (time.perf_counter() - started)


def run(bootstrap: str, *, events: int, partitions: int, repeats: int, max_records: int) -> dict[str, Any]:
    topic = f"ceiling-{int(time.time())}"
    ensure_topic(bootstrap, topic, partitions=partitions)
    started = time.perf_counter()
    pairs = make_event_values(events)
    mean_bytes = sum(len(v) for _, v in pairs) / len(pairs)
    took = time.perf_counter() - started
    print(f"generated {events:,} events (mean value {mean_bytes:.0f} bytes) in {took:.1f}s")
    produce_rate = produce_events(bootstrap, topic, pairs)
    del pairs
    print(f"produced to {topic!r} ({partitions} partitions) with confluent: {produce_rate:,.0f} events/s\n")

    results: list[ConsumeRate] = []
    print(f"{'client':<13} {'decode':<7} {'events':>10} {'seconds':>8} {'events/s':>11} {'MB/s':>7}")
    for client in ("confluent", "kafka-python"):
        for decode in (False, True):
            for _ in range(repeats):
                rate = measure_consume_decode_rate(
                    bootstrap, topic, client, expected=events, max_records=max_records, decode=decode
                )
                if rate.events != events:
                    raise SystemExit(f"{client} read {rate.events:,} of {events:,} events")
                results.append(rate)
                print(
                    f"{client:<13} {'yes' if decode else 'no':<7} {rate.events:>10,} {rate.seconds:>8.2f} "
                    f"{rate.events_per_s:>11,.0f} {rate.bytes_read / rate.seconds / 1e6:>7.1f}",
                    flush=True,
                )

    def best(client: str, decode: bool) -> float:
        return max(r.events_per_s for r in results if r.client == client and r.decode == decode)

    def median(client: str, decode: bool) -> float:
        return statistics.median(r.events_per_s for r in results if r.client == client and r.decode == decode)

    summary = {
        "events": events,
        "partitions": partitions,
        "mean_value_bytes": round(mean_bytes, 1),
        "max_records": max_records,
        "produce_events_per_s": round(produce_rate),
        "confluent_consume_decode_events_per_s": round(median("confluent", True)),
        "kafka_python_consume_decode_events_per_s": round(median("kafka-python", True)),
        "confluent_consume_only_events_per_s": round(median("confluent", False)),
        "kafka_python_consume_only_events_per_s": round(median("kafka-python", False)),
        "ratio_consume_decode": round(median("confluent", True) / median("kafka-python", True), 2),
        "ratio_consume_only": round(median("confluent", False) / median("kafka-python", False), 2),
        "best_confluent_consume_decode_events_per_s": round(best("confluent", True)),
        "best_kafka_python_consume_decode_events_per_s": round(best("kafka-python", True)),
        "runs": [asdict(r) for r in results],
    }
    print(
        f"\nconsume+decode (median of {repeats}): "
        f"confluent {summary['confluent_consume_decode_events_per_s']:,} "
        f"events/s, kafka-python {summary['kafka_python_consume_decode_events_per_s']:,} events/s, "
        f"ratio {summary['ratio_consume_decode']}x"
    )
    print(
        f"consume only   (median of {repeats}): "
        f"confluent {summary['confluent_consume_only_events_per_s']:,} "
        f"events/s, kafka-python {summary['kafka_python_consume_only_events_per_s']:,} events/s, "
        f"ratio {summary['ratio_consume_only']}x"
    )
    return summary


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--repeats", type=int, default=2, help="reads per client and mode (the median is reported)"
    )
    parser.add_argument("--max-records", type=int, default=20_000, help="records per poll_batch")
    parser.add_argument("--bootstrap", help="use this broker instead of a private bundled one")
    parser.add_argument("--json", type=Path, help="also write the figures and machine info to this file")
    args = parser.parse_args(argv)

    from benchmarks._machine import print_header

    info = print_header("Kafka raw consume ceiling (consume + decode to Arrow), per client")
    print(f"load average at start: {_load()}  (a shared machine: other work skews the figures)")
    if args.bootstrap:
        summary = run(
            args.bootstrap,
            events=args.events,
            partitions=args.partitions,
            repeats=args.repeats,
            max_records=args.max_records,
        )
    else:
        with (
            tempfile.TemporaryDirectory(prefix="shironzi-bench-broker-") as tmp,
            running_broker(Path(tmp)) as broker,
        ):
            print(f"private bundled broker (tansu, in memory) at {broker.bootstrap}")
            summary = run(
                broker.bootstrap,
                events=args.events,
                partitions=args.partitions,
                repeats=args.repeats,
                max_records=args.max_records,
            )
    print(f"load average at end: {_load()}")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, **summary}, indent=2))


if __name__ == "__main__":
    main()
