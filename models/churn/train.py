"""Churn training: point-in-time training set, time split, XGBoost, isotonic calibration, MLflow run + registry.

    result = train_churn(seed=0)                 # current lake versions
    again = train_churn(seed=0, input_versions=dict(result.inputs))   # the same data -> the same metrics

Labels come from gold `fct_churn_labels` (one row per customer and weekly snapshot); features from the
feature store's offline tables, joined as of each snapshot (`get_training_set`). The newest snapshot dates
are the holdout (evaluation), the ones before it the validation window (early stopping + calibration),
and everything older is training data: no random split.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from feature_store.registry import list_feature_views
from feature_store.retrieval import ENTITY_TIMESTAMP, get_training_set
from models.bands import band_thresholds
from models.churn.base_features import (
    DERIVED_FEATURES,
    DERIVED_VIEW,
    CustomerBase,
    add_customer_base_features,
)
from models.churn.card import model_card, window_artifact, window_params
from models.common import (
    CHALLENGER,
    CHURN_MODEL,
    SIZE_BUCKETS,
    Calibrator,
    TrainResult,
    as_float_matrix,
    auc_or_nan,
    classification_metrics,
    finite,
    group_rows,
    inputs_json,
    read_feature_inputs,
    read_gold_inputs,
    save_importance_plot,
    size_bucket,
)
from models.promotion import HoldoutScores
from models.tracking import (
    configure_mlflow,
    ensure_experiment,
    model_version_dir,
    run_artifact,
    tenant_challenger_alias,
    version_run_id,
)
from monitoring.drift import REFERENCE_ARTIFACT, reference_bins
from shironzi.audit.log import record_training_run
from shironzi.errors import ModelTrainingError
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import xgboost as xgb

LABEL = "churned_within_horizon"
LABELS_TABLE = "fct_churn_labels"
MODULE = "churn_prediction"
EXPERIMENT = "shironzi-churn"
HOLDOUT_SHARE = 0.15
VALID_SHARE = 0.15
MAX_ROUNDS = 300
EARLY_STOPPING = 20
DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary:logistic",
    "eval_metric": "logloss",
    "tree_method": "hist",
    "eta": 0.1,
    "max_depth": 5,
    "min_child_weight": 5,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "lambda": 1.0,
    "max_bin": 64,
    # One thread: on a shared 2-core machine OpenMP threads spin against each other and two threads run 3x
    # slower than one (measured: 0.23 s vs 0.08 s per round on 1M x 40 rows under load).
    "nthread": 1,
}


def churn_feature_refs() -> list[str]:
    """Every feature of every view as `view:feature` (the customer views plus the tenant context)."""
    return [f"{view.name}:{feature.name}" for view in list_feature_views() for feature in view.features]


@dataclass
class ChurnDataset:
    """The joined training set and where it came from."""

    table: pa.Table  # tenant_id, customer_id, snapshot_date, label, bucket, one column per feature
    feature_names: list[str]
    feature_refs: list[str]
    inputs: list[tuple[str, int]]
    windows: dict[str, tuple[int, int]] = field(default_factory=dict)  # tenant -> (inactivity, horizon) days
    customer_base: CustomerBase = field(default_factory=CustomerBase)  # each tenant's newest BG/NBD fit
    rows_available: int = 0  # labelled snapshots before sampling (== table.num_rows when nothing was sampled)

    def split_dates(self) -> tuple[list[Any], list[Any], list[Any]]:
        """(train, validation, holdout) snapshot dates, oldest first."""
        dates = sorted(set(self.table.column("snapshot_date").to_pylist()))
        if len(dates) < 3:
            raise ModelTrainingError(
                f"churn training needs at least 3 label snapshot dates for a time split, found {len(dates)}")
        holdout = max(1, round(len(dates) * HOLDOUT_SHARE))
        valid = max(1, round(len(dates) * VALID_SHARE))
        return dates[: len(dates) - holdout - valid], dates[len(dates) - holdout - valid: -holdout], dates[-holdout:]


def sample_labels(labels: pa.Table, bucket_of: Mapping[str, str], max_rows: int, *, seed: int = 0) -> pa.Table:
    """At most `max_rows` label rows, stratified by tenant-size bucket and label: each (bucket, label) stratum keeps
    its share of the rows (so the churn rate and the bucket mix, and with them the calibration, are those of the
    whole set), the rows of a stratum drawn with `seed` from the sorted labels: the same data gives the same sample."""
    import numpy as np
    import pyarrow as pa

    if labels.num_rows <= max_rows:
        return labels
    order = np.random.default_rng(seed).random(labels.num_rows)  # the labels come sorted: the same draw each time
    # each row's bucket through the tenant ids' dictionary: one lookup per tenant, not a Python string per row
    tenants = labels.column("tenant_id").combine_chunks().dictionary_encode()
    names = sorted(set(bucket_of.values()))
    bucket_codes = np.asarray([names.index(bucket_of[t]) for t in tenants.dictionary.to_pylist()], dtype=np.int16)
    buckets = bucket_codes[tenants.indices.to_numpy(zero_copy_only=False)]
    label = labels.column(LABEL).to_numpy(zero_copy_only=False)
    share = max_rows / labels.num_rows
    keep: list[np.ndarray] = []
    for bucket in np.unique(buckets):
        for value in np.unique(label):
            rows = np.flatnonzero((buckets == bucket) & (label == value))
            take = int(np.floor(len(rows) * share))
            keep.append(rows[np.argsort(order[rows], kind="stable")[:take]])
    return labels.take(pa.array(np.sort(np.concatenate(keep)))) if keep else labels.slice(0, 0)


def build_churn_dataset(
    *,
    settings: Settings | None = None,
    tenant_ids: Sequence[str] | None = None,
    input_versions: Mapping[str, int] | None = None,
    max_rows: int | None = None,
    seed: int = 0,
) -> ChurnDataset:
    """Labels x point-in-time features for the tenants with churn_prediction on, at pinned Delta versions. More
    than `max_rows` labelled snapshots (default SHIRONZI_MODEL_MAX_TRAINING_ROWS) are sampled (`sample_labels`)
    before the feature join, and the feature rows of customers left out are dropped: memory follows the cap."""
    import pyarrow as pa
    import pyarrow.compute as pc

    settings = settings or get_settings()
    cap = settings.model_max_training_rows if max_rows is None else max_rows
    gold = read_gold_inputs(LABELS_TABLE, MODULE, columns=["tenant_id", "customer_id", "snapshot_date", LABEL,
                                                           "inactivity_days", "horizon_days"],
                            settings=settings, tenant_ids=tenant_ids, input_versions=input_versions)
    tenants, inputs = gold.tenants, gold.inputs
    labels = pa.concat_tables(gold.parts).sort_by([("snapshot_date", "ascending"), ("tenant_id", "ascending"),
                                                    ("customer_id", "ascending")])
    windows = label_windows(labels)
    labels = labels.select(["tenant_id", "customer_id", "snapshot_date", LABEL])
    available = labels.num_rows
    sizes = labels.group_by("tenant_id").aggregate([("customer_id", "count_distinct")])
    bucket_of = {t: size_bucket(n) for t, n in zip(sizes.column("tenant_id").to_pylist(),
                                                   sizes.column("customer_id_count_distinct").to_pylist(), strict=True)}
    labels = sample_labels(labels, bucket_of, cap, seed=seed)
    # a sample reads only its customers' feature rows, kept as each feature table is scanned: reading them all
    # first took 12 GiB at 10M events for a 500,000-row cap
    sampled = (labels.select(["tenant_id", "customer_id"]).group_by(["tenant_id", "customer_id"]).aggregate([])
               if labels.num_rows < available else None)
    feature_tables, read = read_feature_inputs([v.name for v in list_feature_views()], tenants,
                                               settings=settings, input_versions=input_versions, among=sampled)
    inputs.extend(read)
    refs = churn_feature_refs()
    entities = labels.rename_columns(["tenant_id", "customer_id", ENTITY_TIMESTAMP, LABEL])
    joined = get_training_set(entities, refs, settings=settings, feature_tables=feature_tables)
    joined = joined.rename_columns(["tenant_id", "customer_id", "snapshot_date", *joined.column_names[3:]])
    # get_training_set turned each date into the end of that day (UTC); keep the label date.
    joined = joined.set_column(2, "snapshot_date", pc.cast(joined.column("snapshot_date"), pa.date32()))
    buckets = pa.array([bucket_of[t] for t in joined.column("tenant_id").to_pylist()], pa.string())
    joined = joined.append_column("size_bucket", buckets)
    joined = joined.set_column(joined.column_names.index(LABEL), LABEL, pc.cast(joined.column(LABEL), pa.int8()))
    joined, base = add_customer_base_features(joined, date_column="snapshot_date",
                                              horizons={t: h for t, (_, h) in windows.items()})
    refs = [*refs, *(f"{DERIVED_VIEW}:{name}" for name in DERIVED_FEATURES)]
    names = [ref.split(":", 1)[1] for ref in refs]
    return ChurnDataset(joined, names, refs, inputs, windows, base, available)


def label_windows(labels: pa.Table) -> dict[str, tuple[int, int]]:
    """Each tenant's (inactivity, horizon) days as its labels were built with (the newest per tenant)."""
    newest = labels.group_by("tenant_id").aggregate([("inactivity_days", "max"), ("horizon_days", "max")])
    return {t: (int(i), int(h)) for t, i, h in zip(*(newest.column(c).to_pylist() for c in (
        "tenant_id", "inactivity_days_max", "horizon_days_max")), strict=True)}


