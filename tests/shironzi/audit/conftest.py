"""Fixtures for the compliance tests: a fresh audit writer per test (fast flushes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shironzi.audit.log import reset_audit_logs


@pytest.fixture
def audit_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The `home` fixture plus an audit writer that is flushed and dropped after the test."""
    from shironzi.settings import get_settings

    monkeypatch.setenv("SHIRONZI_AUDIT_FLUSH_SECONDS", "0.2")
    get_settings.cache_clear()
    reset_audit_logs()
    yield home
    reset_audit_logs()
