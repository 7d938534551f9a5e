"""Compare the churn model with the simulator's oracle on the same customers and dates.

The synthetic generator knows each customer's true 30-day churn probability (`churn_snapshots` ground truth,
kept outside the lake). The oracle AUC ranks customers by it: the best any model could do. The model is scored
on the same rows from point-in-time features (events dated on or before each snapshot), restricted to the
churn model's holdout window, and both AUCs are measured against the true outcome.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from feature_store.retrieval import ENTITY_TIMESTAMP, get_training_set
from models.churn.base_features import add_customer_base_features
from models.common import as_float_matrix, auc_or_nan, group_rows
from models.inference import load_churn_predictor
from models.tracking import configure_mlflow
from shironzi.privacy.phi import stored_customer_ids
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import get_registry


@dataclass(frozen=True)
class OracleComparison:
    model_auc: float
    oracle_auc: float
    rows: int
    positives: int
    first_date: date | None
    last_date: date | None

    @property
    def gap(self) -> float:
        return self.oracle_auc - self.model_auc


def holdout_window(run_id: str, *, settings: Settings | None = None) -> tuple[date, date]:
    """The (first, last) label snapshot dates of a churn run's holdout."""
    params = configure_mlflow(settings).get_run(run_id).data.params
    first, last = params["holdout_dates"].split("..")
    return date.fromisoformat(first), date.fromisoformat(last)


def compare_with_oracle(
    snapshots: Any, *, run_id: str, tenant_ids: Sequence[str] | None = None, settings: Settings | None = None,
) -> OracleComparison:
    """Model AUC vs oracle AUC on the ground-truth snapshots (a polars frame) inside the run's holdout window."""
    import numpy as np
    import polars as pl
    import pyarrow as pa

    settings = settings or get_settings()
    first, last = holdout_window(run_id, settings=settings)
    rows = snapshots.filter(pl.col("horizon_complete") & pl.col("snapshot_date").is_between(first - timedelta(days=6),
                                                                                             last))
    if tenant_ids is not None:
        rows = rows.filter(pl.col("tenant_id").is_in(list(tenant_ids)))
    if rows.is_empty():
        return OracleComparison(float("nan"), float("nan"), 0, 0, first, last)
    # The ground truth names customers in clear; the lake holds a healthcare patient's id PHI-protected.
    industries = {t: info.industry for t, info in get_registry(settings).tenant_directory().items()}
    stored = stored_customer_ids(rows["tenant_id"].to_list(), rows["customer_id"].to_list(), industries=industries)
    rows = rows.with_columns(pl.Series("customer_id", stored, dtype=pl.String))
    predictor = load_churn_predictor(settings=settings)
    entities = pa.table({"tenant_id": rows["tenant_id"].to_arrow(), "customer_id": rows["customer_id"].to_arrow(),
                         ENTITY_TIMESTAMP: rows["snapshot_date"].to_arrow()})
    features = get_training_set(entities, predictor.feature_names, settings=settings)
    base = predictor.model_for(str(rows["tenant_id"][0])).customer_base
    features, _ = add_customer_base_features(features, date_column=ENTITY_TIMESTAMP,
                                             horizons=base.horizons if base else None)
    scores = np.zeros(rows.height)
    for tenant_id, index in group_rows(rows["tenant_id"].to_list()).items():
        model = predictor.model_for(str(tenant_id))
        x = as_float_matrix(features.take(pa.array(index)), model.feature_names)
        scores[index] = model.probabilities(x)
    truth = rows["churned_within_30d"].to_numpy().astype(int)
    oracle = rows["churn_probability_30d"].to_numpy()
    return OracleComparison(auc_or_nan(truth, scores), auc_or_nan(truth, oracle), rows.height, int(truth.sum()),
                            rows["snapshot_date"].min(), rows["snapshot_date"].max())