def tenant_bands(table: pa.Table, probabilities: np.ndarray) -> dict[str, tuple[float, float]]:
    """Each tenant's risk-band thresholds from its calibrated probabilities on `table`'s rows (see models.bands)."""

    return {str(t): band_thresholds(probabilities[rows])
            for t, rows in group_rows(table.column("tenant_id").to_pylist()).items()}


@dataclass
class FittedChurn:
    booster: xgb.Booster
    calibrator: Calibrator
    metrics: dict[str, float]
    holdout: pa.Table
    holdout_probabilities: np.ndarray
    train_dates: list[Any] = field(default_factory=list)
    valid_dates: list[Any] = field(default_factory=list)
    holdout_dates: list[Any] = field(default_factory=list)
    params: dict[str, Any] = field(default_factory=dict)
    bands: dict[str, tuple[float, float]] = field(default_factory=dict)  # tenant -> risk-band thresholds


def _parts(table: pa.Table, holdout: int, valid: int) -> dict[str, pa.Table]:
    """Train/valid/holdout rows, split per tenant: each tenant's newest `holdout` snapshot dates are its holdout,
    the `valid` before them its validation window. Tenants with a long horizon have their newest labels earlier
    than the others, and still get a holdout; for the tenants whose labels reach the newest date it is the global
    split of `ChurnDataset.split_dates`."""
    import numpy as np
    import pyarrow as pa

    days = np.asarray(table.column("snapshot_date").cast(pa.int32()).to_numpy(zero_copy_only=False))
    rank = np.zeros(table.num_rows, dtype=np.int64)
    for index in group_rows(table.column("tenant_id").to_pylist()).values():
        distinct = np.unique(days[index])
        rank[index] = distinct.size - 1 - np.searchsorted(distinct, days[index])
    names = np.where(rank < holdout, "holdout", np.where(rank < holdout + valid, "valid", "train"))
    return {name: table.filter(pa.array(names == name)) for name in ("train", "valid", "holdout")}


