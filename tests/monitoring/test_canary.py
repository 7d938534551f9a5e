"""The canary analysis's figures against values computed by hand: PSI of a shifted score distribution, Brier and
expected calibration error, and the per-version error rate and p99 read back from the API's own metrics page."""

from __future__ import annotations

import math

import numpy as np
import pytest

from monitoring.canary import api_figures, brier, expected_calibration_error, score_shift
from serving.telemetry import ApiMetrics


def test_shift_and_calibration_figures() -> None:
    rng = np.random.default_rng(0)
    scores = rng.beta(2, 8, 20_000)
    assert score_shift(scores, scores) == pytest.approx(0.0, abs=1e-9)
    assert score_shift(scores, np.clip(scores + 0.3, 0, 1)) > 1.0  # a planted shift is far past the 0.2 line
    labels = (rng.random(scores.size) < scores).astype(float)  # calibrated by construction
    assert expected_calibration_error(scores, labels) < 0.02
    shifted = np.clip(scores + 0.3, 0, 1)
    assert expected_calibration_error(shifted, labels) == pytest.approx(float(np.mean(shifted - labels)), abs=0.02)
    assert brier(np.array([1.0, 0.0, 0.5]), np.array([1.0, 1.0, 0.0])) == pytest.approx((0 + 1 + 0.25) / 3)


def test_api_figures_per_served_version_from_the_metrics_page() -> None:
    metrics = ApiMetrics()
    for _ in range(99):
        metrics.model_requests.labels(model="shironzi-churn", version="4", outcome="ok").inc()
        metrics.model_latency.labels(model="shironzi-churn", version="4").observe(0.004)
    metrics.model_requests.labels(model="shironzi-churn", version="4", outcome="error").inc()
    for _ in range(10):
        metrics.model_requests.labels(model="shironzi-churn", version="5", outcome="ok").inc()
        metrics.model_latency.labels(model="shironzi-churn", version="5").observe(0.2)
    found = api_figures(metrics.exposition().decode(), "shironzi-churn", ["4", "5", "6"])
    assert found["4"]["requests"] == 100 and found["4"]["error_rate"] == pytest.approx(0.01)
    assert found["5"]["error_rate"] == 0.0 and found["5"]["p99_seconds"] > found["4"]["p99_seconds"]
    assert found["4"]["p99_seconds"] >= 0.004 and found["5"]["p99_seconds"] >= 0.2
    assert found["6"]["requests"] == 0 and math.isnan(found["6"]["error_rate"])
