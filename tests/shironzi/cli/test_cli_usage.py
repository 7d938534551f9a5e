"""`shironzi usage collect` and `shironzi usage --tenant ... --json` on a real landed lake, and their bad input."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.shironzi.cli._fixtures import run_cli
from tests.shironzi.metering._fixtures import land_simulated_tenants


def test_collect_then_a_tenants_usage_as_json(home: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIRONZI_LOG_LEVEL", "WARNING")
    lake = land_simulated_tenants(tmp_path / "landing")
    today = datetime.now(UTC).date().isoformat()
    code, out, err = run_cli(capsys, "usage", "collect", "--day", today)
    assert code == 0, err
    assert "3 tenants" in out
    code, out, err = run_cli(capsys, "usage", "--tenant", "pool-a", "--from", today, "--to", today, "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["tenant_id"] == lake.pooled_a.id and report["plan"] == "standard"
    assert report["totals"]["events_landed"] == lake.landed[lake.pooled_a.id]
    assert [d["day"] for d in report["daily"]] == [today]
    month = report["months"][0]
    assert month["plan_price"] == 499.0
    assert month["margin"] == pytest.approx(month["plan_price"] - month["cost"])
    code, out, err = run_cli(capsys, "usage", "--tenant", "own-c", "--from", today, "--to", today)
    assert code == 0 and "own-c" in out and f"{lake.landed[lake.dedicated.id]:,}" in out


@pytest.mark.parametrize(("args", "message"), [
    (("usage", "--tenant", "nobody", "--from", "2026-05-01", "--to", "2026-05-02"), "nobody"),
    (("usage", "--tenant", "pool-a", "--from", "2026-05-02", "--to", "2026-05-01"), "before the start"),
    (("usage", "--tenant", "pool-a", "--from", "May 1"), "--from must be YYYY-MM-DD"),
    (("usage",), "--tenant is required"),
    (("usage", "collect", "--day", "yesterday"), "--day must be YYYY-MM-DD"),
])
def test_bad_input_is_one_error_line(home: Path, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                                     message: str) -> None:
    from tests.ingestion._fixtures import provision

    provision([("pool-a", "ecommerce", "standard")])
    code, out, err = run_cli(capsys, *args)
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and message in lines[0], err
    assert not (home / "lake" / "_platform" / "usage" / "_delta_log").exists()  # nothing written
