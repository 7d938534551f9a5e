"""Rollouts through release channels on the session's trained lake: a good version passes every wave and becomes
champion; a planted bad version (shifted scores) is rolled back by its canary analysis while the live API keeps
answering; bad input changes nothing."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.models._fixtures import TrainedLake, register_shifted_version
from tests.shironzi.cli._fixtures import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHURN = "shironzi-churn"


def _admin() -> Any:
    from shironzi.tenancy import TenantContext

    return TenantContext.admin(actor="test", purpose="release tests")


def _audit(action: str) -> list[dict[str, Any]]:
    import pyarrow.compute as pc

    from shironzi.audit.log import read_audit_events

    table = read_audit_events()
    return table.filter(pc.equal(table.column("action"), action)).to_pylist()


@pytest.fixture
def releases(lake: TrainedLake) -> Iterator[TrainedLake]:
    """The trained lake, put back afterwards: every tenant on `stable`, no active rollout, the same champion
    aliases (a completed rollout is undone by the champion history's rollback)."""
    from models.promotion import rollback
    from models.releases.rollout import list_rollouts, rollback_rollout
    from models.tracking import aliases, champion_aliases
    from shironzi.tenancy import get_registry

    champions = champion_aliases(aliases(CHURN))
    yield lake
    registry = get_registry()
    for tenant_id, _ in registry.tenant_channels(fresh=True).items():
        registry.set_channel(_admin(), tenant_id, "stable")
    for rollout in list_rollouts():
        if rollout.status in ("running", "paused"):
            rollback_rollout(rollout.id, ctx=_admin())
    if champion_aliases(aliases(CHURN)) != champions:
        rollback(CHURN)
    assert champion_aliases(aliases(CHURN)) == champions


def _churn_tenants(lake: TrainedLake) -> list[str]:
    return [t for t in lake.tenant_ids if t not in lake.churn_off]


def test_a_good_version_passes_every_wave_and_becomes_champion(
    releases: TrainedLake, capsys: pytest.CaptureFixture[str],
) -> None:
    from models.inference import load_churn_predictor
    from models.releases.rollout import find_rollout, start_rollout, wave_tenants
    from models.tracking import aliases
    from monitoring.canary import advance_rollouts
    from shironzi.settings import get_settings
    from shironzi.tenancy import get_registry

    settings = get_settings()
    registry = get_registry(settings)
    baseline = aliases(CHURN)["champion"]
    canary = _churn_tenants(releases)[0]
    registry.set_channel(_admin(), canary, "canary")
    good = register_shifted_version(settings, baseline, shift=0.0)
    passed_before = len(_audit("model_rollout_wave_passed"))
    stable = [t for t in releases.tenant_ids if t != canary]
    served_before = {t: load_churn_predictor().model_for(t).version for t in releases.tenant_ids}

    rollout = start_rollout("churn", good, ctx=_admin(), waves=["canary", "50", "100"])
    assert (rollout.baseline, rollout.candidate, rollout.current_wave) == (baseline, good, 0)
    assert wave_tenants(rollout, 0) == [canary]
    predictor = load_churn_predictor()
    assert predictor.model_for(canary).version == good  # the canary tenant is served the candidate at once
    assert {t: predictor.model_for(t).version for t in stable} == {t: served_before[t] for t in stable}

    seen: list[str] = []
    for _ in range(3):
        (outcome,) = advance_rollouts(ctx=_admin())
        seen.append(outcome.outcome)
        assert outcome.analysis is not None and outcome.analysis["passed"], outcome.analysis
    assert seen == ["passed", "passed", "completed"]
    done = find_rollout(rollout.id)
    assert done.status == "completed" and [w["state"] for w in done.waves] == ["passed"] * 3
    canary_figures = done.waves[0]["analysis"]["figures"]
    assert canary_figures["psi"] < 0.01 and canary_figures["brier_candidate"] == canary_figures["brier_baseline"]
    assert done.waves[2]["analysis"]["tenants"] + done.waves[1]["analysis"]["tenants"] == len(stable)
    assert aliases(CHURN)["champion"] == good
    assert len(_audit("model_rollout_wave_passed")) == passed_before + 3
    assert predictor.refresh_if_changed() and predictor.model_for(stable[0]).version == good
    shown = run_cli(capsys, "releases", "status", "churn", "--json")
    assert shown.code == 0 and json.loads(shown.stdout)["status"] == "completed"
    finished = run_cli(capsys, "releases", "pause", rollout.id)
    assert finished.code == 1 and "is completed: cannot pause it" in finished.stderr


def test_the_cli_starts_pauses_resumes_and_rolls_back(
    releases: TrainedLake, capsys: pytest.CaptureFixture[str],
) -> None:
    from models.releases.rollout import find_rollout
    from models.tracking import aliases
    from shironzi.settings import get_settings

    candidate = register_shifted_version(get_settings(), aliases(CHURN)["champion"], shift=0.0)
    started = run_cli(capsys, "releases", "start", "churn", candidate, "--waves", "canary,100")
    assert started.code == 0 and "canary" in started.stdout, started.stderr
    again = run_cli(capsys, "releases", "start", "churn", candidate)
    assert again.code == 1 and "already has an active rollout" in again.stderr
    for command, status in (("pause", "paused"), ("resume", "running"), ("rollback", "rolled_back")):
        assert run_cli(capsys, "releases", command, "churn").code == 0
        assert find_rollout("churn").status == status
    listed = json.loads(run_cli(capsys, "releases", "status", "--json").stdout)
    assert listed[0]["status"] == "rolled_back" and listed[0]["candidate"] == candidate


def _customers_with_features(client: Any, headers: dict[str, str], candidates: list[str]) -> str:
    for customer in candidates:
        if client.get(f"/v1/customers/{customer}/churn", headers=headers).status_code == 200:
            return customer
    raise AssertionError("no customer of the canary tenant has online features")


def test_a_bad_version_is_rolled_back_automatically_while_the_api_keeps_answering(
    releases: TrainedLake, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    from fastapi.testclient import TestClient

    from models.releases.rollout import find_rollout, start_rollout
    from models.tracking import aliases, run_artifact, version_run_id
    from monitoring.canary import advance_rollouts
    from serving.app import create_app
    from shironzi.settings import get_settings
    from shironzi.tenancy import get_registry

    monkeypatch.setenv("SHIRONZI_API_MODEL_REFRESH_SECONDS", "0.2")
    get_settings.cache_clear()
    settings = get_settings()
    registry = get_registry(settings)
    baseline = aliases(CHURN)["champion"]
    canary = _churn_tenants(releases)[0]
    registry.set_channel(_admin(), canary, "canary")
    _, key = registry.issue_key(_admin(), canary, scopes=["read"], label="rollout test")
    headers = {"Authorization": f"Bearer {key}"}
    bad = register_shifted_version(settings, baseline, shift=0.35)
    holdout = pq.read_table(run_artifact(version_run_id(CHURN, baseline), "holdout.parquet"))
    ids = holdout.filter(pc.equal(holdout.column("tenant_id"), canary)).column("customer_id").unique().to_pylist()
    rolled_back_before = len(_audit("model_rollout_rolled_back"))

    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        customer = _customers_with_features(client, headers, ids[:50])
        answers: list[tuple[int, str | None]] = []
        stop = threading.Event()

        def hammer() -> None:
            while not stop.is_set():
                response = client.get(f"/v1/customers/{customer}/churn", headers=headers)
                body = response.json() if response.status_code == 200 else {}
                answers.append((response.status_code, body.get("model_version")))

        def wait_for(version: str) -> None:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if answers and answers[-1][1] == version:
                    return
                time.sleep(0.05)
            raise AssertionError(f"the API never served version {version}: {answers[-3:]}")

        thread = threading.Thread(target=hammer, daemon=True)
        thread.start()
        try:
            wait_for(baseline)
            rollout = start_rollout("churn", bad, ctx=_admin())
            wait_for(bad)  # the canary tenant's live requests moved to the candidate
            (outcome,) = advance_rollouts(ctx=_admin())
            wait_for(baseline)  # ... and back after the automatic rollback
        finally:
            stop.set()
            thread.join(timeout=10)

    assert outcome.outcome == "rolled_back"
    assert answers and all(status == 200 for status, _ in answers), sorted({s for s, _ in answers})
    assert {v for _, v in answers} == {baseline, bad}
    done = find_rollout(rollout.id)
    assert done.status == "rolled_back" and done.waves[0]["state"] == "failed"
    assert all(w["state"] == "pending" for w in done.waves[1:])
    figures = done.waves[0]["analysis"]["figures"]
    assert figures["psi"] > settings.release_max_psi
    assert figures["brier_candidate"] > figures["brier_baseline"]
    assert any("PSI" in f for f in done.waves[0]["analysis"]["failures"])
    audited = _audit("model_rollout_rolled_back")
    assert len(audited) == rolled_back_before + 1
    assert '"psi"' in audited[-1]["details"] and rollout.id in audited[-1]["resource"]
    assert aliases(CHURN)["champion"] == baseline


def test_batch_scoring_follows_each_tenants_channel(releases: TrainedLake) -> None:
    from datetime import date, timedelta

    import pyarrow as pa

    from models.inference import load_churn_predictor
    from models.scoring import score_churn
    from shironzi.lake import read_arrow
    from shironzi.tenancy import get_registry

    pinned, other = _churn_tenants(releases)[:2]
    usual = load_churn_predictor().model_for(other).version
    get_registry().set_channel(_admin(), pinned, f"pinned:churn@{releases.crippled_version}")
    day = date.today() - timedelta(days=40)  # a day no other test scores
    result = score_churn(score_date=day, tenant_ids=[pinned, other])
    table = pa.concat_tables([read_arrow(u, filters=[("score_date", "=", day)]) for u in result.table_versions])
    served: dict[str, set[str]] = {}
    for row in table.select(["tenant_id", "model_version"]).to_pylist():
        served.setdefault(row["tenant_id"], set()).add(row["model_version"])
    assert served == {pinned: {releases.crippled_version}, other: {usual}}


def test_forecasts_follow_a_tenants_pinned_trend_version(releases: TrainedLake) -> None:
    from datetime import date, timedelta

    import pyarrow as pa

    from models.common import TREND_MODEL
    from models.scoring import write_forecasts
    from models.tracking import aliases, configure_mlflow
    from shironzi.lake import delete, read_arrow
    from shironzi.tenancy import get_registry

    client = configure_mlflow()
    champion = aliases(TREND_MODEL)["champion"]
    base = client.get_model_version(TREND_MODEL, champion)
    copy = client.create_model_version(TREND_MODEL, base.source, run_id=base.run_id).version  # a second release
    pinned, other = _churn_tenants(releases)[:2]  # paying plans: trend_forecast is on
    day = date.today() - timedelta(days=41)  # a day no other test forecasts
    written: list[str] = []
    try:
        get_registry().set_channel(_admin(), pinned, f"pinned:trend@{copy}")
        result = write_forecasts(tenant_ids=[pinned, other], generated_date=day)
        written = list(result.table_versions)
        table = pa.concat_tables([read_arrow(u, filters=[("generated_date", "=", day)]) for u in written])
        served: dict[str, set[str]] = {}
        for row in table.select(["tenant_id", "model_version"]).to_pylist():
            served.setdefault(row["tenant_id"], set()).add(row["model_version"])
        assert served == {pinned: {str(copy)}, other: {champion}}
    finally:  # the session's lake as it was: later tests count every forecast row
        for uri in written:
            delete(uri, [("generated_date", "=", day)])
        get_registry().set_channel(_admin(), pinned, "stable")
        client.delete_model_version(TREND_MODEL, copy)
