"""One seeded SHIRONZI_HOME for the whole dashboard test package (seeding trains nothing but still costs
seconds: registry migrations, Delta writes, an erasure and MLflow's store)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from shironzi.settings import get_settings
from tests.apps._fixtures import SeededLake, seed_lake

RESET_VARS = ("SHIRONZI_DATABASE_URL", "SHIRONZI_LAKE_URI", "SHIRONZI_KAFKA_BOOTSTRAP", "SHIRONZI_SPARK_REMOTE",
              "SHIRONZI_ONLINE_STORE_URL", "SHIRONZI_REDIS_URL", "SHIRONZI_SECRETS_URL", "MLFLOW_TRACKING_URI")


@pytest.fixture(scope="package")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeededLake]:
    from shironzi.audit.log import reset_audit_logs
    from shironzi.tenancy.registry import reset_registries

    home = tmp_path_factory.mktemp("dash") / "home"
    home.mkdir()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SHIRONZI_HOME", str(home))
        for var in RESET_VARS:
            patch.delenv(var, raising=False)
        get_settings.cache_clear()
        try:
            yield seed_lake(home)
        finally:
            reset_audit_logs()
            reset_registries()
    get_settings.cache_clear()