def fit_booster(
    x_train: np.ndarray, y_train: np.ndarray, x_valid: np.ndarray, y_valid: np.ndarray, *,
    feature_names: Sequence[str], seed: int, params: Mapping[str, Any] | None = None,
) -> xgb.Booster:
    """XGBoost with early stopping on the validation window (deterministic for a seed)."""
    import xgboost as xgb

    chosen = {**DEFAULT_PARAMS, **(params or {}), "seed": seed}
    positives = float(y_train.sum())
    if positives == 0 or positives == len(y_train):
        raise ModelTrainingError("the training window has a single class: not enough churn history to learn from")
    train = xgb.QuantileDMatrix(x_train, y_train, feature_names=list(feature_names),
                                max_bin=int(chosen["max_bin"]), nthread=int(chosen["nthread"]))
    valid = xgb.DMatrix(x_valid, y_valid, feature_names=list(feature_names), nthread=int(chosen["nthread"]))
    return xgb.train(chosen, train, num_boost_round=MAX_ROUNDS, evals=[(valid, "valid")],
                     early_stopping_rounds=EARLY_STOPPING, verbose_eval=False)


def raw_scores(booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    """Uncalibrated probabilities up to the best iteration (inplace_predict: no DMatrix)."""
    import numpy as np

    best = getattr(booster, "best_iteration", None)
    limit = (0, int(best) + 1) if best is not None else (0, 0)
    return np.asarray(booster.inplace_predict(x, iteration_range=limit), dtype=np.float64)


def fit_churn(dataset: ChurnDataset, *, seed: int = 0, params: Mapping[str, Any] | None = None) -> FittedChurn:
    """Train on the older windows, calibrate on the validation window, evaluate on the holdout."""
    import numpy as np

    train_dates, valid_dates, holdout_dates = dataset.split_dates()
    parts = _parts(dataset.table, len(holdout_dates), len(valid_dates))
    x = {k: as_float_matrix(v, dataset.feature_names) for k, v in parts.items()}
    y = {k: v.column(LABEL).to_numpy().astype(np.float32) for k, v in parts.items()}
    booster = fit_booster(x["train"], y["train"], x["valid"], y["valid"], feature_names=dataset.feature_names,
                          seed=seed, params=params)
    calibrator = Calibrator.fit(raw_scores(booster, x["valid"]), y["valid"])
    probabilities = calibrator.apply(raw_scores(booster, x["holdout"]))
    bands = tenant_bands(parts["valid"], calibrator.apply(raw_scores(booster, x["valid"])))
    buckets = np.asarray(parts["holdout"].column("size_bucket").to_pylist())
    metrics = classification_metrics(y["holdout"], probabilities, buckets)
    metrics.update({
        "train_rows": float(len(y["train"])), "valid_rows": float(len(y["valid"])),
        "best_iteration": float(getattr(booster, "best_iteration", 0)),
        "valid_auc_raw": auc_or_nan(y["valid"], raw_scores(booster, x["valid"])),
    })
    return FittedChurn(booster, calibrator, metrics, parts["holdout"], probabilities, train_dates, valid_dates,
                       holdout_dates, {**DEFAULT_PARAMS, **(params or {}), "seed": seed}, bands)


# -- artifacts -------------------------------------------------------------------------------------------
def _plots(directory: Path, labels: np.ndarray, probabilities: np.ndarray, importance: Mapping[str, float]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    if len(np.unique(labels)) == 2:
        fpr, tpr, _ = roc_curve(labels, probabilities)
        ax.plot(fpr, tpr, label=f"AUC {auc_or_nan(labels, probabilities):.3f}")
    ax.plot([0, 1], [0, 1], "--", color="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (holdout)")
    ax.legend(loc="lower right")
    fig.savefig(directory / "roc.png", dpi=80)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 5))
    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(probabilities, edges) - 1, 0, 9)
    means = [(probabilities[which == b].mean(), labels[which == b].mean()) for b in range(10) if (which == b).any()]
    if means:
        ax.plot(*zip(*means, strict=True), "o-", label="model")
    ax.plot([0, 1], [0, 1], "--", color="grey", label="perfect")
    ax.set(xlabel="predicted churn probability", ylabel="observed churn rate", title="Calibration (holdout)")
    ax.legend(loc="upper left")
    fig.savefig(directory / "calibration.png", dpi=80)
    plt.close(fig)

    save_importance_plot(directory, importance)


