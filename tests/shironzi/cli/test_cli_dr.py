"""`shironzi dr`: replicate, status, failover and failback, with one error line for every refused request."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from shironzi.lake import append, table_uri
from shironzi.settings import get_settings
from tests.shironzi.cli._fixtures import CliResult
from tests.shironzi.dr._fixtures import events, provision, two_region_settings


def test_dr_commands(cli: Callable[..., CliResult], home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = two_region_settings(home, monkeypatch, log_level="WARNING")
    ids = provision(settings, ("shop", "eu-west", "ecommerce", "standard", "pooled"))
    bronze = table_uri(str(home / "lake-eu-west"), layer="bronze", table="events", region="eu-west")
    append(bronze, events([ids["shop"]], 10))
    append(bronze, events([ids["shop"]], 10, start=10))

    code, out, _ = cli("dr", "status", "--json")
    lag = json.loads(out)["eu-west"]["tables"]
    assert code == 0 and [(t["relative"], t["lag_versions"]) for t in lag] == [("eu-west/bronze/events", 3)]
    code, out, _ = cli("dr", "replicate", "--once")
    assert code == 0 and "eu-west (forward): 3 versions over 1 tables" in out
    assert json.loads(cli("dr", "status", "--json").stdout)["eu-west"]["tables"][0]["lag_versions"] == 0

    code, _, err = cli("dr", "failover", "--region", "mars")
    assert code == 1 and err.strip().splitlines() == [
        "error: invalid_input: unknown region 'mars'; regions are eu-west, us-east, ap-south"]
    code, out, _ = cli("dr", "failover", "--region", "eu-west")
    assert code == 0 and "eu-west failed over to us-east (epoch 1)" in out
    code, _, err = cli("dr", "failover", "--region", "eu-west")
    assert code == 1 and err.startswith("error: invalid_state: region 'eu-west' is failed_over")
    code, out, _ = cli("dr", "failback", "--region", "eu-west", "--json")
    assert code == 0 and json.loads(out)["epoch"] == 2
    assert get_settings().region_lakes  # the CLI ran on the two-region settings
