"""Decode + validate throughput of the ingestion contracts on 200k synthetic JSON payloads.

Run: `.venv/bin/python benchmarks/contracts_decode_validate.py [--payloads 200000] [--repeats 5]`
Prints records/s for decode_json_records and validate_batch (best and median of the repeats).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import print_header  # noqa: E402
from ingestion.contracts import decode_json_records, tenants_frame, validate_batch  # noqa: E402
from ingestion.synthetic import iter_payload_batches, simulate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--payloads", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print_header("contracts: decode_json_records + validate_batch")

    tenants = [(f"tenant-{i}", ("ecommerce", "healthcare", "education")[i % 3]) for i in range(9)]
    sim = simulate(tenants, customers=30_000, days=120, seed=1, target_events=args.payloads, bad_share=0.01)
    batch = next(iter_payload_batches(sim, batch_size=sim.events.height + 1))
    payloads, positions = batch.values[: args.payloads], batch.positions[: args.payloads]
    registry = tenants_frame([(t, i, "active") for t, i in tenants])
    mean_bytes = sum(map(len, payloads)) / len(payloads)
    print(f"payloads   {len(payloads):,} (mean {mean_bytes:.0f} bytes, ~1% bad records of 7 kinds)")

    decode_rates, validate_rates, total_rates = [], [], []
    for _ in range(args.repeats):
        started = time.perf_counter()
        decoded = decode_json_records(payloads, positions, source="bench")
        decoded_at = time.perf_counter()
        result = validate_batch(decoded, tenants=registry, now=datetime.now(UTC), source="bench")
        done = time.perf_counter()
        assert result.reconciles()
        decode_rates.append(len(payloads) / (decoded_at - started))
        validate_rates.append(len(payloads) / (done - decoded_at))
        total_rates.append(len(payloads) / (done - started))
    for name, rates in (
        ("decode", decode_rates),
        ("validate", validate_rates),
        ("decode+validate", total_rates),
    ):
        print(f"{name:16s} best {max(rates):>10,.0f} rec/s   median {statistics.median(rates):>10,.0f} rec/s")
    print(
        f"outcome    valid={result.valid.num_rows:,} quarantined={result.quarantined.num_rows:,} "
        f"duplicates={result.duplicates_in_batch:,} {result.counts_by_reason}"
    )


if __name__ == "__main__":
    main()