def _log_churn_model(
    *, booster: xgb.Booster, calibrator: Calibrator, feature_names: Sequence[str], feature_refs: Sequence[str],
    example: np.ndarray, register: bool, tags: Mapping[str, str], settings: Settings,
    customer_base: CustomerBase | None = None, bands: Mapping[str, tuple[float, float]] | None = None,
) -> str | None:
    """Log the booster (servable by `mlflow models serve`) and its calibrator; returns the registered version."""
    import mlflow
    import pandas as pd
    import xgboost as xgb
    from mlflow.models import infer_signature

    frame = pd.DataFrame(example, columns=list(feature_names))
    signature = infer_signature(frame, raw_scores(booster, example))
    info = mlflow.xgboost.log_model(
        booster, name="model", signature=signature, input_example=frame,
        registered_model_name=CHURN_MODEL if register else None,
        pip_requirements=[f"xgboost=={xgb.__version__}"], await_registration_for=0,
    )
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "calibrator.json").write_text(calibrator.to_json())
        (Path(tmp) / "features.json").write_text(json.dumps({"names": list(feature_names), "refs": list(feature_refs),
                                                             "best_iteration": getattr(booster, "best_iteration",
                                                                                       None)}))
        (Path(tmp) / "customer_base.json").write_text(json.dumps((customer_base or CustomerBase()).to_dict()))
        (Path(tmp) / "bands.json").write_text(json.dumps({t: list(b) for t, b in (bands or {}).items()}))
        for name in ("calibrator.json", "features.json", "customer_base.json", "bands.json"):
            mlflow.log_artifact(str(Path(tmp) / name))
    if not register:
        return None
    version = str(info.registered_model_version)
    client = configure_mlflow(settings)
    for key, value in tags.items():
        client.set_model_version_tag(CHURN_MODEL, version, key, value)
    return version


