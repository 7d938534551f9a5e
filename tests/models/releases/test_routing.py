"""Routing through release channels: pinned first, then a live rollout wave, else the champion aliases; waves
expose the share of stable tenants they name; bad waves are refused."""

from __future__ import annotations

from typing import Any

import pytest

from models.releases.rollout import parse_waves
from models.releases.routing import BUCKETS, bucket, build_route_table, full_model_name, wave_bounds
from shironzi.errors import InvalidInputError

CHURN = "shironzi-churn"


def _rollout(states: list[str], *, status: str = "running", waves: list[str] | None = None) -> dict[str, Any]:
    planned = parse_waves(waves or ["canary", "10", "50", "100"])
    for wave, state in zip(planned, states, strict=False):
        wave["state"] = state
    return {"id": "ro_abc", "model": CHURN, "candidate": "9", "baseline": "4", "status": status, "waves": planned}


def test_pinned_beats_the_rollout_and_canary_tenants_go_first() -> None:
    channels = {"t_pin": "pinned:churn@3", "t_can": "canary", "t_trend": "pinned:trend@2"}
    table = build_route_table(CHURN, channels, [_rollout(["analysing"])])
    assert table.version_for("t_pin") == "3"
    assert table.version_for("t_can") == "9"
    assert table.version_for("t_other") is None  # the 10 % wave is not exposed yet: champion aliases
    assert table.version_for("t_trend") is None  # pinned to another model: stable for churn
    assert table.versions() == {"3", "9"}
    assert table.stable(["t_pin", "t_can", "t_trend", "t_x"]) == ["t_trend", "t_x"]
    without = build_route_table(CHURN, channels, [])
    assert without.version_for("t_can") is None and without.version_for("t_pin") == "3"
    assert without.key != table.key


def test_waves_expose_their_share_of_the_stable_tenants() -> None:
    tenants = [f"t_{i:05d}" for i in range(4000)]
    for states, share in ((["passed", "analysing"], 0.10), (["passed", "passed", "analysing"], 0.50),
                          (["passed", "passed", "passed", "analysing"], 1.0)):
        table = build_route_table(CHURN, {}, [_rollout(states)])
        exposed = sum(table.version_for(t) == "9" for t in tenants) / len(tenants)
        assert exposed == pytest.approx(share, abs=0.025)
    rolled_back = _rollout(["rolled_back", "failed"], status="rolled_back")
    assert build_route_table(CHURN, {}, []).rollout is None
    assert build_route_table(CHURN, {"t_can": "canary"}, [rolled_back]).version_for("t_can") is None
    paused = build_route_table(CHURN, {"t_can": "canary"}, [_rollout(["analysing"], status="paused")])
    assert paused.version_for("t_can") == "9"  # pausing holds the waves, it does not withdraw the candidate
    other_model = build_route_table("shironzi-trend", {"t_can": "canary"}, [_rollout(["analysing"])])
    assert other_model.version_for("t_can") is None


def test_buckets_are_deterministic_and_wave_bounds_follow_the_percentages() -> None:
    assert bucket("ro_1", "t_a") == bucket("ro_1", "t_a") and 0 <= bucket("ro_1", "t_a") < BUCKETS
    assert len({bucket(f"ro_{i}", "t_a") for i in range(50)}) > 40  # each rollout draws its waves afresh
    waves = parse_waves(["canary", "10", "50", "100"])
    assert [wave_bounds(waves, i) for i in (1, 2, 3)] == [(0, 1000), (1000, 5000), (5000, 10000)]


@pytest.mark.parametrize(("waves", "message"), [
    (["10", "5", "100"], "rise"), (["10", "canary", "100"], "canary wave can only come first"),
    (["10", "50"], "must reach 100"), (["ten", "100"], "neither"), (["0", "100"], "rise"), ([], "must reach 100"),
])
def test_bad_waves_are_refused(waves: list[str], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_waves(waves)


def test_model_names() -> None:
    assert full_model_name("churn") == CHURN and full_model_name(CHURN) == CHURN
    with pytest.raises(InvalidInputError, match="unknown model 'fraud'"):
        full_model_name("fraud")
