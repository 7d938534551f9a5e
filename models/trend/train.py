"""Trend training: one global XGBoost quantile model forecasting every tenant's daily KPIs 28 days ahead.

One booster fits several quantiles (`reg:quantileerror`) of the KPI on day t + h over the series' scale, from the
features of `models.trend.features`. The point forecast `yhat` combines the booster's with a statistical forecast
(`models.trend.baselines`); the 80 % interval is locally adaptive, with split-conformal factors set on weekly
calibration origins before the holdout (`models.trend.calibration`, `models.trend.split`). The seasonal-naive
baseline is scored on the same holdout: the last 56 days, forecast from five weekly origins. Every design choice
was made on backtests that end before the holdout (`benchmarks/trend_backtest.py`, figures in
docs/models/trend.md), never on the holdout.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.common import (
    CHALLENGER,
    SIZE_BUCKETS,
    TREND_MODEL,
    TrainResult,
    finite,
    inputs_json,
    save_importance_plot,
    smape,
)
from models.promotion import HoldoutScores
from models.tracking import configure_mlflow, ensure_experiment, model_version_dir, run_artifact, version_run_id
from models.trend.baselines import LEVEL_DAYS, PROFILE_WEEKS, SPEND_DAYS
from models.trend.calibration import (
    BOOSTER_WEIGHT,
    CONFORMAL_LEVEL,
    COVERAGE,
    HORIZON_BUCKETS,
    LOCAL_SPREAD,
    POINT_COLUMNS,
    QUANTILES,
    TrendCalibration,
    calibrate,
    point_forecast,
    raw_quantiles,
)
from models.trend.features import (
    FEATURE_NAMES,
    HORIZON,
    KPIS,
    SPREAD_DAYS,
    Examples,
    Series,
    load_series,
    sample_series,
)
from models.trend.split import (
    CALIBRATION_BLOCK,
    CALIBRATION_ORIGINS,
    HOLDOUT_DAYS,
    HOLDOUT_ORIGINS,
    MIN_HISTORY_DAYS,
    MIN_TRAIN_EXAMPLES,
    ORIGIN_STRIDE,
    SHORT_HISTORY_CALIBRATION_ORIGINS,
    TrendSplit,
    split_examples,
)
from shironzi.audit.log import record_training_run
from shironzi.errors import ModelTrainingError
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import xgboost as xgb

EXPERIMENT = "shironzi-trend"
ROUNDS = 150
PARAMS: dict[str, Any] = {
    "objective": "reg:quantileerror",
    "tree_method": "hist",
    "eta": 0.1,
    "max_depth": 5,
    "min_child_weight": 10,
    "subsample": 0.8,
    "colsample_bytree": 0.9,
    "max_bin": 128,
    "nthread": 1,  # the quantile objective's leaf refresh scales badly across threads
}


def fit_quantiles(examples: Examples, *, seed: int, params: Mapping[str, Any] | None = None) -> xgb.Booster:
    import numpy as np
    import xgboost as xgb

    if len(examples.target) < MIN_TRAIN_EXAMPLES:
        raise ModelTrainingError(
            f"trend training needs more history: only {len(examples.target)} training examples "
            f"(each series needs at least {MIN_HISTORY_DAYS} days)")
    chosen = {**PARAMS, **(params or {}), "seed": seed, "quantile_alpha": np.asarray(QUANTILES)}
    train = xgb.QuantileDMatrix(examples.x, examples.target, feature_names=FEATURE_NAMES,
                                max_bin=int(chosen["max_bin"]), nthread=int(chosen["nthread"]))
    return xgb.train(chosen, train, num_boost_round=ROUNDS)



def forecast_metrics(examples: Examples, forecast: np.ndarray) -> dict[str, float]:
    import numpy as np

    lower, median, upper = forecast[:, 0], forecast[:, 1], forecast[:, 2]
    inside = (examples.actual >= lower) & (examples.actual <= upper)
    metrics = {
        "smape": smape(examples.actual, median),
        "baseline_smape": smape(examples.actual, examples.baseline),
        "interval_coverage": float(np.mean(inside)) if len(inside) else float("nan"),
        "holdout_points": float(len(examples.actual)),
    }
    baseline = metrics["baseline_smape"]
    metrics["smape_improvement"] = 1.0 - metrics["smape"] / baseline if baseline else 0.0
    kpis = np.asarray(examples.kpi)
    buckets = np.asarray(examples.bucket)
    for kpi in KPIS:
        mask = kpis == kpi
        if mask.any():
            metrics[f"smape_{kpi}"] = smape(examples.actual[mask], median[mask])
            metrics[f"baseline_smape_{kpi}"] = smape(examples.actual[mask], examples.baseline[mask])
            metrics[f"interval_coverage_{kpi}"] = float(np.mean(inside[mask]))
    for bucket, _ in SIZE_BUCKETS:
        mask = buckets == bucket
        if mask.any():
            metrics[f"smape_bucket_{bucket}"] = smape(examples.actual[mask], median[mask])
    return metrics


@dataclass
class TrendFit:
    booster: xgb.Booster
    calibration: TrendCalibration
    split: TrendSplit
    forecast: np.ndarray  # the holdout forecast (lower, point, upper)
    metrics: dict[str, float]


def fit_trend(series: Sequence[Series], *, seed: int = 0) -> TrendFit:
    """Split, calibrate the interval factors (on rolling blocks of weeks before the holdout, each forecast by a
    model trained on targets before it), train the model on every target before the holdout and score it and
    seasonal naive on the holdout."""
    import numpy as np

    started = time.perf_counter()
    origins = CALIBRATION_ORIGINS
    split = split_examples(series, origins)
    for fewer in SHORT_HISTORY_CALIBRATION_ORIGINS:  # young tenants: calibrate on fewer (more recent) weeks
        if len(split.blocks[-1].train.target) >= MIN_TRAIN_EXAMPLES:
            break
        origins = fewer
        split = split_examples(series, origins)
    calibration_examples = split.calibration
    if len(split.holdout.actual) == 0 or len(calibration_examples.actual) == 0:
        raise ModelTrainingError(f"the trend holdout is empty: the KPI history is too short (each series needs "
                                 f"at least {MIN_HISTORY_DAYS} days)")
    raw = [raw_quantiles(fit_quantiles(block.train, seed=seed), block.calibration.x, block.calibration.scale)
           for block in split.blocks]
    calibration = calibrate(calibration_examples, np.vstack(raw))
    booster = fit_quantiles(split.train, seed=seed)
    holdout = split.holdout
    raw_holdout = raw_quantiles(booster, holdout.x, holdout.scale)
    forecast = calibration.apply(holdout.x, raw_holdout, holdout.spread, holdout.statistical)
    booster_only = replace(calibration, booster_weight=1.0).point_forecast(holdout.x, raw_holdout, None)
    metrics = {**forecast_metrics(holdout, forecast), "train_rows": float(len(split.train.target)),
               # the two halves of the combined `yhat`, each scored alone on the same holdout
               "smape_booster": smape(holdout.actual, booster_only),
               "smape_statistical": smape(holdout.actual, np.clip(holdout.statistical, 0.0, None))
               if holdout.statistical is not None else float("nan"),
               "calibration_rows": float(len(calibration_examples.actual)),
               "interval_scale": calibration.mean_widen(), "calibration_origins": float(origins),
               "calibration_models": float(len(split.blocks))}
    for kpi in KPIS:
        for (first, last), factor in zip(HORIZON_BUCKETS, calibration.widen[kpi], strict=True):
            metrics[f"interval_scale_{kpi}_h{first}_{last}"] = factor
    metrics["train_seconds"] = time.perf_counter() - started
    return TrendFit(booster, calibration, split, forecast, metrics)


def _holdout_table(examples: Examples) -> pa.Table:
    import pyarrow as pa

    columns = {name: pa.array(examples.x[:, i]) for i, name in enumerate(FEATURE_NAMES)}
    spread = examples.spread if examples.spread is not None else [None] * len(examples.actual)
    statistical = examples.statistical if examples.statistical is not None else [None] * len(examples.actual)
    return pa.table({**columns, "scale": examples.scale, "actual": examples.actual, "baseline": examples.baseline,
                     "spread": pa.array(spread, pa.float64()), "statistical": pa.array(statistical, pa.float64()),
                     "tenant_id": examples.tenant_id, "kpi_name": examples.kpi, "size_bucket": examples.bucket,
                     "target_date": pa.array(examples.target_date, pa.date32()),
                     "horizon_day": pa.array(examples.horizon, pa.int32())})


def _examples_from_table(table: pa.Table) -> Examples:
    import numpy as np

    x = np.column_stack([table.column(n).to_numpy() for n in FEATURE_NAMES]).astype(np.float32)
    scale = table.column("scale").to_numpy()
    actual = table.column("actual").to_numpy()
    spread, statistical = (table.column(name).to_numpy(zero_copy_only=False) for name in ("spread", "statistical"))
    return Examples(x, actual / scale, scale, actual, table.column("baseline").to_numpy(),
                    table.column("tenant_id").to_pylist(), table.column("kpi_name").to_pylist(),
                    table.column("size_bucket").to_pylist(), table.column("target_date").to_pylist(),
                    table.column("horizon_day").to_pylist(), spread, statistical)


def _plot(directory: Path, examples: Examples, forecast: np.ndarray, importance: Mapping[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(6, 4))
    horizons = np.asarray(examples.horizon)
    for name, values in (("model", forecast[:, 1]), ("seasonal naive", examples.baseline)):
        per_h = [smape(examples.actual[horizons == h], values[horizons == h]) for h in range(1, HORIZON + 1)]
        ax.plot(range(1, HORIZON + 1), per_h, label=name)
    ax.set(xlabel="horizon (days)", ylabel="sMAPE %", title="Holdout sMAPE by horizon")
    ax.legend()
    fig.tight_layout()
    fig.savefig(directory / "smape_by_horizon.png", dpi=80)
    plt.close(fig)
    save_importance_plot(directory, importance)


def _model_card(metrics: Mapping[str, float], inputs: Sequence[tuple[str, int]], run_id: str, series: int,
                calibration: TrendCalibration) -> str:
    rows = "\n".join(f"| {k} | {v:.4f} |" for k, v in sorted(finite(metrics).items()))
    listed = "\n".join(f"- `{uri}` @ Delta version {version}" for uri, version in inputs)
    points = "; ".join(f"{kpi}: mean of the " + " and ".join(f"{QUANTILES[c]:.0%}" for c in columns) + " quantiles"
                       for kpi, columns in calibration.point.items())
    widths = "; ".join(f"{kpi}: " + ", ".join(f"{factor:.2f} (days {first}-{last})" for (first, last), factor
                                              in zip(HORIZON_BUCKETS, factors, strict=True))
                       for kpi, factors in calibration.widen.items())
    return f"""# Model card: {TREND_MODEL}