def _dedicated_models(
    dataset: ChurnDataset, fitted: FittedChurn, *, seed: int, min_rows: int, margin: float,
) -> dict[str, dict[str, Any]]:
    """Per tenant with >= min_rows training rows: a model on its own rows, compared on its own holdout."""
    import numpy as np
    import pyarrow.compute as pc

    out: dict[str, dict[str, Any]] = {}
    train = _parts(dataset.table, len(fitted.holdout_dates), len(fitted.valid_dates))["train"]
    counts = train.group_by("tenant_id").aggregate([("tenant_id", "count")])
    big = [t for t, n in zip(counts.column("tenant_id").to_pylist(), counts.column("tenant_id_count").to_pylist(),
                             strict=True) if n >= min_rows]
    holdout_tenants = np.asarray(fitted.holdout.column("tenant_id").to_pylist())
    holdout_labels = fitted.holdout.column(LABEL).to_numpy()
    for tenant_id in sorted(big):
        mine = dataset.table.filter(pc.equal(dataset.table.column("tenant_id"), tenant_id))
        sub = ChurnDataset(mine, dataset.feature_names, dataset.feature_refs, dataset.inputs, dataset.windows,
                           dataset.customer_base)
        mask = holdout_tenants == tenant_id
        global_auc = auc_or_nan(holdout_labels[mask], fitted.holdout_probabilities[mask])
        try:
            own = fit_churn_on_dates(sub, fitted, seed=seed)
        except ModelTrainingError as exc:
            out[tenant_id] = {"chosen": False, "reason": exc.message, "global_auc": global_auc}
            continue
        chosen = own.metrics["auc"] == own.metrics["auc"] and (
            global_auc != global_auc or own.metrics["auc"] >= global_auc + margin)
        out[tenant_id] = {"chosen": bool(chosen), "dedicated_auc": own.metrics["auc"], "global_auc": global_auc,
                          "fitted": own}
    return out


