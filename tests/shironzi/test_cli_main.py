"""The CLI's contract with users: --help everywhere, one readable error line, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SHIRONZI = str(Path(sys.executable).parent / "shironzi")


def _run(args: list[str], home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SHIRONZI_HOME": str(home)}
    return subprocess.run([SHIRONZI, *args], capture_output=True, text=True, env=env, timeout=120)


def test_help_lists_kernel_and_plugin_groups(tmp_path: Path) -> None:
    result = _run(["--help"], tmp_path)
    assert result.returncode == 0, result.stderr
    for group in ("tenants", "modules", "keys", "lake"):
        assert group in result.stdout


def test_unknown_command_is_one_line_and_nonzero(tmp_path: Path) -> None:
    result = _run(["no-such-command"], tmp_path)
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert "Traceback" not in result.stderr


def test_bad_option_value_is_one_line(tmp_path: Path) -> None:
    result = _run(["tenants", "list", "--limit", "not-a-number"], tmp_path)
    assert result.returncode != 0
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
