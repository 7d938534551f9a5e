"""The promotion gate and rollback: a planted crippled challenger is refused, rollback restores the previous
champion, and both are audit events."""

from __future__ import annotations

import pytest

from tests.models._fixtures import TrainedLake, crippled_churn_version

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CHURN = "shironzi-churn"


def _events(action: str) -> list[dict]:
    import pyarrow.compute as pc

    from shironzi.audit.log import read_audit_events

    table = read_audit_events()
    return table.filter(pc.equal(table.column("action"), action)).to_pylist()


def test_the_gate_refuses_a_crippled_challenger(lake: TrainedLake) -> None:
    from models.registry import promote_if_better
    from models.tracking import aliases, configure_mlflow
    from shironzi.settings import get_settings

    before = aliases(CHURN)
    assert before["champion"] == lake.churn.model_version
    refused_before = len(_events("model_promotion_refused"))
    bad = crippled_churn_version(get_settings(), seed=1)
    try:
        decision = promote_if_better(CHURN, margin=0.0)
        assert decision.promoted is False
        assert decision.challenger_version == bad and decision.champion_version == lake.churn.model_version
        assert "does not beat" in decision.reason
        assert decision.challenger_metrics["auc"] < decision.champion_metrics["auc"] - 0.1
        assert aliases(CHURN)["champion"] == lake.churn.model_version
        assert len(_events("model_promotion_refused")) == refused_before + 1
    finally:
        configure_mlflow().set_registered_model_alias(CHURN, "challenger", lake.churn.model_version)


def test_rollback_restores_the_previous_champion_and_is_audited(lake: TrainedLake) -> None:
    from models.promotion import rollback
    from models.registry import promote_if_better
    from models.tracking import aliases

    assert aliases(CHURN)["champion"] == lake.churn.model_version
    decision = rollback(CHURN)
    assert decision.champion_version == lake.crippled_version
    assert aliases(CHURN)["champion"] == lake.crippled_version
    [event] = [e for e in _events("model_rollback") if e["resource"] == f"model:{CHURN}"][-1:]
    assert event["is_admin"] and lake.crippled_version in (event["details"] or "")

    again = promote_if_better(CHURN)  # the real model beats the restored crippled one again
    assert again.promoted and aliases(CHURN)["champion"] == lake.churn.model_version
    assert _events("model_promotion")


def test_gate_checks_every_tenant_size_bucket() -> None:
    from models.promotion import HoldoutScores, _gate

    champion = HoldoutScores(0.80, {"small": 0.80, "large": 0.80}, True, "auc")
    better_everywhere = HoldoutScores(0.85, {"small": 0.84, "large": 0.86}, True, "auc")
    regresses_small = HoldoutScores(0.85, {"small": 0.70, "large": 0.90}, True, "auc")
    assert _gate(better_everywhere, champion, 0.01, 0.02)[0] is True
    promoted, reason = _gate(regresses_small, champion, 0.01, 0.02)
    assert promoted is False and "small" in reason
    assert _gate(HoldoutScores(0.805, {}, True, "auc"), champion, 0.01, 0.02)[0] is False
    # Lower is better for sMAPE.
    assert _gate(HoldoutScores(30.0, {}, False, "smape"), HoldoutScores(35.0, {}, False, "smape"), 0.5, 1)[0]