def fit_churn_on_dates(dataset: ChurnDataset, like: FittedChurn, *, seed: int) -> FittedChurn:
    """Fit on the same date split as `like` (a tenant's rows on the global split)."""
    import numpy as np

    parts = _parts(dataset.table, len(like.holdout_dates), len(like.valid_dates))
    if any(p.num_rows == 0 for p in parts.values()):
        raise ModelTrainingError("a window of the split has no rows for this tenant")
    x = {k: as_float_matrix(v, dataset.feature_names) for k, v in parts.items()}
    y = {k: v.column(LABEL).to_numpy().astype(np.float32) for k, v in parts.items()}
    booster = fit_booster(x["train"], y["train"], x["valid"], y["valid"], feature_names=dataset.feature_names,
                          seed=seed)
    calibrator = Calibrator.fit(raw_scores(booster, x["valid"]), y["valid"])
    probabilities = calibrator.apply(raw_scores(booster, x["holdout"]))
    buckets = np.asarray(parts["holdout"].column("size_bucket").to_pylist())
    metrics = classification_metrics(y["holdout"], probabilities, buckets)
    return FittedChurn(booster, calibrator, metrics, parts["holdout"], probabilities, like.train_dates,
                       like.valid_dates, like.holdout_dates,
                       bands=tenant_bands(parts["valid"], calibrator.apply(raw_scores(booster, x["valid"]))))


