"""How much a long Delta log costs to open, with and without checkpoints.

Makes N small idempotent commits (append + txn, as a stream ingestor does) to one table through
`shironzi.lake.append` (which checkpoints every 100 commits), and a twin with checkpoints disabled:
by default a copy of the same table and log with the checkpoint files removed (`--twin copy`,
identical commits, seconds to make), or the same N commits written again with the checkpoint hook
off (`--twin write`, slow: without checkpoints every commit gets dearer as the log grows). Then
times opening each table (`DeltaTable(uri)` + `version()`) and recovering a stream offset
(`txn_version`), and prints both and their ratio.

    .venv/bin/python benchmarks/lake_commit_cost.py                 # 5,000 commits (a few minutes)
    .venv/bin/python benchmarks/lake_commit_cost.py --commits 300   # quick run
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
from deltalake import CommitProperties, DeltaTable, PostCommitHookProperties, Transaction, write_deltalake

try:
    from benchmarks._machine import print_header
except ImportError:  # run as a script: benchmarks/ is sys.path[0]
    from _machine import print_header  # type: ignore[no-redef]

from shironzi.lake import CHECKPOINT_INTERVAL, Txn, append, txn_version

APP_ID = "bench:stream:p0"
OPEN_TARGET_SECONDS = 1.0


def _batch(commit: int, rows: int) -> pa.Table:
    return pa.table(
        {
            "tenant_id": [f"tenant_{(commit * rows + i) % 50:03d}" for i in range(rows)],
            "event_id": [f"ev-{commit}-{i}" for i in range(rows)],
            "amount": [float(i) for i in range(rows)],
        }
    )


def _timed(fn: Callable[[], object], repeats: int) -> dict[str, float]:
    fn()  # warm the OS page cache so both tables are measured alike
    samples = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - started)
    return {"median_s": statistics.median(samples), "min_s": min(samples), "max_s": max(samples)}


def _progress(label: str, done: int, total: int, started: float) -> None:
    if done % max(1, total // 10) == 0 or done == total:
        rate = done / max(time.perf_counter() - started, 1e-9)
        print(f"  {label}: {done}/{total} commits ({rate:.0f}/s)", file=sys.stderr, flush=True)


def build_checkpointed(uri: str, commits: int, rows: int) -> float:
    """N commits through shironzi.lake.append (each opens the table, checks the txn, commits)."""
    started = time.perf_counter()
    for commit in range(commits):
        result = append(uri, _batch(commit, rows), txn=Txn(APP_ID, commit), storage_options={})
        assert not result.skipped
        _progress("checkpointed", commit + 1, commits, started)
    return time.perf_counter() - started


def build_uncheckpointed(uri: str, commits: int, rows: int) -> float:
    """The same N commits with checkpoints disabled (one long-lived handle, so writing stays cheap)."""
    no_checkpoints = PostCommitHookProperties(create_checkpoint=False, cleanup_expired_logs=False)
    started = time.perf_counter()
    write_deltalake(
        uri,
        _batch(0, rows),
        mode="append",
        post_commithook_properties=no_checkpoints,
        commit_properties=CommitProperties(app_transactions=[Transaction(APP_ID, 0)]),
    )
    handle = DeltaTable(uri)
    _progress("no checkpoints", 1, commits, started)
    for commit in range(1, commits):
        write_deltalake(
            handle,
            _batch(commit, rows),
            mode="append",
            post_commithook_properties=no_checkpoints,
            commit_properties=CommitProperties(app_transactions=[Transaction(APP_ID, commit)]),
        )
        _progress("no checkpoints", commit + 1, commits, started)
    return time.perf_counter() - started


def copy_without_checkpoints(source: str, target: str) -> float:
    """The same table and commits with the checkpoints deleted: readers must replay every JSON commit."""
    started = time.perf_counter()
    shutil.copytree(source, target)
    log = Path(target) / "_delta_log"
    for checkpoint in log.glob("*.checkpoint*.parquet"):
        checkpoint.unlink()
    (log / "_last_checkpoint").unlink(missing_ok=True)
    return time.perf_counter() - started


def _log_shape(uri: str) -> dict[str, int]:
    log = Path(uri) / "_delta_log"
    return {
        "json_commits": len(list(log.glob("*.json"))),
        "checkpoints": len(list(log.glob("*.checkpoint*.parquet"))),
    }


def main(argv: list[str] | None = None) -> dict[str, object]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--commits", type=int, default=5000, help="commits per table (default 5000)")
    parser.add_argument("--rows", type=int, default=10, help="rows per commit (default 10)")
    parser.add_argument(
        "--twin",
        choices=("copy", "write"),
        default="copy",
        help="how to make the no-checkpoint table (default: copy the log minus checkpoints)",
    )
    parser.add_argument("--repeats", type=int, default=7, help="timed opens per table (default 7)")
    parser.add_argument(
        "--workdir", type=Path, default=None, help="where to build the tables (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the tables afterwards")
    parser.add_argument("--json", action="store_true", help="also print the figures as one JSON line")
    args = parser.parse_args(argv)
    if args.commits < 1:
        parser.error("--commits must be >= 1")

    machine = print_header("lake commit cost: opening a long Delta log with and without checkpoints")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="shironzi-bench-lake-"))
    workdir.mkdir(parents=True, exist_ok=True)
    checkpointed, plain = str(workdir / "checkpointed"), str(workdir / "no_checkpoints")
    try:
        print(
            f"{args.commits} commits x {args.rows} rows per table, checkpoint interval {CHECKPOINT_INTERVAL}"
        )
        write_a = build_checkpointed(checkpointed, args.commits, args.rows)
        if args.twin == "write":
            write_b: float | None = build_uncheckpointed(plain, args.commits, args.rows)
        else:
            copy_s = copy_without_checkpoints(checkpointed, plain)
            print(f"  copied the log without checkpoints in {copy_s:.1f}s", file=sys.stderr)
            write_b = None

        def opener(uri: str) -> Callable[[], int]:
            return lambda: DeltaTable(uri).version()

        def recover(uri: str) -> Callable[[], int | None]:
            return lambda: txn_version(uri, APP_ID, storage_options={})

        figures: dict[str, object] = {
            "commits": args.commits,
            "rows_per_commit": args.rows,
            "checkpoint_interval": CHECKPOINT_INTERVAL,
            "twin": args.twin,
            "write_s": {"checkpointed": write_a, "no_checkpoints": write_b},
            "open": {
                "checkpointed": _timed(opener(checkpointed), args.repeats),
                "no_checkpoints": _timed(opener(plain), args.repeats),
            },
            "txn_version": {
                "checkpointed": _timed(recover(checkpointed), args.repeats),
                "no_checkpoints": _timed(recover(plain), args.repeats),
            },
            "log": {"checkpointed": _log_shape(checkpointed), "no_checkpoints": _log_shape(plain)},
        }
        assert DeltaTable(checkpointed).version() == args.commits  # + the CREATE TABLE commit
        assert txn_version(checkpointed, APP_ID, storage_options={}) == args.commits - 1
        assert txn_version(plain, APP_ID, storage_options={}) == args.commits - 1
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    opened: dict[str, dict[str, float]] = figures["open"]  # type: ignore[assignment]
    recovered: dict[str, dict[str, float]] = figures["txn_version"]  # type: ignore[assignment]
    logs: dict[str, dict[str, int]] = figures["log"]  # type: ignore[assignment]
    ratio = opened["no_checkpoints"]["median_s"] / opened["checkpointed"]["median_s"]
    figures["open_ratio_no_checkpoints_over_checkpointed"] = ratio
    target_met = opened["checkpointed"]["median_s"] <= OPEN_TARGET_SECONDS
    figures["open_target_met"] = target_met

    print()
    print(
        f"{'table':<16}{'write total':>13}{'commits/s':>11}{'open (median)':>15}{'open (min)':>12}"
        f"{'txn_version':>13}{'json files':>12}{'checkpoints':>13}"
    )
    for name in ("checkpointed", "no_checkpoints"):
        write_s = figures["write_s"][name]  # type: ignore[index]
        writes = (
            f"{write_s:>12.1f}s{args.commits / write_s:>11.0f}" if write_s else f"{'(copied)':>13}{'':>11}"
        )
        print(
            f"{name:<16}{writes}"
            f"{opened[name]['median_s'] * 1000:>13.1f}ms{opened[name]['min_s'] * 1000:>10.1f}ms"
            f"{recovered[name]['median_s'] * 1000:>11.1f}ms"
            f"{logs[name]['json_commits']:>12}{logs[name]['checkpoints']:>13}"
        )
    print()
    print(
        f"open time with checkpoints: {opened['checkpointed']['median_s'] * 1000:.1f} ms "
        f"(target <= {OPEN_TARGET_SECONDS:.0f} s: {'met' if target_met else 'MISSED'})"
    )
    print(f"open time without checkpoints is {ratio:.1f}x the checkpointed one")
    if args.json:
        print(json.dumps({"machine": machine, **figures}, default=str))
    return figures


if __name__ == "__main__":
    main()
