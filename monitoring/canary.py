"""Canary analysis of a rollout's wave, in the manner of Spinnaker's Kayenta: the candidate against the baseline
on the wave's tenants, each figure judged against a threshold setting; any failure fails the wave.

- prediction shift: PSI of the candidate's churn probabilities against the baseline's on the same rows (the
  baseline's deciles as bins, `monitoring.drift.psi`);
- calibration on matured labels: Brier score and expected calibration error of both on the newest labelled
  window (the holdout of the baseline's training run: labels that have matured, rows of the wave's tenants);
- API error rate and p99 latency of the live route per served version (`shironzi_model_requests_total` and
  `shironzi_model_request_duration_seconds` from an API worker's `/metrics`, `release_metrics_url`).

    outcomes = advance_rollouts(ctx=admin)   # judge the waiting wave of every running rollout, pass or roll back
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from models.releases.rollout import Rollout, fail_wave, list_rollouts, pass_wave, wave_tenants
from monitoring.drift import _edges, _shares, psi
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import TenantContext

if TYPE_CHECKING:
    import numpy as np

CALIBRATION_BINS = 10
METRICS_TIMEOUT_SECONDS = 5.0


@dataclass
class CanaryAnalysis:
    """One wave's figures, the thresholds they were held to, and what failed."""

    rollout: str
    wave: int
    tenants: int
    rows: int
    figures: dict[str, float | None] = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures

    def as_dict(self) -> dict[str, Any]:
        return {"rollout": self.rollout, "wave": self.wave, "tenants": self.tenants, "rows": self.rows,
                "passed": self.passed, "figures": self.figures, "thresholds": self.thresholds,
                "failures": self.failures, "notes": self.notes}


