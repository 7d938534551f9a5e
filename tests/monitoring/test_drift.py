"""PSI against a stored training distribution: zero for the same population, past 0.2 for a shifted one, and the
retrain flag only when a top-10 feature shifts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from monitoring.drift import RETRAIN_PSI, drift_report, psi, reference_bins


def _population(rng: np.random.Generator, n: int, features: int) -> np.ndarray:
    matrix = rng.normal(0.0, 1.0, size=(n, features)).astype(np.float32)
    matrix[rng.random(n) < 0.1, 0] = np.nan  # a feature with missing values
    return matrix


def test_psi_is_zero_for_the_same_shares_and_grows_with_the_shift() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert psi([0.5, 0.5], [0.6, 0.4]) == pytest.approx(0.1 * np.log(1.2 / 1.0) + 0.1 * np.log(1.25), rel=1e-3)
    from shironzi.errors import InvalidInputError

    with pytest.raises(InvalidInputError):
        psi([0.5, 0.5], [1.0])


def test_only_a_shift_of_a_top_ten_feature_flags_retraining() -> None:
    rng = np.random.default_rng(0)
    names = [f"f{i:02d}" for i in range(12)]
    importance = {name: float(100 - i) for i, name in enumerate(names)}  # f00 most important, f11 least
    train = _population(rng, 20_000, len(names))
    reference = json.loads(json.dumps(reference_bins(train, names, rng.random(20_000), importance)))  # as stored
    assert reference["ranked_features"][:2] == ["f00", "f01"] and len(reference["features"]["f00"]["shares"]) == 11

    same = drift_report(reference, _population(rng, 5_000, len(names)), names, rng.random(5_000))
    assert max(same.feature_psi.values()) < 0.02 and same.score_psi < 0.02 and not same.retrain

    low_ranked = _population(rng, 5_000, len(names))
    low_ranked[:, 11] += 2.0  # f11 is outside the top 10
    report = drift_report(reference, low_ranked, names, rng.random(5_000))
    assert report.feature_psi["f11"] > RETRAIN_PSI and not report.retrain

    moved = _population(rng, 5_000, len(names))
    moved[:, 3] += 1.0
    scores = rng.random(5_000) ** 3  # the predictions moved too
    report = drift_report(reference, moved, names, scores)
    assert report.retrain and report.flagged == ["f03"] and report.score_psi > RETRAIN_PSI
    assert report.metrics()["psi_f03"] == report.feature_psi["f03"] and "score_psi" in report.metrics()

    missing = _population(rng, 5_000, len(names))
    missing[:, 0] = np.nan  # a feature that stopped arriving: the missing bin takes every row
    assert drift_report(reference, missing, names, rng.random(5_000)).flagged == ["f00"]


def test_the_drift_alert_rule_reads_the_drift_rows_as_written(home) -> None:  # type: ignore[no-untyped-def]
    import datetime as dt

    from monitoring.drift import write_drift
    from shironzi.alerts.inputs import collect_inputs
    from shironzi.alerts.rules import DriftRule
    from shironzi.settings import get_settings

    report = drift_report_of({"f00": 0.05, "f01": 0.31}, score_psi=0.02)
    write_drift(report, model_name="churn", model_version="3", run_id="r1", score_date=dt.date(2026, 12, 1),
                settings=get_settings())
    firing = DriftRule("FeatureDrift").evaluate(collect_inputs(get_settings()))
    assert [(f.labels["model"], f.labels["feature"]) for f in firing] == [("churn", "f01")]
    assert firing[0].value == pytest.approx(0.31)


def drift_report_of(feature_psi: dict[str, float], *, score_psi: float):  # type: ignore[no-untyped-def]
    from monitoring.drift import DriftReport

    return DriftReport(feature_psi=feature_psi, score_psi=score_psi, top_features=list(feature_psi), rows=100)
