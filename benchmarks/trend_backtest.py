"""Backtest the trend model on windows that end BEFORE the benchmark holdout, to choose its design honestly.

The data are those of `benchmarks/model_quality.py` (the same simulator, arguments and seed, or a pickle of the
series written by an earlier run with `--save`). Each backtest cuts the last `cut` days off every series and runs
the complete training procedure (`models.trend.train.fit_trend`: calibration windows, final model, holdout of the
last 56 days) on what is left, so its holdout lies entirely before the benchmark's. Anything chosen from these
figures (features, conformal level, point forecast) was chosen without looking at the benchmark holdout.

    .venv/bin/python benchmarks/trend_backtest.py --days 365 --customers 6000 --cuts 56 84 112 140 168
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pickle
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._machine import print_header  # noqa: E402
from benchmarks.model_quality import end_date  # noqa: E402


def build_series(days: int, customers: int, seed: int, end: dt.date | None = None) -> list[Any]:
    """The trend series of the model_quality benchmark's lake (simulate, land, dbt), built in a temporary home."""
    with tempfile.TemporaryDirectory(prefix="shironzi-trend-backtest-") as tmp:
        os.environ["SHIRONZI_HOME"] = str(Path(tmp) / "home")
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        from shironzi.settings import get_settings

        get_settings.cache_clear()
        from benchmarks.model_quality import build_lake
        from models.trend.features import load_series

        settings, _, _ = build_lake(days, customers, seed, ["dbt build"], end)
        return load_series(settings=settings)[0]


def backtest(series: list[Any], cuts: list[int], seed: int) -> list[dict[str, float]]:
    """`fit_trend` on the series with the last `cut` days removed, for each cut."""
    from models.trend.train import fit_trend

    rows = []
    for cut in cuts:
        truncated = [replace(s, values=s.values[: len(s.values) - cut]) for s in series if len(s.values) > cut]
        started = time.perf_counter()
        metrics = fit_trend(truncated, seed=seed).metrics
        rows.append({"cut": float(cut), "seconds": time.perf_counter() - started, **metrics})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--customers", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--end", type=end_date, help="the last simulated day, YYYY-MM-DD (default: yesterday)")
    parser.add_argument("--cuts", type=int, nargs="+", default=[56, 84, 112, 140, 168],
                        help="days cut off the end of every series (>= 56 keeps the benchmark holdout unseen)")
    parser.add_argument("--series", type=Path, help="read the series from this pickle instead of building a lake")
    parser.add_argument("--save", type=Path, help="pickle the built series here for later runs")
    args = parser.parse_args()
    print_header("trend backtests before the benchmark holdout")
    if args.series is not None:
        series = pickle.loads(args.series.read_bytes())
    else:
        series = build_series(args.days, args.customers, args.seed, args.end)
        if args.save is not None:
            args.save.write_bytes(pickle.dumps(series))
    rows = backtest(series, args.cuts, args.seed)
    for row in rows:
        improvement = row["smape_improvement"]
        print(f"cut {int(row['cut']):>3} d  sMAPE {row['smape']:.2f}  naive {row['baseline_smape']:.2f}  "
              f"improvement {improvement:.1%}  coverage {row['interval_coverage']:.1%}  "
              f"(customers {row.get('smape_active_customers', float('nan')):.2f} / "
              f"{row.get('interval_coverage_active_customers', float('nan')):.1%}, revenue "
              f"{row.get('smape_revenue', float('nan')):.2f} / {row.get('interval_coverage_revenue', float('nan')):.1%}"
              f"); booster alone {row.get('smape_booster', float('nan')):.2f}, statistical alone "
              f"{row.get('smape_statistical', float('nan')):.2f}  {row['seconds']:.1f} s")
    if rows:
        n = len(rows)
        print(f"mean       improvement {sum(r['smape_improvement'] for r in rows) / n:.1%}  coverage "
              f"{sum(r['interval_coverage'] for r in rows) / n:.1%}")


if __name__ == "__main__":
    main()
