"""Disaster recovery under load: replication lag, RTO, data lost and failback time of the two-region drill.

Runs `ingestion.dr_drill.run_drill` (two regions, each with its own lake, bundled broker, stream ingestor and API
process, plus the `dr replicate` process) at a steady production rate, SIGKILLs region A mid-ingest, fails over
to B, keeps producing, fails back, and prints:

- replication lag p50/p99 (age of the oldest unshipped commit, sampled every 0.5 s before the kill; goal p99 <= 10 s)
- RTO: from the SIGKILL until an event produced after it is readable from A's replica in B and B's API answers
  A's tenant with 200 (goal <= 30 s)
- data lost / duplicated after the replay (goal 0 / 0)
- failback: the switch itself (fence, last reverse pass, flip), and until A's own API answers again

    .venv/bin/python benchmarks/dr_drill.py [--events-per-second 50000] [--steady-seconds 20] [--outage-seconds 15]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events-per-second", type=int, default=50_000)
    parser.add_argument("--steady-seconds", type=float, default=20.0)
    parser.add_argument("--outage-seconds", type=float, default=15.0)
    parser.add_argument("--max-batch", type=int, default=50_000)
    args = parser.parse_args(argv)

    from benchmarks._machine import print_header

    print_header("DR drill: replication lag, RTO, data lost, failback")
    from ingestion.dr_drill import DrillConfig, run_drill

    with tempfile.TemporaryDirectory(prefix="shironzi-dr-bench-") as scratch:
        config = DrillConfig(Path(scratch), events_per_second=args.events_per_second,
                             steady_seconds=args.steady_seconds, outage_seconds=args.outage_seconds,
                             after_seconds=5.0, max_batch=args.max_batch, catch_up_timeout=900.0)
        report = run_drill(config, progress=lambda text: print(f"  .. {text}", flush=True))
    facts = report.as_dict()
    produced_rate = report.produced / max(1e-9, args.steady_seconds + args.outage_seconds + 5.0)
    print(f"target rate        {args.events_per_second:,} events/s (both regions); "
          f"produced {report.produced:,} events (~{produced_rate:,.0f}/s over the timed phases)")
    p50, p99 = facts["lag_p50_seconds"], facts["lag_p99_seconds"]
    print(f"replication lag    p50 {p50:.2f}s  p99 {p99:.2f}s  ({facts['lag_samples']} samples; goal p99 <= 10 s)"
          if p99 is not None else "replication lag    no samples")
    rto = report.rto_seconds
    print(f"RTO                {rto:.1f}s (kill -> A's new events served from B; goal <= 30 s)"
          if rto is not None else "RTO                not reached")
    print(f"failover switch    {report.failover_seconds:.2f}s (fence + last catch-up + promote)")
    print(f"data               lost {report.lost:,}  duplicated {report.duplicated:,}  landed {report.landed:,} "
          f"of {report.produced:,} (goal 0 / 0; lost by region {report.lost_by_region})")
    print(f"failback           switch {report.failback_seconds:.2f}s; A's API answering again after "
          f"{report.home_serving_again_seconds:.1f}s")
    print(f"residency          {report.residency_violations} files outside their tenant's regions; "
          f"drill {'PASSED' if report.passed else 'FAILED'}")


if __name__ == "__main__":
    main()