def log_and_register(
    dataset: ChurnDataset, fitted: FittedChurn, *, settings: Settings, register: bool, seed: int,
    dedicated: Mapping[str, Mapping[str, Any]] | None = None, run_name: str = "churn", seconds: float = 0.0,
) -> TrainResult:
    """One MLflow run: params, metrics, plots, importance, model card, holdout, inputs; the registered version
    gets the `challenger` alias (and dedicated tenant models `challenger_<tenant>`)."""
    import mlflow
    import pyarrow.parquet as pq

    client = configure_mlflow(settings)
    experiment = ensure_experiment(EXPERIMENT, settings)
    dedicated = dedicated or {}
    tenants = len(set(dataset.table.column("tenant_id").to_pylist()))
    with mlflow.start_run(experiment_id=experiment, run_name=run_name) as run:
        run_id = run.info.run_id
        mlflow.log_params({**{k: v for k, v in fitted.params.items()}, "max_rounds": MAX_ROUNDS,
                           "early_stopping_rounds": EARLY_STOPPING, "features": len(dataset.feature_names),
                           "tenants": tenants, "rows": dataset.table.num_rows,
                           "rows_available": dataset.rows_available or dataset.table.num_rows,
                           "max_training_rows": settings.model_max_training_rows,
                           "train_dates": f"{fitted.train_dates[0]}..{fitted.train_dates[-1]}",
                           "valid_dates": f"{fitted.valid_dates[0]}..{fitted.valid_dates[-1]}",
                           "holdout_dates": f"{fitted.holdout_dates[0]}..{fitted.holdout_dates[-1]}",
                           "calibration": "isotonic", **window_params(dataset.windows)})
        metrics = {**fitted.metrics, "train_seconds": seconds}
        for tenant_id, outcome in dedicated.items():
            metrics[f"tenant_{tenant_id}_dedicated_auc"] = float(outcome.get("dedicated_auc", float("nan")))
            metrics[f"tenant_{tenant_id}_global_auc"] = float(outcome.get("global_auc", float("nan")))
        mlflow.log_metrics(finite(metrics))
        mlflow.set_tags({"model": CHURN_MODEL, "seed": str(seed), "scope": "global"})
        importance = fitted.booster.get_score(importance_type="total_gain")
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            (root / "plots").mkdir()
            labels = fitted.holdout.column(LABEL).to_numpy()
            _plots(root / "plots", labels, fitted.holdout_probabilities, importance)
            (root / "feature_importance.json").write_text(json.dumps(
                dict(sorted(importance.items(), key=lambda kv: kv[1], reverse=True)), indent=2))
            (root / "inputs.json").write_text(inputs_json(dataset.inputs))
            (root / "windows.json").write_text(json.dumps(window_artifact(dataset.windows), indent=2))
            # the training distribution the scoring runs measure drift against (monitoring.drift)
            (root / REFERENCE_ARTIFACT).write_text(json.dumps(reference_bins(
                as_float_matrix(dataset.table, dataset.feature_names), dataset.feature_names,
                fitted.holdout_probabilities, importance)))
            (root / "model_card.md").write_text(model_card(fitted=fitted, dataset=dataset, run_id=run_id,
                                                           tenants=tenants, dedicated=dedicated))
            pq.write_table(fitted.holdout, root / "holdout.parquet")
            for path in root.rglob("*"):
                if path.is_file():
                    folder = path.parent.relative_to(root).as_posix()
                    mlflow.log_artifact(str(path), artifact_path=None if folder == "." else folder)
        example = as_float_matrix(fitted.holdout.slice(0, 5), dataset.feature_names)
        version = _log_churn_model(booster=fitted.booster, calibrator=fitted.calibrator,
                                   feature_names=dataset.feature_names, feature_refs=dataset.feature_refs,
                                   example=example, register=register,
                                   tags={"scope": "global", "seed": str(seed)}, settings=settings,
                                   customer_base=dataset.customer_base, bands=fitted.bands)
    dedicated_versions: dict[str, str] = {}
    if register and version is not None:
        client.set_registered_model_alias(CHURN_MODEL, CHALLENGER, version)
        for tenant_id, outcome in sorted(dedicated.items()):
            if not outcome.get("chosen"):
                continue
            own: FittedChurn = outcome["fitted"]
            with mlflow.start_run(experiment_id=experiment, run_name=f"churn-{tenant_id}"):
                mlflow.log_metrics(finite(own.metrics))
                mlflow.set_tags({"model": CHURN_MODEL, "scope": "tenant", "tenant_id": tenant_id,
                                 "parent_run_id": run_id})
                tenant_version = _log_churn_model(
                    booster=own.booster, calibrator=own.calibrator, feature_names=dataset.feature_names,
                    feature_refs=dataset.feature_refs, example=example, register=True,
                    tags={"scope": "tenant", "tenant_id": tenant_id, "parent_run_id": run_id}, settings=settings,
                    customer_base=dataset.customer_base, bands=own.bands)
            if tenant_version is not None:
                client.set_registered_model_alias(CHURN_MODEL, tenant_challenger_alias(tenant_id), tenant_version)
                dedicated_versions[tenant_id] = tenant_version
    return TrainResult(run_id=run_id, model_version=version, metrics=finite(metrics), inputs=list(dataset.inputs),
                       model_name=CHURN_MODEL, dedicated=dedicated_versions)


def train_churn(
    *,
    settings: Settings | None = None,
    seed: int = 0,
    register: bool = True,
    input_versions: Mapping[str, int] | None = None,
    tenant_ids: Sequence[str] | None = None,
) -> TrainResult:
    """Train, calibrate, evaluate and log the global churn model (plus dedicated models for big tenants that
    beat it on their own holdout); registered versions get the `challenger` alias."""
    settings = settings or get_settings()
    with stage("models:train_churn", seed=seed) as summary:
        dataset = build_churn_dataset(settings=settings, tenant_ids=tenant_ids, input_versions=input_versions,
                                      seed=seed)
        started = time.perf_counter()
        fitted = fit_churn(dataset, seed=seed)
        dedicated = _dedicated_models(dataset, fitted, seed=seed, min_rows=settings.model_dedicated_min_rows,
                                      margin=settings.model_promotion_margin)
        seconds = time.perf_counter() - started
        result = log_and_register(dataset, fitted, settings=settings, register=register, seed=seed,
                                  dedicated=dedicated, seconds=seconds)
        record_training_run("models:train", run_id=result.run_id, inputs=result.inputs, model_name=CHURN_MODEL,
                            model_version=result.model_version)
        summary.rows = dataset.table.num_rows
        summary.extra.update(rows_available=dataset.rows_available)
        summary.table_version = {uri.rsplit("/lake/", 1)[-1]: v for uri, v in result.inputs}
        summary.extra.update(run_id=result.run_id, version=result.model_version,
                             auc=round(result.metrics.get("auc", float("nan")), 4),
                             dedicated=len(result.dedicated))
    return result


