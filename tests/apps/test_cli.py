"""`shironzi serve dashboard`: its Streamlit command line, the pinned settings, a busy port refused with
one clear error, and `shironzi demo` printing the dashboard command."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from apps.cli import APP, dashboard_environment, serve_dashboard, streamlit_command
from shironzi.errors import InvalidInputError


def test_streamlit_command_runs_the_app_headless() -> None:
    command = streamlit_command(host="0.0.0.0", port=9123, headless=True)
    assert command[1:5] == ["-m", "apps.warm_start", "run", str(APP)] and Path(command[4]).is_file()
    pairs = dict(zip(command[5::2], command[6::2], strict=True))
    assert pairs["--server.port"] == "9123" and pairs["--server.address"] == "0.0.0.0"
    assert pairs["--server.headless"] == "true" and pairs["--browser.gatherUsageStats"] == "false"


def test_environment_pins_the_resolved_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIRONZI_LAKE_URI", str(home / "elsewhere"))
    from shironzi.settings import get_settings

    get_settings.cache_clear()
    env = dashboard_environment()
    assert env["SHIRONZI_HOME"] == str(home.resolve())
    assert env["SHIRONZI_LAKE_URI"] == str(home / "elsewhere")


def test_a_busy_port_is_refused(home: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(InvalidInputError, match=f"cannot listen on 127.0.0.1:{port}"):
            serve_dashboard(host="127.0.0.1", port=port, headless=True)


def test_demo_prints_the_dashboard_command(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from orchestration.demo import run_demo

    assert run_demo(only=["no such stage"]) == []
    out = capsys.readouterr().out.replace("\n", "")  # rich wraps lines at 140 columns, at a space
    assert "shironzi serve dashboard --port 8501" in out and str(home.resolve()) in out
