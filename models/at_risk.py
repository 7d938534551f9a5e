"""`at_risk` notifications after a scoring run: the customers whose churn score crossed their tenant's
`churn_prediction.at_risk_threshold` (from below it, or scored for the first time) since their last score.

Only tenants subscribed to `at_risk` (notifications module, a webhook URL, the event type) cost any I/O:
one read of their previous scores per lake group, one registry query for the thresholds, one delivery batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import TYPE_CHECKING, Any

from shironzi.lake import read_polars, table_exists
from shironzi.settings import Settings
from shironzi.tenancy import get_registry
from shironzi.tenancy.module_settings import ChurnPredictionSettings
from shironzi.webhooks.notify import Notification, subscriptions

if TYPE_CHECKING:
    import pyarrow as pa

MAX_CUSTOMERS_PER_EVENT = 1000


def at_risk_subscribers(tenant_ids: Sequence[str], settings: Settings) -> dict[str, float]:
    """Subscribed tenant -> its at-risk threshold (empty when nobody listens: the caller skips the rest)."""
    subscribed = [tid for tid, s in subscriptions(set(tenant_ids), settings=settings).items()
                  if "at_risk" in s.event_types]
    if not subscribed:
        return {}
    overrides = get_registry(settings).module_settings_of("churn_prediction", subscribed)
    return {tid: ChurnPredictionSettings.model_validate(overrides.get(tid, {})).at_risk_threshold
            for tid in subscribed}


def previous_scores(uri: str, tenant_ids: Sequence[str], before: date, settings: Settings) -> pa.Table | None:
    """Each customer's latest churn score before `before` (None when the table does not exist yet)."""
    import polars as pl

    options = settings.storage_options or None
    if not table_exists(uri, storage_options=options):
        return None
    frame = read_polars(uri, columns=["tenant_id", "customer_id", "score_date", "churn_probability"],
                        filters=[("tenant_id", "in", list(tenant_ids)), ("score_date", "<", before)],
                        storage_options=options)
    return frame.sort("score_date").group_by(["tenant_id", "customer_id"]).last().select(
        "tenant_id", "customer_id", pl.col("churn_probability").alias("previous_probability")).to_arrow()


def at_risk_crossings(scores: pa.Table, previous: pa.Table | None, thresholds: dict[str, float],
                      score_date: date) -> list[Notification]:
    """One `at_risk` notification per tenant with customers that crossed its threshold in `scores`."""
    import polars as pl

    frame: Any = pl.from_arrow(scores.select(["tenant_id", "customer_id", "churn_probability"]))
    frame = frame.filter(pl.col("tenant_id").is_in(list(thresholds)))
    if previous is not None and previous.num_rows:
        frame = frame.join(pl.from_arrow(previous), on=["tenant_id", "customer_id"], how="left")  # type: ignore[arg-type]
    else:
        frame = frame.with_columns(pl.lit(None, pl.Float64).alias("previous_probability"))
    limit = pl.col("tenant_id").replace_strict(thresholds, return_dtype=pl.Float64)
    crossed = frame.filter((pl.col("churn_probability") >= limit)
                           & (pl.col("previous_probability").is_null() | (pl.col("previous_probability") < limit)))
    events = []
    for (tenant_id,), rows in crossed.sort("churn_probability", descending=True).group_by(["tenant_id"],
                                                                                          maintain_order=True):
        customers = rows.head(MAX_CUSTOMERS_PER_EVENT).select(
            "customer_id", "churn_probability", "previous_probability").to_dicts()
        payload = {"score_date": score_date.isoformat(), "threshold": thresholds[str(tenant_id)],
                   "customers_crossed": rows.height, "customers": customers}
        events.append(Notification(str(tenant_id), "at_risk", payload, f"at_risk:{tenant_id}:{score_date}"))
    return events
