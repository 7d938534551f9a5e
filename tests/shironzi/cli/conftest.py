"""CLI fixtures: the in-process runner against SQLite and PostgreSQL registries."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from shironzi.settings import get_settings
from shironzi.tenancy import reset_registries
from tests.shironzi.cli._fixtures import CliResult, run_cli


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def cli(
    request: pytest.FixtureRequest,
    home: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Iterator[Callable[..., CliResult]]:
    """Run `shironzi ...` in-process (fast); stage log lines are silenced so stderr holds only errors."""
    monkeypatch.setenv("SHIRONZI_LOG_LEVEL", "WARNING")
    if request.param == "postgres":
        monkeypatch.setenv("SHIRONZI_DATABASE_URL", request.getfixturevalue("pg_database_url"))
    get_settings.cache_clear()
    reset_registries()

    yield lambda *args: run_cli(capsys, *args)
    reset_registries()
