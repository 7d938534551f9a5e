"""Benchmark model quality against the simulator's ground truth, and churn training time at scale.

1. Runs the real pipeline (provision, simulate + land, dbt, Spark features) in a temporary SHIRONZI_HOME,
   trains both models exactly as `shironzi models train` does, and prints:
   - churn AUC on the time-split holdout next to the oracle AUC (customers ranked by the generator's true
     churn probability) on the same ground-truth rows; target: AUC >= oracle - 0.03;
   - trend sMAPE next to seasonal naive on the same holdout (target: >= 20 % lower), the sMAPE of each half of
     the combined point forecast alone, and the 80 % interval coverage (target: 75-85 %).
2. Times the churn booster (`models.churn.train.fit_booster`, the same parameters and early stopping) on
   1,000,000 x 40 synthetic rows (target: <= 60 s).

    .venv/bin/python benchmarks/model_quality.py --days 365 --customers 6000 --rows 1000000

The simulated year ends yesterday unless `--end YYYY-MM-DD` pins it; its seasonality follows the calendar, so
figures from different days differ a little (the trend holdout of a late-November run sits on the ecommerce
run-up to Black Friday). Pass a published run's end date to reproduce it.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._machine import print_header  # noqa: E402


def yesterday() -> dt.date:
    """The default last simulated day."""
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def _aligned_start(days: int, end: dt.date | None = None) -> dt.date:
    """A Monday start such that the simulation ends by `end` (default yesterday): the simulator's weekly
    ground-truth snapshots (day 6, 13, ...) then fall on Sundays, the days the weekly feature snapshots are taken."""
    end = end or yesterday()
    first = end + dt.timedelta(days=1) - dt.timedelta(days=days)
    return first - dt.timedelta(days=first.weekday())


def end_date(text: str) -> dt.date:
    """`--end`: the last simulated day. The simulator's yearly seasonality (an ecommerce peak around Black Friday,
    an education summer break) follows the calendar, so the figures depend on it; pass the date a published run
    used to reproduce its figures on another day."""
    return dt.date.fromisoformat(text)


def build_lake(days: int, customers: int, seed: int, stages: list[str],
               end: dt.date | None = None) -> tuple[Any, Any, int]:
    """In the current SHIRONZI_HOME: provision the demo tenants, simulate `days` of their activity up to `end`
    (default yesterday), land it as JSONL files and run the demo `stages` after it; returns (settings, the
    simulation, rows landed)."""
    from ingestion.batch import ingest_files
    from ingestion.synthetic import simulate, write_landing_files
    from orchestration.demo import DEMO_TENANTS, run_demo
    from shironzi.settings import get_settings
    from shironzi.tenancy import get_registry

    run_demo(seed=seed, only=["provision tenants"])
    settings = get_settings()
    registry = get_registry(settings)
    tenants = [registry.get_tenant(spec.slug) for spec in DEMO_TENANTS]
    simulation = simulate([(t.id, t.industry) for t in tenants], customers=customers, days=days, seed=seed,
                          start=_aligned_start(days, end))
    landing = settings.home / "landing"
    write_landing_files(simulation, landing, fmt="jsonl", file_per="day")
    landed = ingest_files(landing, check_quality=False).totals.landed
    run_demo(seed=seed, only=stages)
    return settings, simulation, landed


def _quality(days: int, customers: int, seed: int, end: dt.date | None) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="shironzi-model-quality-") as tmp:
        os.environ["SHIRONZI_HOME"] = str(Path(tmp) / "home")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from shironzi.settings import get_settings

        get_settings.cache_clear()
        from models.churn import train_churn
        from models.oracle_comparison import compare_with_oracle
        from models.registry import promote_if_better
        from models.scoring import eligible_tenants
        from models.trend import train_trend

        started = time.perf_counter()
        settings, simulation, landed = build_lake(days, customers, seed, ["dbt build", "features"], end)
        pipeline_seconds = time.perf_counter() - started

        started = time.perf_counter()
        churn = train_churn(settings=settings, seed=seed)
        churn_seconds = time.perf_counter() - started
        promote_if_better("shironzi-churn", settings=settings)
        started = time.perf_counter()
        trend = train_trend(settings=settings, seed=seed)
        trend_seconds = time.perf_counter() - started
        oracle = compare_with_oracle(simulation.snapshots, run_id=churn.run_id, settings=settings,
                                     tenant_ids=eligible_tenants(settings=settings))
        return {
            "events": float(landed), "pipeline_seconds": pipeline_seconds,
            "label_rows": churn.metrics["train_rows"] + churn.metrics["valid_rows"] + churn.metrics["holdout_rows"],
            "churn_holdout_auc": churn.metrics["auc"], "churn_calibration_error": churn.metrics["calibration_error"],
            "oracle_rows": float(oracle.rows), "oracle_positives": float(oracle.positives),
            "model_auc_vs_truth": oracle.model_auc, "oracle_auc": oracle.oracle_auc,
            "churn_train_seconds": churn_seconds,
            "smape": trend.metrics["smape"], "baseline_smape": trend.metrics["baseline_smape"],
            "smape_active_customers": trend.metrics.get("smape_active_customers", float("nan")),
            "baseline_smape_active_customers": trend.metrics.get("baseline_smape_active_customers", float("nan")),
            "smape_revenue": trend.metrics.get("smape_revenue", float("nan")),
            "baseline_smape_revenue": trend.metrics.get("baseline_smape_revenue", float("nan")),
            "smape_booster": trend.metrics.get("smape_booster", float("nan")),
            "smape_statistical": trend.metrics.get("smape_statistical", float("nan")),
            "interval_coverage": trend.metrics["interval_coverage"], "trend_train_seconds": trend_seconds,
        }


def _training_time(rows: int, features: int, seed: int) -> dict[str, float]:
    import numpy as np

    from models.churn.train import fit_booster

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = np.nan  # some missing values, as in real feature rows
    weights = rng.normal(size=features) / np.sqrt(features)
    logit = -2.5 + np.nan_to_num(x) @ weights + 0.5 * np.nan_to_num(x[:, 0]) * np.nan_to_num(x[:, 1])
    y = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(np.float32)
    cut = int(rows * 0.85)
    names = [f"f{i}" for i in range(features)]
    started = time.perf_counter()
    booster = fit_booster(x[:cut], y[:cut], x[cut:], y[cut:], feature_names=names, seed=seed)
    seconds = time.perf_counter() - started
    from models.churn.train import raw_scores
    from models.common import auc_or_nan

    return {"rows": float(rows), "features": float(features), "seconds": seconds,
            "best_iteration": float(booster.best_iteration),
            "valid_auc": auc_or_nan(y[cut:], raw_scores(booster, x[cut:]))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--customers", type=int, default=6000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--end", type=end_date, help="the last simulated day, YYYY-MM-DD (default: yesterday)")
    parser.add_argument("--skip-quality", action="store_true")
    parser.add_argument("--skip-timing", action="store_true")
    args = parser.parse_args()
    print_header("model quality: churn vs oracle, trend vs seasonal naive, churn training time")
    if not args.skip_quality:
        end = args.end or yesterday()
        q = _quality(args.days, args.customers, args.seed, end)
        print(f"data       {args.customers:,} customers, {args.days} days to {end} (seed {args.seed}), "
              f"{int(q['events']):,} events, "
              f"{int(q['label_rows']):,} churn label rows (pipeline {q['pipeline_seconds']:.0f} s)")
        print(f"churn      holdout AUC {q['churn_holdout_auc']:.4f} (observed labels), calibration error "
              f"{q['churn_calibration_error']:.4f}, trained in {q['churn_train_seconds']:.1f} s")
        gap = q["oracle_auc"] - q["model_auc_vs_truth"]
        print(f"churn      vs ground truth on {int(q['oracle_rows']):,} rows "
              f"({int(q['oracle_positives']):,} churners): "
              f"model AUC {q['model_auc_vs_truth']:.4f}  oracle AUC {q['oracle_auc']:.4f}  gap {gap:.4f}  "
              f"target gap <= 0.03: {'PASS' if gap <= 0.03 else 'FAIL'}")
        improvement = 1 - q["smape"] / q["baseline_smape"]
        print(f"trend      sMAPE {q['smape']:.2f}  seasonal naive {q['baseline_smape']:.2f}  "
              f"improvement {improvement:.1%}  target >= 20%: {'PASS' if improvement >= 0.2 else 'FAIL'}")
        print(f"trend      active_customers sMAPE {q['smape_active_customers']:.2f} vs naive "
              f"{q['baseline_smape_active_customers']:.2f}; revenue {q['smape_revenue']:.2f} vs naive "
              f"{q['baseline_smape_revenue']:.2f}")
        print(f"trend      yhat halves alone: booster sMAPE {q['smape_booster']:.2f}, statistical (level x weekday "
              f"profile, revenue via customers) {q['smape_statistical']:.2f}")
        coverage = q["interval_coverage"]
        print(f"trend      80% interval coverage {coverage:.1%}  target 75-85%: "
              f"{'PASS' if 0.75 <= coverage <= 0.85 else 'FAIL'}  (trained in {q['trend_train_seconds']:.1f} s)")
    if not args.skip_timing:
        t = _training_time(args.rows, args.features, args.seed)
        print(f"training   churn booster on {int(t['rows']):,} x {int(t['features'])}: {t['seconds']:.1f} s "
              f"(best iteration {int(t['best_iteration'])}, valid AUC {t['valid_auc']:.3f})  target <= 60 s: "
              f"{'PASS' if t['seconds'] <= 60 else 'FAIL'}")


if __name__ == "__main__":
    main()
