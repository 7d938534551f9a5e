"""PHI protection cost: the landing pass that encrypts a healthcare tenant's PHI (AES-SIV), and the per-request
work of the API's customer routes (encrypt the clear id to look it up, decrypt it for a `phi:read` key).

Simulates N events for a healthcare and an ecommerce tenant, validates them once, then times the PHI pass
(`BronzeLander.protect_phi`) beside the existing PII pass over the same rows, and the API's `PhiView` per call.

    .venv/bin/python benchmarks/phi_protection.py [--events 200000] [--calls 5000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest_stream import _fresh_home  # noqa: E402


def _best_of(runs: int, fn):  # type: ignore[no-untyped-def]
    """The fastest of `runs` calls (seconds) and the last result."""
    best, result = float("inf"), None
    for _ in range(runs):
        started = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - started)
    return best, result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--calls", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=30)
    args = parser.parse_args(argv)

    from benchmarks._machine import print_header

    print_header("PHI protection: landing pass and API id mapping")
    from ingestion.bronze import BronzeLander
    from ingestion.contracts import validate_batch
    from ingestion.synthetic import simulate
    from serving.phi import PhiView

    with tempfile.TemporaryDirectory() as tmp:
        tenants = _fresh_home(Path(tmp), "home", [("clinic-one", "healthcare", "standard"),
                                                  ("shop-one", "ecommerce", "standard")])
        sim = simulate(tenants, target_events=args.events, days=args.days, seed=1)
        lander = BronzeLander()
        valid = validate_batch(sim.events, tenants=lander.tenants_frame, now=datetime.now(UTC), source="bench").valid
        clinic = tenants[0][0]
        share = sum(1 for t in valid.column("tenant_id").to_pylist() if t == clinic) / valid.num_rows
        phi_s, _ = _best_of(3, lambda: lander.protect_phi(valid))
        pii_s, _ = _best_of(3, lambda: lander.pseudonymise(valid))
        print(f"rows {valid.num_rows:,} ({share:.0%} healthcare)")
        print(f"PHI pass   {phi_s:7.3f} s = {valid.num_rows / phi_s:>12,.0f} rows/s")
        print(f"PII pass   {pii_s:7.3f} s = {valid.num_rows / pii_s:>12,.0f} rows/s  (the existing pass, for scale)")

        ids = [f"pat_{i:07d}" for i in range(args.calls)]
        samples = []
        for cid in ids:
            started = time.perf_counter_ns()
            view = PhiView.of(clinic, "healthcare", ("read", "phi:read"))
            (stored,) = view.stored([cid])
            assert view.shown(stored) == cid
            samples.append(time.perf_counter_ns() - started)
        ordered = sorted(samples)
        p50, p99 = ordered[len(ordered) // 2] / 1e3, ordered[int(0.99 * len(ordered))] / 1e3
        print(f"API PhiView (key lookup + encrypt + decrypt) per request: p50={p50:.1f} us  p99={p99:.1f} us  "
              f"mean={statistics.fmean(ordered) / 1e3:.1f} us  n={len(ordered):,}")


if __name__ == "__main__":
    main()
