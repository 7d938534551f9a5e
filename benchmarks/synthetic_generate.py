"""How fast `simulate` produces events (demo size and benchmark size), and how fast they become files.

Run: `.venv/bin/python benchmarks/synthetic_generate.py [--events 10000000] [--skip-large]`
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._machine import print_header  # noqa: E402
from ingestion.synthetic import simulate, write_landing_files  # noqa: E402

TENANTS = [(f"tenant-{i}", ("ecommerce", "healthcare", "education")[i % 3]) for i in range(9)]


def run(label: str, **kwargs: object) -> None:
    started = time.perf_counter()
    sim = simulate(TENANTS, start=date(2024, 1, 1), seed=7, **kwargs)  # type: ignore[arg-type]
    simulated = time.perf_counter() - started
    events = sim.events.height
    print(
        f"{label:28s} customers={sim.params['customers']:>8,} days={sim.days} events={events:>11,} "
        f"simulate {simulated:6.1f}s ({events / simulated:>10,.0f} ev/s)"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for fmt in ("parquet", "jsonl"):
            started = time.perf_counter()
            manifest = write_landing_files(sim, tmp + "/" + fmt, fmt=fmt)  # type: ignore[arg-type]
            seconds = time.perf_counter() - started
            print(
                f"{'':28s} write {fmt:8s} {len(manifest.files):>5} files {seconds:6.1f}s "
                f"({manifest.records_written / seconds:>10,.0f} rec/s)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--skip-large", action="store_true")
    args = parser.parse_args()
    print_header("synthetic: simulate + landing files")
    run("demo: 9 tenants x 3k x 1y", customers=27_000, days=365)
    if not args.skip_large:
        run(f"large: ~{args.events:,} events", customers=150_000, days=365, target_events=args.events)


if __name__ == "__main__":
    main()
