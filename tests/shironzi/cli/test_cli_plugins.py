"""Plugins: packages register commands through entry points; a dotted name joins a shared group."""

from __future__ import annotations

import subprocess
import sys


def test_serve_group_gathers_the_api_and_the_dashboard_from_two_packages() -> None:
    shown = subprocess.run(
        [sys.executable, "-c", "from shironzi.cli.main import run; run(['serve', '--help'])"],
        capture_output=True, text=True, timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "api" in shown.stdout and "dashboard" in shown.stdout
    assert "Run a server" in shown.stdout
    missing = subprocess.run(
        [sys.executable, "-c", "from shironzi.cli.main import run; run(['serve', 'nope'])"],
        capture_output=True, text=True, timeout=120,
    )
    assert missing.returncode != 0 and missing.stderr.count("\n") == 1 and "error:" in missing.stderr
