"""Feature and prediction drift: the population stability index (PSI) of a scoring run against the champion's
training distribution.

At training time `reference_bins` stores, with the model (the run artifact `drift_reference.json`), each
feature's decile edges and shares over the training rows, the score's over the holdout, and the features
ranked by importance. On every scoring run `drift_report` bins the scored rows on those edges and computes

    PSI = sum over bins of (actual - expected) * ln(actual / expected)

per feature and for the score (missing values are a bin of their own). PSI above `RETRAIN_PSI` (0.2, the usual
"significant shift" line) on one of the `TOP_FEATURES` most important features flags the model for
retraining. The figures go to the champion's MLflow run (`psi_<feature>`, read by the dashboard's Models
page, and `score_psi`) and to `_platform/monitoring/drift`; the flag is a tag on the champion's registered
version that the `train_models` DAG reads (see `models.scoring`).

No tenant appears here: the reference and the figures are over all the rows a model scores.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from shironzi.errors import InvalidInputError
from shironzi.lake import platform_uri
from shironzi.settings import Settings, get_settings

if TYPE_CHECKING:
    import numpy as np

ACTOR = "monitoring:drift"
REFERENCE_ARTIFACT = "drift_reference.json"
RETRAIN_PSI = 0.2
TOP_FEATURES = 10
BINS = 10
SCORE = "score"
_EPSILON = 1e-4  # an empty bin counts as this share, so PSI stays finite


def drift_uri(settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return platform_uri(settings.resolved_lake_uri, "monitoring", "drift")


def _edges(values: np.ndarray, bins: int) -> list[float]:
    """Inner quantile edges of the finite values (duplicates removed: a constant feature has none)."""
    import numpy as np

    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return []
    inner = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    return [float(e) for e in np.unique(inner)]


def _shares(values: np.ndarray, edges: Sequence[float]) -> list[float]:
    """Shares of the values per bin: len(edges) + 1 value bins, then the missing (NaN) bin."""
    import numpy as np

    values = np.asarray(values, dtype=np.float64)
    missing = ~np.isfinite(values)
    index = np.searchsorted(np.asarray(edges, dtype=np.float64), values[~missing], side="right")
    counts = np.bincount(index, minlength=len(edges) + 1).astype(np.float64)
    counts = np.append(counts, float(missing.sum()))
    return (counts / max(values.size, 1)).tolist()


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """The population stability index of two share vectors over the same bins."""
    import numpy as np

    e = np.clip(np.asarray(expected, dtype=np.float64), _EPSILON, None)
    a = np.clip(np.asarray(actual, dtype=np.float64), _EPSILON, None)
    if e.shape != a.shape:
        raise InvalidInputError(f"PSI needs the same bins: {e.size} expected shares, {a.size} actual")
    return float(np.sum((a - e) * np.log(a / e)))


def reference_bins(
    matrix: np.ndarray, feature_names: Sequence[str], scores: np.ndarray, importance: Mapping[str, float],
    *, bins: int = BINS,
) -> dict[str, Any]:
    """The training distribution to store with a model: per feature (a column of `matrix`) and for the score,
    the bin edges and shares; the features ranked by importance (most important first)."""
    if matrix.ndim != 2 or matrix.shape[1] != len(feature_names):
        raise InvalidInputError(f"the matrix has {matrix.shape[-1]} columns for {len(feature_names)} features")
    features = {}
    for i, name in enumerate(feature_names):
        edges = _edges(matrix[:, i], bins)
        features[name] = {"edges": edges, "shares": _shares(matrix[:, i], edges)}
    score_edges = _edges(scores, bins)
    ranked = sorted(feature_names, key=lambda n: (-float(importance.get(n, 0.0)), n))
    return {"bins": bins, "rows": int(matrix.shape[0]), "features": features,
            SCORE: {"edges": score_edges, "shares": _shares(scores, score_edges)}, "ranked_features": ranked}


@dataclass
class DriftReport:
    """PSI per feature and for the score; the top features whose PSI passed the retrain line."""

    feature_psi: dict[str, float]
    score_psi: float
    top_features: list[str]
    rows: int
    flagged: list[str] = field(default_factory=list)

    @property
    def retrain(self) -> bool:
        return bool(self.flagged)

    def metrics(self) -> dict[str, float]:
        """The MLflow metrics: `psi_<feature>` (the dashboard's drift panel) and `score_psi`."""
        return {**{f"psi_{name}": value for name, value in self.feature_psi.items()}, "score_psi": self.score_psi}


def drift_report(
    reference: Mapping[str, Any], matrix: np.ndarray, feature_names: Sequence[str], scores: np.ndarray,
    *, threshold: float = RETRAIN_PSI, top: int = TOP_FEATURES,
) -> DriftReport:
    """PSI of the scored rows (`matrix` columns named `feature_names`, and their `scores`) against `reference`."""
    known = reference.get("features", {})
    feature_psi = {}
    for i, name in enumerate(feature_names):
        if name in known:
            feature_psi[name] = psi(known[name]["shares"], _shares(matrix[:, i], known[name]["edges"]))
    score_ref = reference[SCORE]
    score_psi = psi(score_ref["shares"], _shares(scores, score_ref["edges"]))
    top_features = [n for n in reference.get("ranked_features", []) if n in feature_psi][:top]
    flagged = [n for n in top_features if feature_psi[n] > threshold]
    return DriftReport(feature_psi, score_psi, top_features, int(matrix.shape[0]), flagged)


def write_drift(
    report: DriftReport, *, model_name: str, model_version: str, run_id: str, score_date: date,
    settings: Settings | None = None,
) -> int:
    """Append one row per feature (and one for the score) to `_platform/monitoring/drift`; returns the version."""
    import pyarrow as pa

    from shironzi.audit import record_table_write
    from shironzi.lake import append

    settings = settings or get_settings()
    names = [*report.feature_psi, SCORE]
    values = [*report.feature_psi.values(), report.score_psi]
    n = len(names)
    table = pa.table({
        "checked_at": pa.array([datetime.now(UTC)] * n, pa.timestamp("us", tz="UTC")),
        "score_date": pa.array([score_date] * n, pa.date32()),
        "model_name": [model_name] * n, "model_version": [str(model_version)] * n, "run_id": [run_id] * n,
        "feature": names, "psi": pa.array(values, pa.float64()),
        "top_feature": [name in report.top_features for name in names],
        "retrain": [report.retrain] * n, "rows": pa.array([report.rows] * n, pa.int64()),
    })
    uri = drift_uri(settings)
    commit = append(uri, table, storage_options=settings.storage_options or None)
    record_table_write(ACTOR, uri, commit.version, n, operation="drift", models=[(model_name, model_version)])
    return commit.version
