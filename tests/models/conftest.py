"""One small lake for every model test, built once per session by the demo's own stages (simulate, land, dbt,
features), plus the models trained on it once: a planted crippled churn model promoted first, then the real
one that must replace it, and the trend model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shironzi.settings import Settings, get_settings

LAKE_DAYS = 180
LAKE_CUSTOMERS = 2000
DEDICATED_MIN_ROWS = 3000  # low enough that the biggest demo tenant gets a dedicated candidate


def _point_env(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    monkeypatch.setenv("SHIRONZI_HOME", str(home))
    monkeypatch.setenv("SHIRONZI_MODEL_DEDICATED_MIN_ROWS", str(DEDICATED_MIN_ROWS))
    for var in ("SHIRONZI_DATABASE_URL", "SHIRONZI_LAKE_URI", "SHIRONZI_KAFKA_BOOTSTRAP", "SHIRONZI_SPARK_REMOTE",
                "SHIRONZI_ONLINE_STORE_URL", "SHIRONZI_REDIS_URL", "SHIRONZI_SECRETS_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()


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


@dataclass
class TrainedLake:
    home: Path
    tenant_ids: list[str]
    churn_off: list[str]  # demo tenants on the free plan: churn_prediction and trend_forecast off
    crippled_version: str
    churn: object  # TrainResult of the real churn model (the champion)
    trend: object  # TrainResult of the trend model (the champion)


@pytest.fixture(scope="session")
def trained_lake(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TrainedLake]:
    from models.churn import train_churn
    from models.registry import promote_if_better
    from models.trend import train_trend
    from orchestration.demo import DEMO_TENANTS, run_demo
    from shironzi.tenancy import get_registry

    home = tmp_path_factory.mktemp("models") / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as monkeypatch:
        _point_env(monkeypatch, home)
        run_demo(seed=5, days=LAKE_DAYS, customers=LAKE_CUSTOMERS,
                 only=["provision tenants", "simulate + land files", "dbt build", "features"])
        settings = get_settings()
        registry = get_registry(settings)
        tenants = [registry.get_tenant(spec.slug) for spec in DEMO_TENANTS]
        crippled = crippled_churn_version(settings)
        first = promote_if_better("shironzi-churn", settings=settings)
        assert first.promoted and first.champion_version == crippled
        churn = train_churn(settings=settings, seed=0)
        second = promote_if_better("shironzi-churn", settings=settings)
        assert second.promoted, second.reason
        trend = train_trend(settings=settings, seed=0)
        assert promote_if_better("shironzi-trend", settings=settings).promoted
        yield TrainedLake(home, [t.id for t in tenants], [t.id for t in tenants if t.plan == "free"], crippled,
                          churn, trend)
    get_settings.cache_clear()


@pytest.fixture
def lake(trained_lake: TrainedLake, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrainedLake]:
    """The session's trained lake with this test's environment pointing at it."""
    _point_env(monkeypatch, trained_lake.home)
    yield trained_lake
    get_settings.cache_clear()
