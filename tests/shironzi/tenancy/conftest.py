"""Registry fixtures: every test here runs against SQLite (under `home`) and a real PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shironzi.settings import get_settings
from shironzi.tenancy import Registry, TenantContext, get_registry, reset_registries


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest, home: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The registry database: SQLite under `home`, or a fresh database on the session's PostgreSQL."""
    if request.param == "postgres":
        monkeypatch.setenv("SHIRONZI_DATABASE_URL", request.getfixturevalue("pg_database_url"))
        get_settings.cache_clear()
    return str(request.param)


@pytest.fixture
def registry(backend: str) -> Iterator[Registry]:
    reset_registries()
    registry = get_registry()
    yield registry
    reset_registries()


@pytest.fixture
def admin() -> TenantContext:
    return TenantContext.admin(actor="ops@test", purpose="tests")
