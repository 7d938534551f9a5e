"""`shironzi releases`: bad input gives one error line and a non-zero exit, and changes nothing (the successful
paths run on the trained lake in tests/models/releases/test_rollout.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from shironzi.settings import get_settings
from shironzi.tenancy import get_registry, reset_registries
from tests.shironzi.cli._fixtures import run_cli


@pytest.mark.parametrize(("args", "said"), [
    (["start", "churn", "3"], "has no version 3"),
    (["start", "fraud", "3"], "unknown model 'fraud'"),
    (["start", "churn", "3", "--waves", "50,10"], "rise"),
    (["status", "ro_0123456789abcdef"], "no rollout 'ro_0123456789abcdef'"),
    (["pause", "churn"], "has no rollout yet"),
    (["rollback", "trend"], "has no rollout yet"),
])
def test_bad_release_commands_give_one_error_line(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, args: list[str], said: str,
) -> None:
    monkeypatch.setenv("SHIRONZI_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()
    reset_registries()
    result = run_cli(capsys, "releases", *args)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert result.code == 1 and len(lines) == 1 and lines[0].startswith("error:") and said in lines[0], result.stderr
    assert get_registry().rollouts() == []
    reset_registries()
