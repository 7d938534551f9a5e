"""One small lake for every model test, built once per session by the demo's own stages (simulate, land, dbt,
features), plus the models trained on it once: a planted crippled churn model promoted first, then the real
one that must replace it, and the trend model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shironzi.settings import get_settings
from tests.models._fixtures import TrainedLake, crippled_churn_version

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
