"""`shironzi models ...` and `shironzi score`: work end to end and fail with one readable line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.models._fixtures import TrainedLake

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SHIRONZI = str(Path(sys.executable).with_name("shironzi"))


def _error_lines(stderr: str) -> list[str]:
    """stderr minus the JSON stage-summary log lines: what a person reads."""
    return [line for line in stderr.strip().splitlines() if not line.startswith('{"ts"')]


def _run(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(SHIRONZI_HOME=str(home), COLUMNS="200")
    return subprocess.run([SHIRONZI, *args], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("args, code", [
    (["models", "promote", "no-such-model"], "invalid_input"),
    (["models", "train", "everything"], "invalid_input"),
    (["score", "--date", "2026-02-30"], "invalid_input"),
])
def test_bad_arguments_print_one_error_line(args: list[str], code: str, tmp_path: Path) -> None:
    result = _run(args, tmp_path)
    assert result.returncode != 0
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith(f"error: {code}:"), result.stderr


def test_nothing_registered_is_one_line_too(tmp_path: Path) -> None:
    result = _run(["models", "rollback", "trend"], tmp_path)
    assert result.returncode == 1
    lines = _error_lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: model_not_found:"), result.stderr
    assert not (tmp_path / "mlflow" / "mlflow.db").exists()  # a read-only question creates no registry


def test_list_and_score_on_the_trained_lake(lake: TrainedLake) -> None:
    import json

    listed = _run(["models", "list", "--json"], lake.home)
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    champion = [r for r in rows if r["name"] == "shironzi-churn" and "champion" in r["aliases"]]
    assert [r["version"] for r in champion] == [lake.churn.model_version]
    scored = _run(["score", "--tenant", lake.churn_off[0], "--no-forecasts"], lake.home)
    assert scored.returncode == 0, scored.stderr
    assert "0 rows for 0 tenants" in scored.stdout and "skipped: churn_prediction off" in scored.stdout
