"""`shironzi monitor status`: stage figures from the monitor process, open alerts only, today's anomalous tenants
only; "no alerts" while the tables do not exist; exit 1 when something needs a look."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest

from monitoring.status import platform_health
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from tests.monitoring._fixtures import running_monitor, write_platform_health_tables

TODAY = dt.datetime.now(dt.UTC).date()


def _status(home: Path, **env: str) -> subprocess.CompletedProcess[str]:
    cli = Path(sys.executable).with_name("shironzi")
    return subprocess.run([str(cli), "monitor", "status"], env={**os.environ, "SHIRONZI_HOME": str(home),
                                                                "COLUMNS": "200", **env},
                          capture_output=True, text=True, timeout=120)


def test_status_of_a_new_platform_says_so_and_exits_0(home: Path) -> None:
    result = _status(home)
    assert result.returncode == 0, result.stderr
    assert "no monitor process configured" in result.stdout
    assert "no open alerts" in result.stdout and "no tenant has an anomaly today" in result.stdout


def test_status_shows_stages_open_alerts_and_todays_anomalous_tenants(
    home: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_platform_health_tables(settings, today=TODAY, tenants=("t_anomalous", "t_yesterday"))
    with running_monitor(settings) as (url, monitor):
        monkeypatch.setenv("SHIRONZI_MONITOR_URL", url)
        get_settings.cache_clear()
        with stage("status_test_stage") as summary:  # pushed to the monitor by the stage observer
            summary.rows = 1
        with pytest.raises(RuntimeError), stage("status_failing_stage"):
            raise RuntimeError("boom")
        monitor.lake.scan()
        health = platform_health(get_settings(), today=TODAY)
        result = _status(home, SHIRONZI_MONITOR_URL=url)
    get_settings.cache_clear()
    stages = {s.stage: s for s in health.stages}
    assert stages["status_test_stage"].succeeded >= 1 and stages["status_test_stage"].last_success
    assert "status_failing_stage" in health.failed_stages
    assert health.alerts["fingerprint"].to_list() == ["fp-open"]
    assert health.anomalies.to_dicts() == [
        {"tenant_id": "t_anomalous", "kinds": "silent, volume_drop", "score": 9.25, "anomalies": 2}]
    assert {"alerts", "anomalies"} <= set(health.lake["table"].to_list())
    assert result.returncode == 1, result.stderr
    out = result.stdout
    assert "status_test_stage" in out and "fp-open" in out and "fp-done" not in out
    assert "t_anomalous" in out and "t_yesterday" not in out
