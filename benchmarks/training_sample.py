"""Churn training under a row cap (SHIRONZI_MODEL_MAX_TRAINING_ROWS): how the holdout AUC, the calibration error and
the peak memory change with the sample size.

Builds a lake with the real pipeline (provision, simulate + land, dbt, Spark features) in a temporary SHIRONZI_HOME
(or reuses `--home`), then, for each cap, samples the labels (stratified by tenant-size bucket and label, before the
feature join) and fits the booster and its calibrator exactly as `shironzi models train` does, each cap in its own
process so its peak RSS is its own.

    .venv/bin/python benchmarks/training_sample.py --days 180 --customers 2000 --shares 0.125,0.25,0.5,1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def fit_once(share: float, seed: int) -> dict[str, float]:
    """One cap: build the (sampled) training set and fit; the metrics the run would log."""
    from models.churn import build_churn_dataset
    from models.churn.train import LABELS_TABLE, MODULE, fit_churn
    from models.common import read_gold_inputs
    from shironzi.settings import get_settings

    labels = read_gold_inputs(LABELS_TABLE, MODULE, columns=["tenant_id"], settings=get_settings())
    whole = sum(part.num_rows for part in labels.parts)
    del labels
    cap = max(1, int(whole * share))
    started = time.perf_counter()
    dataset = build_churn_dataset(max_rows=cap, seed=seed)
    fitted = fit_churn(dataset, seed=seed)
    peak = max(resource.getrusage(w).ru_maxrss for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)) / 1024
    return {"cap": cap, "available": whole, "rows": dataset.table.num_rows, "auc": fitted.metrics["auc"],
            "calibration_error": fitted.metrics["calibration_error"], "holdout_rows": fitted.metrics["holdout_rows"],
            "seconds": time.perf_counter() - started, "peak_rss_mib": peak}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--customers", type=int, default=2000)
    parser.add_argument("--shares", default="0.125,0.25,0.5,1", help="caps as shares of the labelled rows")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--home", type=Path, help="an existing SHIRONZI_HOME with features built (skips the build)")
    parser.add_argument("--fit", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fit is not None:
        print("RESULT " + json.dumps(fit_once(args.fit, args.seed)))
        return 0

    from benchmarks._machine import print_header

    print_header("churn training under a row cap")
    home = args.home or Path(tempfile.mkdtemp(prefix="shironzi-training-sample-"))
    env = {**os.environ, "SHIRONZI_HOME": str(home), "SHIRONZI_LOG_LEVEL": "WARNING"}
    for name in ("SHIRONZI_DATABASE_URL", "SHIRONZI_LAKE_URI", "MLFLOW_TRACKING_URI"):
        env.pop(name, None)
    if args.home is None:
        stages = ["provision tenants", "simulate + land files", "dbt build", "features"]
        build = (f"from orchestration.demo import run_demo; "
                 f"run_demo(seed=5, days={args.days}, customers={args.customers}, only={stages!r})")
        subprocess.run([sys.executable, "-c", build], env=env, check=True, cwd=ROOT, capture_output=True)
    print(f"lake: {home} ({args.days} days, {args.customers} customers)")
    print(f"{'cap':>9} {'rows':>9} {'of':>9} {'AUC':>7} {'calib. err':>10} {'holdout':>8} {'seconds':>8} "
          f"{'peak MiB':>9}")
    for share in (float(s) for s in args.shares.split(",")):
        out = subprocess.run([sys.executable, __file__, "--fit", str(share), "--seed", str(args.seed)], env=env,
                             cwd=ROOT, capture_output=True, text=True)
        line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{share:>9}: failed: {(out.stderr.strip().splitlines() or ['?'])[-1]}")
            continue
        r = json.loads(line.removeprefix("RESULT "))
        print(f"{r['cap']:>9,} {r['rows']:>9,} {r['available']:>9,} {r['auc']:>7.4f} "
              f"{r['calibration_error']:>10.4f} {int(r['holdout_rows']):>8,} {r['seconds']:>8.1f} "
              f"{r['peak_rss_mib']:>9.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