# -- evaluation for the promotion gate -----------------------------------------------------------------
@dataclass
class LoadedChurnModel:
    """A registered churn version loaded natively: booster, calibrator and feature order."""

    version: str
    booster: xgb.Booster
    calibrator: Calibrator
    feature_names: list[str]
    feature_refs: list[str]
    best_iteration: int | None
    tenant_id: str | None = None
    customer_base: CustomerBase | None = None  # per-tenant BG/NBD fits that fill the derived features online
    bands: dict[str, tuple[float, float]] = field(default_factory=dict)  # tenant -> risk-band thresholds

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        import numpy as np

        limit = (0, self.best_iteration + 1) if self.best_iteration is not None else (0, 0)
        raw = np.asarray(self.booster.inplace_predict(x, iteration_range=limit), dtype=np.float64)
        return self.calibrator.apply(raw)


def load_churn_version(version: str, *, settings: Settings | None = None) -> LoadedChurnModel:
    """Booster (model.ubj) and calibrator of a registered version, without pyfunc."""
    import xgboost as xgb

    settings = settings or get_settings()
    directory = model_version_dir(CHURN_MODEL, version, settings=settings)
    files = sorted(directory.glob("model.*"), key=lambda p: p.suffix != ".ubj")
    booster = xgb.Booster()
    booster.load_model(str(files[0]))
    booster.set_param({"nthread": 1})
    run_id = version_run_id(CHURN_MODEL, version, settings=settings)
    calibrator = Calibrator.from_json(run_artifact(run_id, "calibrator.json", settings=settings).read_text())
    meta = json.loads(run_artifact(run_id, "features.json", settings=settings).read_text())
    tags = configure_mlflow(settings).get_model_version(CHURN_MODEL, version).tags
    best = meta.get("best_iteration")
    extras = {}
    for name in ("customer_base.json", "bands.json"):  # absent from versions trained before they existed
        try:
            extras[name] = json.loads(run_artifact(run_id, name, settings=settings).read_text())
        except Exception:  # noqa: BLE001 - an older version: no derived features, fixed bands
            extras[name] = None
    base = extras["customer_base.json"]
    return LoadedChurnModel(str(version), booster, calibrator, list(meta["names"]), list(meta["refs"]),
                            None if best is None else int(best), tags.get("tenant_id"),
                            None if base is None else CustomerBase.from_dict(base),
                            {t: (float(b[0]), float(b[1])) for t, b in (extras["bands.json"] or {}).items()})


def evaluate_version_on_holdout(
    version: str, holdout_run_id: str, *, settings: Settings | None = None,
) -> HoldoutScores:
    """AUC overall and per tenant-size bucket of `version` on the holdout saved by `holdout_run_id`."""
    import numpy as np
    import pyarrow.parquet as pq

    model = load_churn_version(version, settings=settings)
    holdout = pq.read_table(run_artifact(holdout_run_id, "holdout.parquet", settings=settings))
    missing = [n for n in model.feature_names if n not in holdout.column_names]
    if missing:
        raise ModelTrainingError(f"version {version} needs features the holdout lacks: {missing[:5]}")
    probabilities = model.probabilities(as_float_matrix(holdout, model.feature_names))
    labels = holdout.column(LABEL).to_numpy()
    buckets = np.asarray(holdout.column("size_bucket").to_pylist())
    per_bucket = {b: auc_or_nan(labels[buckets == b], probabilities[buckets == b]) for b, _ in SIZE_BUCKETS}
    return HoldoutScores(auc_or_nan(labels, probabilities), {b: v for b, v in per_bucket.items() if v == v},
                         True, "auc")