- **Task**: forecast each tenant's daily KPIs ({', '.join(KPIS)}) 1-{HORIZON} days ahead with an 80 % interval.
- **Model**: one global XGBoost booster with the quantile objective (alphas {QUANTILES}), {ROUNDS} rounds;
  features are lags, rolling means, same-weekday values and calendar fields divided by the series' 28-day mean,
  trained on one daily forecast origin in {ORIGIN_STRIDE}. Run `{run_id}`; {series} series.
- **`yhat`** (the point forecast): {calibration.booster_weight:.0%} the booster's forecast ({points}; slightly
  above the median on purpose: sMAPE punishes under-forecasts more and daily revenue is right-skewed) and
  {1 - calibration.booster_weight:.0%} the statistical forecast: the series' deseasonalised mean over the last
  {LEVEL_DAYS} days times its weekday profile over the last {PROFILE_WEEKS} weeks; for revenue, the same forecast of
  the tenant's active customers times its revenue per active customer over the last {SPEND_DAYS} days. On this
  holdout the booster alone scores sMAPE {metrics.get("smape_booster", float("nan")):.2f}, the statistical forecast
  alone {metrics.get("smape_statistical", float("nan")):.2f}, the combination {metrics.get("smape", float("nan")):.2f}.
  Chosen on backtests before the holdout. It is not a mean: summing `yhat` over days does not estimate the total.
