"""The serving scorer's direct libxgboost calls give the public xgboost API's numbers bit for bit, and the
predictor's probabilities and reasons are still the booster's calibrated `inplace_predict` and its
per-feature `pred_contribs` (the online path cannot drift from batch scoring or from the explanation)."""

from __future__ import annotations

import pytest

from tests.models._fixtures import TrainedLake

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _rows(n_features: int, count: int = 64) -> object:
    import numpy as np

    rng = np.random.default_rng(7)
    x = (rng.gamma(1.5, 20.0, size=(count, n_features)) - 5.0).astype(np.float32)
    x[rng.random(x.shape) < 0.3] = np.nan  # missing features take XGBoost's default branches
    x[0] = np.nan
    return x


def test_native_calls_match_the_public_api_exactly(lake: TrainedLake) -> None:
    import numpy as np
    import xgboost as xgb

    from models.inference import load_churn_predictor

    predictor = load_churn_predictor()
    model = predictor.model_for("nobody")
    scorer = predictor._loaded.scorers[model.version]
    assert scorer.native is not None, "the native path should bind on the pinned xgboost"
    x = _rows(len(model.feature_names))
    limit = scorer.iteration_range
    for rows in (x[:1], x):  # one row (the API) and a batch (batch scoring)
        assert np.array_equal(scorer.native.values(rows), model.booster.inplace_predict(rows, iteration_range=limit),
                              equal_nan=True)
        expected = model.booster.predict(xgb.DMatrix(rows, feature_names=model.feature_names, nthread=1),
                                         pred_contribs=True, iteration_range=limit)
        assert np.array_equal(scorer.native.contributions(rows), expected, equal_nan=True)
    # Inputs the native path does not take (float64 Fortran order) go through the public API, same numbers.
    wide = np.asfortranarray(x.astype(np.float64))
    assert np.array_equal(scorer.native.values(wide), model.booster.inplace_predict(wide, iteration_range=limit))


def test_predictions_are_calibrated_inplace_predict_with_contribution_reasons(lake: TrainedLake) -> None:
    import numpy as np
    import xgboost as xgb

    from models.common import humanize_feature
    from models.inference import load_churn_predictor

    predictor = load_churn_predictor()
    model = predictor.model_for("nobody")
    x = _rows(len(model.feature_names), count=16)
    rows = [{n: (None if np.isnan(v) else float(v)) for n, v in zip(model.feature_names, r, strict=True)} for r in x]
    predictions = predictor.predict("nobody", rows)
    assert predictor.predict_matrix("nobody", x) == predictions
    limit = (0, model.best_iteration + 1) if model.best_iteration is not None else (0, 0)
    raw = np.asarray(model.booster.inplace_predict(x, iteration_range=limit), dtype=np.float64)
    expected = model.calibrator.apply(raw)
    contribs = model.booster.predict(xgb.DMatrix(x, feature_names=model.feature_names, nthread=1),
                                     pred_contribs=True, iteration_range=limit)
    for prediction, p, row in zip(predictions, expected, contribs, strict=True):
        assert prediction.probability == round(float(p), 6)
        order = np.argsort(-np.abs(row[:-1]), kind="stable")[:3]
        want = [(model.feature_names[i], round(float(row[i]), 4)) for i in order if row[i] != 0.0]
        assert [(r["feature"], r["contribution"]) for r in prediction.reasons] == want
        assert all(r["label"] == humanize_feature(r["feature"]) for r in prediction.reasons)
