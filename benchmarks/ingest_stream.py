"""Stream ingestion throughput: broker -> contract validation -> committed Delta bronze, exactly once.

Simulates N events for a few tenants (real contracts, 0.5% bad records), produces them to a P-partition
topic on a private bundled broker, then measures in ONE process:
1. the raw consume ceiling of the same topic (`kafka_consume_ceiling.measure_consume_decode_rate`, decode
   off: its pyarrow.json decoder expects `properties` as a string, the contract's wire format sends an object),
2. the full ingestor (confluent-kafka) from offset 0 to caught up, every flush committed with txns,
3. the same pipeline on kafka-python (a fresh lake), as the ratio between clients.

    .venv/bin/python benchmarks/ingest_stream.py [--events 1000000] [--partitions 4] [--max-batch 100000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _fresh_home(root: Path, name: str, tenants: list[tuple[str, str, str]]) -> list[tuple[str, str]]:
    os.environ["SHIRONZI_HOME"] = str(root / name)
    from shironzi.settings import get_settings
    from shironzi.tenancy import TenantContext, get_registry, reset_registries

    get_settings.cache_clear()
    reset_registries()
    registry = get_registry()
    ctx = TenantContext.admin(actor="bench", purpose="benchmark")
    out = []
    for slug, industry, plan in tenants:
        tenant, _ = registry.provision_tenant(ctx, slug=slug, name=slug, industry=industry, plan=plan)
        out.append((tenant.id, industry))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--max-batch", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args(argv)

    from benchmarks._machine import print_header

    print_header("stream ingest: broker -> validated, exactly-once Delta bronze")
    from benchmarks.kafka_consume_ceiling import measure_consume_decode_rate
    from ingestion.stream import ensure_topic, make_sink, running_broker
    from ingestion.stream.ingestor import StreamIngestor, StreamOptions
    from ingestion.synthetic import iter_payload_batches, simulate

    specs = [
        ("shop-one", "ecommerce", "standard"),
        ("shop-two", "ecommerce", "free"),
        ("school-one", "education", "standard"),
        ("clinic-one", "healthcare", "standard"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        tenants = _fresh_home(root, "confluent", specs)
        sim = simulate(tenants, target_events=args.events, days=args.days, seed=1, bad_share=0.005)
        with running_broker(root / "broker") as info:
            topic = "events"
            ensure_topic(info.bootstrap, topic, partitions=args.partitions)
            started = time.perf_counter()
            sent = 0
            with make_sink("confluent", info.bootstrap) as sink:
                for batch in iter_payload_batches(sim, batch_size=50_000):
                    for key, value in zip(batch.keys, batch.values, strict=True):
                        sink.produce(topic, key, value)
                    sent += len(batch)
                sink.flush()
            print(f"produced   {sent:,} events in {time.perf_counter() - started:.1f}s")
            # The ceiling's pyarrow.json decoder expects `properties` as a JSON string; the contract's wire
            # format carries an object, so the same topic is measured consume-only (an upper bound).
            ceiling = measure_consume_decode_rate(info.bootstrap, topic, "confluent", expected=sent, decode=False)
            print(f"ceiling    confluent consume-only (same topic): {ceiling.events_per_s:,.0f} events/s")

            rates = {}
            for client in ("confluent", "kafka-python"):
                if client != "confluent":  # same tenants, a fresh lake: the run starts from offset 0 again
                    from shironzi.settings import get_settings

                    os.environ["SHIRONZI_LAKE_URI"] = str(root / f"lake-{client}")
                    get_settings.cache_clear()
                options = StreamOptions(
                    topic=topic,
                    bootstrap=info.bootstrap,
                    client=client,  # type: ignore[arg-type]
                    until_caught_up=True,
                    max_batch=args.max_batch,
                    max_wait_ms=500,
                )
                result = StreamIngestor(options).run()
                totals = result.totals
                assert totals.received == sent and totals.balanced(), totals.as_dict()
                assert totals.landed == sim.events.height, totals.as_dict()
                rates[client] = result.events_per_second
                print(
                    f"ingest     {client:<12} {totals.received:,} events -> landed {totals.landed:,}, "
                    f"quarantined {totals.quarantined:,}, dupes {totals.duplicates:,} "
                    f"in {result.seconds:.1f}s "
                    f"over {result.flushes} flushes = {result.events_per_second:,.0f} events/s"
                )
        print(
            "ratio      ingest(confluent) / consume-only ceiling = "
            f"{rates['confluent'] / ceiling.events_per_s:.2f}"
        )
        print(
            "ratio      ingest(kafka-python) / ingest(confluent)  = "
            f"{rates['kafka-python'] / rates['confluent']:.2f}"
        )


if __name__ == "__main__":
    main()
