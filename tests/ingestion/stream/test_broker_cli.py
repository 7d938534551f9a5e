"""`shironzi broker ...` run as a real subprocess of the installed console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._services import free_port
from tests.ingestion.stream._fixtures import require_broker_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _shironzi(home: Path, repo_root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIRONZI_")}
    env["SHIRONZI_HOME"] = str(home)
    env["SHIRONZI_LOG_FORMAT"] = "text"
    # the editable install maps only `shironzi`; the plugin packages are found from the checkout
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(repo_root), env.get("PYTHONPATH")]))
    script = Path(sys.executable).with_name("shironzi")
    return subprocess.run([str(script), "broker", *args], env=env, capture_output=True, text=True, timeout=60)


def test_broker_cli_start_status_topics_stop(tmp_path: Path, repo_root: Path) -> None:
    require_broker_binary()
    home = tmp_path / "home"
    port = free_port()

    stopped = _shironzi(home, repo_root, "status")
    assert stopped.returncode == 0, stopped.stderr
    assert "not running" in stopped.stdout

    no_broker = _shironzi(home, repo_root, "topics", "list")
    assert no_broker.returncode == 1
    assert "shironzi broker start" in no_broker.stderr and "Traceback" not in no_broker.stderr

    started = _shironzi(home, repo_root, "start", "--port", str(port))
    try:
        assert started.returncode == 0, started.stderr
        assert f"127.0.0.1:{port}" in started.stdout and "started" in started.stdout

        again = _shironzi(home, repo_root, "start")
        assert again.returncode == 0 and "already running" in again.stdout

        status = _shironzi(home, repo_root, "status")
        assert status.returncode == 0, status.stderr
        pid = (home / "broker" / "broker.pid").read_text().strip()
        for expected in ("running", pid, f"127.0.0.1:{port}", "uptime"):
            assert expected in status.stdout

        created = _shironzi(home, repo_root, "topics", "create", "events", "--partitions", "3")
        assert created.returncode == 0 and "created" in created.stdout, created.stderr
        listed = _shironzi(home, repo_root, "topics", "list")
        assert listed.returncode == 0
        rows = [line.replace("│", " ").split() for line in listed.stdout.splitlines()]
        assert ["events", "3"] in rows, listed.stdout
    finally:
        stop = _shironzi(home, repo_root, "stop")
    assert stop.returncode == 0 and "broker stopped" in stop.stdout

    after = _shironzi(home, repo_root, "status")
    assert after.returncode == 0 and "not running" in after.stdout