- **`yhat_lower` / `yhat_upper`** (the 80 % interval, locally adaptive): `yhat` minus / plus a factor times the
  series' local spread, its mean absolute week-over-week change over the {SPREAD_DAYS} days up to the forecast
  origin, so the width follows each tenant's current volatility (lower end clipped at 0). The factor per KPI and
  horizon bucket is the split-conformal {CONFORMAL_LEVEL:.0%} quantile of |actual - yhat| / spread on
  {metrics.get("calibration_origins", CALIBRATION_ORIGINS):.0f} weekly calibration origins before the holdout,
  forecast in rolling blocks of {CALIBRATION_BLOCK} weeks, each by a model trained only on targets before its
  block; that level realised about {COVERAGE:.0%} coverage in backtests before the holdout. Factors: {widths}.
- **Baseline**: seasonal naive (the same weekday of the last observed week), scored on the same holdout.
- **Holdout**: {HOLDOUT_ORIGINS} weekly forecast origins over the last {HOLDOUT_DAYS} days; training and calibration
  targets all precede it, and nothing is tuned on it.
- **Exact inputs**:
{listed}

| metric | value |
|---|---|
{rows}
"""


def train_trend(
    *,
    settings: Settings | None = None,
    seed: int = 0,
    register: bool = True,
    input_versions: Mapping[str, int] | None = None,
    tenant_ids: Sequence[str] | None = None,
) -> TrainResult:
    """Train and evaluate the global trend model (vs seasonal naive), log it to MLflow; the registered version
    gets the `challenger` alias."""
    import mlflow
    import pandas as pd
    import pyarrow.parquet as pq
    import xgboost as xgb
    from mlflow.models import infer_signature

    settings = settings or get_settings()
    with stage("models:train_trend", seed=seed) as summary:
        loaded, inputs = load_series(settings=settings, tenant_ids=tenant_ids, input_versions=input_versions)
        series = sample_series(loaded, settings.model_max_training_rows, ORIGIN_STRIDE, seed=seed)
        fit = fit_trend(series, seed=seed)
        fit.metrics.update(series_available=float(len(loaded)), series_trained=float(len(series)))
        train, holdout, forecast, metrics, booster = (fit.split.train, fit.split.holdout, fit.forecast, fit.metrics,
                                                      fit.booster)
        client = configure_mlflow(settings)
        experiment = ensure_experiment(EXPERIMENT, settings)
        with mlflow.start_run(experiment_id=experiment, run_name="trend") as run:
            run_id = run.info.run_id
            mlflow.log_params({**{k: v for k, v in PARAMS.items()}, "rounds": ROUNDS, "quantiles": str(QUANTILES),
                               "horizon": HORIZON, "holdout_origins": HOLDOUT_ORIGINS, "series": len(series),
                               "series_available": len(loaded), "max_training_rows": settings.model_max_training_rows,
                               "calibration_origins": CALIBRATION_ORIGINS, "conformal_level": CONFORMAL_LEVEL,
                               "calibration_block_weeks": CALIBRATION_BLOCK, "origin_stride": ORIGIN_STRIDE,
                               "interval": LOCAL_SPREAD, "point_quantiles": str([QUANTILES[c] for c in POINT_COLUMNS]),
                               "booster_weight": BOOSTER_WEIGHT, "level_days": LEVEL_DAYS,
                               "profile_weeks": PROFILE_WEEKS, "spend_days": SPEND_DAYS,
                               "features": len(FEATURE_NAMES), "baseline": "seasonal_naive_weekly", "seed": seed})
            mlflow.log_metrics(finite(metrics))
            mlflow.set_tags({"model": TREND_MODEL, "scope": "global", "seed": str(seed)})
            importance = booster.get_score(importance_type="total_gain")
            with tempfile.TemporaryDirectory() as tmp:
                root = Path(tmp)
                (root / "plots").mkdir()
                _plot(root / "plots", holdout, forecast, importance)
                (root / "feature_importance.json").write_text(json.dumps(importance, indent=2, sort_keys=True))
                (root / "inputs.json").write_text(inputs_json(inputs))
                (root / "model_card.md").write_text(_model_card(metrics, inputs, run_id, len(series),
                                                                fit.calibration))
                (root / "features.json").write_text(json.dumps({"names": FEATURE_NAMES, "quantiles": QUANTILES,
                                                                "kpis": KPIS, "horizon": HORIZON,
                                                                **fit.calibration.to_dict()}))
                pq.write_table(_holdout_table(holdout), root / "holdout.parquet")
                for path in root.rglob("*"):
                    if path.is_file():
                        folder = path.parent.relative_to(root).as_posix()
                        mlflow.log_artifact(str(path), artifact_path=None if folder == "." else folder)
            frame = pd.DataFrame(holdout.x[:5], columns=FEATURE_NAMES)
            info = mlflow.xgboost.log_model(
                booster, name="model", input_example=frame,
                signature=infer_signature(frame, booster.inplace_predict(holdout.x[:5])),
                registered_model_name=TREND_MODEL if register else None,
                pip_requirements=[f"xgboost=={xgb.__version__}"], await_registration_for=0)
        version = str(info.registered_model_version) if register else None
        if version is not None:
            client.set_model_version_tag(TREND_MODEL, version, "scope", "global")
            client.set_registered_model_alias(TREND_MODEL, CHALLENGER, version)
        record_training_run("models:train", run_id=run_id, inputs=inputs, model_name=TREND_MODEL,
                            model_version=version)
        summary.rows = len(train.target)
        summary.table_version = {uri.rsplit("/lake/", 1)[-1]: v for uri, v in inputs}
        summary.extra.update(run_id=run_id, version=version, smape=round(metrics["smape"], 3),
                             baseline_smape=round(metrics["baseline_smape"], 3))
    return TrainResult(run_id=run_id, model_version=version, metrics=finite(metrics), inputs=inputs,
                       model_name=TREND_MODEL)


def load_trend_version(version: str, *, settings: Settings | None = None) -> tuple[xgb.Booster, TrendCalibration]:
    """The booster of a registered trend version and its calibration (point quantile and interval factors)."""
    import xgboost as xgb

    directory = model_version_dir(TREND_MODEL, version, settings=settings)
    files = sorted(directory.glob("model.*"), key=lambda p: p.suffix != ".ubj")
    booster = xgb.Booster()
    booster.load_model(str(files[0]))
    meta = json.loads(run_artifact(version_run_id(TREND_MODEL, version, settings=settings), "features.json",
                                   settings=settings).read_text())
    return booster, TrendCalibration.from_dict(meta)


def evaluate_version_on_holdout(
    version: str, holdout_run_id: str, *, settings: Settings | None = None,
) -> HoldoutScores:
    """sMAPE overall and per tenant-size bucket of `version`'s point forecast on the holdout saved by
    `holdout_run_id`."""
    import numpy as np
    import pyarrow.parquet as pq

    booster, calibration = load_trend_version(version, settings=settings)
    examples = _examples_from_table(pq.read_table(run_artifact(holdout_run_id, "holdout.parquet", settings=settings)))
    point = point_forecast(booster, examples.x, examples.scale, calibration, examples.statistical)
    buckets = np.asarray(examples.bucket)
    per_bucket = {b: smape(examples.actual[buckets == b], point[buckets == b]) for b, _ in SIZE_BUCKETS
                  if (buckets == b).any()}
    return HoldoutScores(smape(examples.actual, point), per_bucket, False, "smape")
