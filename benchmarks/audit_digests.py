"""What signed audit digests cost: catching up a log that was never digested, an hourly run with nothing new,
and `audit verify` with and without the digest check.

The log gets `--events` audit events a day over `--days` past days (spread over the hours, written through the
real hash-chained writer into a Delta audit table under a temporary SHIRONZI_HOME); the digests go to their own
folder there, signed with a key of the local keystore.

    .venv/bin/python benchmarks/audit_digests.py                         # 14 days x 10,000 events
    .venv/bin/python benchmarks/audit_digests.py --days 3 --events 2000   # quick run
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import tempfile
import time

try:
    from benchmarks._machine import print_header
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    from _machine import print_header  # type: ignore[no-redef]


def _fill(days: int, events: int) -> int:
    from shironzi.audit.events import AuditEvent
    from shironzi.audit.log import get_audit_log

    log = get_audit_log()
    first = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=days)
    step = dt.timedelta(seconds=86_400 / events)
    for d in range(days):
        start = dt.datetime.combine(first + dt.timedelta(days=d), dt.time(0), tzinfo=dt.UTC)
        log.record_many([
            AuditEvent(action="read", actor=f"key:k{i % 50}", actor_kind="key", tenant_id=f"t_{i % 200:03d}",
                       resource="eu-west/gold/fct_orders", outcome="allowed", event_time=start + i * step)
            for i in range(events)
        ])
    return days * events


def _timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """(result, wall seconds); the CPU seconds of this process are added to CPU_SECONDS (a shared machine's wall
    clock includes waiting for a core)."""
    started, cpu = time.perf_counter(), time.process_time()
    result = fn(*args, **kwargs)
    CPU_SECONDS.append(time.process_time() - cpu)
    return result, time.perf_counter() - started


CPU_SECONDS: list[float] = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--events", type=int, default=10_000, help="audit events per day")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as home:
        os.environ["SHIRONZI_HOME"] = home
        os.environ["SHIRONZI_LOG_LEVEL"] = "WARNING"
        from shironzi.audit.digests import write_digests
        from shironzi.audit.verify import verify_chains

        print_header(f"audit digests: {args.days} days x {args.events:,} events")
        total, fill_s = _timed(_fill, args.days, args.events)
        first, first_s = _timed(write_digests)
        again, again_s = _timed(write_digests)
        plain, plain_s = _timed(verify_chains, digests=False)
        full, full_s = _timed(verify_chains)
        assert plain.ok and full.ok and full.digests is not None and not again.written
        fill_cpu, first_cpu, again_cpu, plain_cpu, full_cpu = CPU_SECONDS
        print("figures: wall seconds (CPU seconds of this process)")
        print(f"events written (hash-chained, {args.days} commits): {total:,} in {fill_s:.1f} s ({fill_cpu:.1f})")
        print(f"catch-up digest run: {len(first.written):,} digests over {first.events:,} events in {first_s:.2f} s "
              f"({first_cpu:.2f})")
        print(f"hourly run with nothing newly closed: {again_s:.3f} s ({again_cpu:.3f})")
        print(f"audit verify, chains only: {plain_s:.2f} s ({plain_cpu:.2f})")
        print(f"audit verify, chains + {full.digests.digests:,} digests: {full_s:.2f} s ({full_cpu:.2f})")


if __name__ == "__main__":
    main()