def brier(probabilities: np.ndarray, labels: np.ndarray) -> float:
    import numpy as np

    return float(np.mean((probabilities - labels) ** 2))


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, *, bins: int = CALIBRATION_BINS) -> float:
    """Σ over equal-width probability bins of |mean predicted - observed rate| × the bin's share of rows."""
    import numpy as np

    index = np.minimum((probabilities * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = index == b
        if mask.any():
            total += abs(float(probabilities[mask].mean()) - float(labels[mask].mean())) * mask.mean()
    return float(total)


def score_shift(baseline: np.ndarray, candidate: np.ndarray) -> float:
    """PSI of the candidate's scores over the baseline's score bins."""
    edges = _edges(baseline, 10)
    return psi(_shares(baseline, edges), _shares(candidate, edges))


def _holdout_scores(rollout: Rollout, tenants: Sequence[str], settings: Settings) -> tuple[Any, Any, Any]:
    """(baseline probabilities, candidate probabilities, labels) on the matured rows of `tenants`."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from models.churn.train import LABEL, load_churn_version
    from models.common import as_float_matrix
    from models.tracking import run_artifact, version_run_id

    holdout = pq.read_table(run_artifact(version_run_id(rollout.model, rollout.baseline, settings=settings),
                                         "holdout.parquet", settings=settings))
    holdout = holdout.filter(pc.is_in(holdout.column("tenant_id"), value_set=pa.array(list(tenants), pa.string())))
    scored = []
    for version in (rollout.baseline, rollout.candidate):
        model = load_churn_version(version, settings=settings)
        scored.append(np.asarray(model.probabilities(as_float_matrix(holdout, model.feature_names)), dtype=np.float64))
    return scored[0], scored[1], holdout.column(LABEL).to_numpy().astype(np.float64)


def api_figures(text: str, model: str, versions: Sequence[str]) -> dict[str, dict[str, float]]:
    """Per served version: requests, error rate and p99 latency (upper bucket bound) from a `/metrics` page."""
    from prometheus_client.parser import text_string_to_metric_families

    counts: dict[str, dict[str, float]] = {v: {"ok": 0.0, "error": 0.0} for v in versions}
    buckets: dict[str, list[tuple[float, float]]] = {v: [] for v in versions}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if labels.get("model") != model or labels.get("version") not in counts:
                continue
            if sample.name == "shironzi_model_requests_total":
                counts[labels["version"]][labels["outcome"]] += sample.value
            elif sample.name == "shironzi_model_request_duration_seconds_bucket":
                buckets[labels["version"]].append((float(labels["le"]), sample.value))
    out: dict[str, dict[str, float]] = {}
    for version in versions:
        total = counts[version]["ok"] + counts[version]["error"]
        ranked = sorted(buckets[version])
        count = ranked[-1][1] if ranked else 0.0
        p99 = next((le for le, seen in ranked if seen >= 0.99 * count), math.inf) if count else math.nan
        out[version] = {"requests": total, "error_rate": counts[version]["error"] / total if total else math.nan,
                        "p99_seconds": p99}
    return out


def analyse_wave(rollout: Rollout, index: int, *, settings: Settings | None = None) -> CanaryAnalysis:
    """Compare candidate and baseline on wave `index`'s tenants against the release thresholds."""
    settings = settings or get_settings()
    tenants = wave_tenants(rollout, index, settings=settings)
    analysis = CanaryAnalysis(rollout.id, index, len(tenants), 0, thresholds={
        "psi": settings.release_max_psi, "brier_increase": settings.release_max_brier_increase,
        "ece_increase": settings.release_max_ece_increase,
        "error_rate_increase": settings.release_max_error_rate_increase,
        "latency_ratio": settings.release_max_latency_ratio})
    figures = analysis.figures
    if tenants:
        old, new, labels = _holdout_scores(rollout, tenants, settings)
        analysis.rows = int(labels.size)
    if analysis.rows:
        shift = figures["psi"] = round(score_shift(old, new), 6)
        figures.update(brier_baseline=round(brier(old, labels), 6), brier_candidate=round(brier(new, labels), 6),
                       ece_baseline=round(expected_calibration_error(old, labels), 6),
                       ece_candidate=round(expected_calibration_error(new, labels), 6))
        if shift > settings.release_max_psi:
            analysis.failures.append(f"prediction PSI {shift:.4f} > {settings.release_max_psi:g}")
        for metric, limit in (("brier", settings.release_max_brier_increase),
                              ("ece", settings.release_max_ece_increase)):
            worse = float(figures[f"{metric}_candidate"] or 0) - float(figures[f"{metric}_baseline"] or 0)
            if worse > limit:
                analysis.failures.append(f"{metric} worse by {worse:.4f} > {limit:g} on matured labels")
    else:
        analysis.notes.append("no matured labels for the wave's tenants: shift and calibration not judged")
    _judge_api(analysis, rollout, settings)
    return analysis


def _judge_api(analysis: CanaryAnalysis, rollout: Rollout, settings: Settings) -> None:
    if not settings.release_metrics_url:
        analysis.notes.append("no release_metrics_url: API error rate and latency not judged")
        return
    try:
        import httpx

        text = httpx.get(settings.release_metrics_url, timeout=METRICS_TIMEOUT_SECONDS).raise_for_status().text
        found = api_figures(text, rollout.model, [rollout.baseline, rollout.candidate])
    except Exception as exc:  # noqa: BLE001 - Kayenta's NODATA: the analysis cannot pass on missing figures
        analysis.failures.append(f"API metrics unreadable: {type(exc).__name__}: {exc}")
        return
    old, new = found[rollout.baseline], found[rollout.candidate]
    analysis.figures.update(
        requests_baseline=old["requests"], requests_candidate=new["requests"],
        error_rate_baseline=_finite(old["error_rate"]), error_rate_candidate=_finite(new["error_rate"]),
        p99_baseline=_finite(old["p99_seconds"]), p99_candidate=_finite(new["p99_seconds"]))
    if not new["requests"]:
        analysis.notes.append("the candidate served no live request yet: API figures not judged")
        return
    worse = new["error_rate"] - (old["error_rate"] if old["requests"] else 0.0)
    if worse > settings.release_max_error_rate_increase:
        analysis.failures.append(f"API error rate worse by {worse:.4f} > {settings.release_max_error_rate_increase:g}")
    if old["requests"] and math.isfinite(new["p99_seconds"]) and math.isfinite(old["p99_seconds"]):
        ratio = new["p99_seconds"] / max(old["p99_seconds"], 1e-9)
        analysis.figures["latency_ratio"] = round(ratio, 4)
        if ratio > settings.release_max_latency_ratio:
            analysis.failures.append(f"API p99 latency ×{ratio:.2f} > ×{settings.release_max_latency_ratio:g}")


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


@dataclass(frozen=True)
class WaveOutcome:
    rollout: str
    wave: int | None
    outcome: str  # passed, completed, rolled_back, soaking, paused
    analysis: dict[str, Any] | None = None


def advance_rollouts(
    *, ctx: TenantContext, model: str | None = None, settings: Settings | None = None,
    now: datetime | None = None,
) -> list[WaveOutcome]:
    """Judge the waiting wave of every running rollout (once its soak time is over): pass it on, or roll the
    rollout back. One step per rollout per call."""
    from shironzi.tenancy.events import utcnow

    settings = settings or get_settings()
    now = now or utcnow()
    outcomes: list[WaveOutcome] = []
    for rollout in list_rollouts(model=model, limit=100, settings=settings):
        if rollout.status != "running" or rollout.current_wave is None:
            continue
        index = rollout.current_wave
        started = datetime.fromisoformat(rollout.waves[index]["started_at"])
        if (now - started).total_seconds() < settings.release_wave_soak_seconds:
            outcomes.append(WaveOutcome(rollout.id, index, "soaking"))
            continue
        with stage("releases:analyse", rollout=rollout.id, wave=index) as summary:
            started_at = time.perf_counter()
            analysis = analyse_wave(rollout, index, settings=settings)
            summary.rows = analysis.rows
            summary.extra.update(passed=analysis.passed, tenants=analysis.tenants,
                                 analysis_seconds=round(time.perf_counter() - started_at, 3))
        figures = analysis.as_dict()
        if analysis.passed:
            after = pass_wave(rollout.id, index, figures, ctx=ctx, settings=settings)
            outcomes.append(WaveOutcome(rollout.id, index, "completed" if after.status == "completed" else "passed",
                                        figures))
        else:
            fail_wave(rollout.id, index, figures, ctx=ctx, settings=settings)
            outcomes.append(WaveOutcome(rollout.id, index, "rolled_back", figures))
    return outcomes


def figures_line(figures: Mapping[str, Any]) -> str:
    """The analysis figures as one readable line (CLI, dashboard)."""
    return ", ".join(f"{k}={v}" for k, v in figures.items() if v is not None)
