"""Privacy fixtures: a fresh home whose audit writers start and end empty (`reveal` audits)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from shironzi.audit.log import reset_audit_logs


@pytest.fixture
def pii_home(home: Path) -> Iterator[Path]:
    reset_audit_logs()
    yield home
    reset_audit_logs()
