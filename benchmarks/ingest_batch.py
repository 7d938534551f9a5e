"""Batch ingestion throughput: landing files (Parquet, JSONL) -> validated, exactly-once Delta bronze.

Simulates N events for a few tenants, writes them as daily landing files per format, and lands each
format into a fresh lake with the file connector (manifest, txns, GE checkpoint skipped), printing rows/s.

    .venv/bin/python benchmarks/ingest_batch.py [--events 1000000] [--formats parquet,jsonl]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest_stream import _fresh_home  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--formats", default="parquet,jsonl")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--flush-rows", type=int, default=250_000)
    args = parser.parse_args(argv)

    from benchmarks._machine import print_header

    print_header("batch ingest: landing files -> validated, exactly-once Delta bronze")
    from ingestion.batch import ingest_files
    from ingestion.synthetic import simulate, write_landing_files

    specs = [
        ("shop-one", "ecommerce", "standard"),
        ("school-one", "education", "standard"),
        ("clinic-one", "healthcare", "standard"),
    ]
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for fmt in args.formats.split(","):
            tenants = _fresh_home(root, fmt, specs)
            sim = simulate(
                tenants,
                target_events=args.events,
                days=args.days,
                seed=1,
                bad_share=0.005,
                bad_kinds=[k for k in ("missing_field", "unknown_tenant", "duplicate")],
            )
            manifest = write_landing_files(sim, root / f"landing-{fmt}", fmt=fmt, file_per="day")  # type: ignore[arg-type]
            result = ingest_files(root / f"landing-{fmt}", check_quality=False, flush_rows=args.flush_rows)
            totals = result.totals
            assert totals.received == manifest.records_written and totals.balanced(), totals.as_dict()
            print(
                f"{fmt:<8} {len(manifest.files)} files, {totals.received:,} rows -> "
                f"landed {totals.landed:,}, "
                f"quarantined {totals.quarantined:,}, dupes {totals.duplicates:,} in {result.seconds:.1f}s "
                f"= {result.rows_per_second:,.0f} rows/s"
            )


if __name__ == "__main__":
    main()
