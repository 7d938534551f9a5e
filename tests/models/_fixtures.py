"""Helpers of the model tests: the session's trained lake, and a deliberately bad churn challenger."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shironzi.settings import Settings


@dataclass
class TrainedLake:
    home: Path
    tenant_ids: list[str]
    churn_off: list[str]  # demo tenants on the free plan: churn_prediction and trend_forecast off
    crippled_version: str
    churn: object  # TrainResult of the real churn model (the champion)
    trend: object  # TrainResult of the trend model (the champion)


def crippled_churn_version(settings: Settings, *, seed: int = 0) -> str:
    """Register a deliberately bad churn challenger: trained and calibrated on shuffled labels (the holdout it is
    judged on keeps the true labels)."""
    import numpy as np
    import pyarrow as pa

    from models.churn.train import LABEL, ChurnDataset, build_churn_dataset, fit_churn, log_and_register

    dataset = build_churn_dataset(settings=settings)
    labels = dataset.table.column(LABEL).to_numpy().copy()
    _, _, holdout_dates = dataset.split_dates()
    learning = ~np.isin(np.asarray(dataset.table.column("snapshot_date").to_pylist()), holdout_dates)
    shuffled = labels.copy()
    shuffled[learning] = np.random.default_rng(seed).permutation(labels[learning])
    table = dataset.table.set_column(dataset.table.column_names.index(LABEL), LABEL, pa.array(shuffled, pa.int8()))
    crippled = ChurnDataset(table, dataset.feature_names, dataset.feature_refs, dataset.inputs)
    fitted = fit_churn(crippled, seed=seed)
    result = log_and_register(crippled, fitted, settings=settings, register=True, seed=seed, run_name="crippled")
    assert result.model_version is not None
    return result.model_version


def register_shifted_version(settings: Settings, version: str, *, shift: float) -> str:
    """Register a copy of churn `version` whose calibrated scores are moved up by `shift` (a planted bad release:
    same trees, same features, shifted probabilities); shift 0 registers an equivalent good release."""
    import mlflow
    import numpy as np

    from models.churn.train import EXPERIMENT, _log_churn_model, load_churn_version
    from models.common import Calibrator
    from models.tracking import configure_mlflow, ensure_experiment

    base = load_churn_version(version, settings=settings)
    calibrator = Calibrator(base.calibrator.x, tuple(float(min(1.0, max(0.0, y + shift))) for y in base.calibrator.y))
    configure_mlflow(settings)
    with mlflow.start_run(experiment_id=ensure_experiment(EXPERIMENT, settings), run_name=f"shifted-{shift:g}"):
        registered = _log_churn_model(
            booster=base.booster, calibrator=calibrator, feature_names=base.feature_names,
            feature_refs=base.feature_refs, example=np.zeros((1, len(base.feature_names)), dtype=np.float32),
            register=True, tags={"planted_shift": str(shift)}, settings=settings, customer_base=base.customer_base,
            bands=base.bands)
    assert registered is not None
    return registered
