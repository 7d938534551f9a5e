"""Module-scoped SHIRONZI_HOME for the dbt tests: one real dbt build is shared by a module's tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shironzi.settings import Settings, get_settings

_ENV = (
    "SHIRONZI_DATABASE_URL",
    "SHIRONZI_LAKE_URI",
    "SHIRONZI_KAFKA_BOOTSTRAP",
    "SHIRONZI_SPARK_REMOTE",
    "SHIRONZI_ONLINE_STORE_URL",
    "SHIRONZI_REDIS_URL",
    "SHIRONZI_SECRETS_URL",
    "MLFLOW_TRACKING_URI",
)


@pytest.fixture(scope="module")
def module_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings whose home is a fresh directory for the whole test module."""
    root: Path = tmp_path_factory.mktemp("dbt_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SHIRONZI_HOME", str(root))
        for name in _ENV:
            patch.delenv(name, raising=False)
        get_settings.cache_clear()
        yield get_settings()
    get_settings.cache_clear()
