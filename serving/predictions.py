"""Churn predictions for the API: live (online features -> champion model) or the latest batch score.

Both paths read only the caller's tenant: online-store keys start with the tenant id, and lake reads filter
on `tenant_id`, so a customer id that exists in another tenant is simply not found here. A customer exists
only through a customer-keyed row: the tenant-level context features alone never make one.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime
from functools import lru_cache
from typing import Any

from feature_store.materialize import get_online_features
from feature_store.registry import get_feature_view, resolve_features
from models.bands import HIGH_FROM, MEDIUM_FROM, risk_band
from serving.model import CHURN_MODEL
from serving.services import ApiServices, TenantFacts
from shironzi.errors import (
    CustomerNotFoundError,
    ModelUnavailableError,
    NotFoundError,
    ServiceUnavailableError,
    ShironziError,
)
from shironzi.lake.delta import read_arrow, table_exists
from shironzi.lake.groups import LakeGroup

STORED_INTERVAL_LEVEL = 0.8  # the coverage of the interval the trend pipeline writes (models.trend.calibration)


@dataclass(frozen=True, slots=True)
class ChurnScore:
    customer_id: str
    probability: float
    risk_band: str
    reasons: list[dict[str, Any]]
    model_name: str
    model_version: str
    source: str
    feature_timestamp: datetime | None = None
    score_date: date | None = None

    def public(self) -> dict[str, Any]:
        return {
            "customer_id": self.customer_id,
            "churn_probability": self.probability,
            "risk_band": self.risk_band,
            "top_reasons": self.reasons,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "source": self.source,
            "feature_timestamp": self.feature_timestamp,
            "score_date": self.score_date,
        }


def _feature_key(ref: str) -> str:
    return ref.partition(":")[2] or ref


@lru_cache(maxsize=64)
def _feature_keys(refs: tuple[str, ...]) -> tuple[str, ...]:
    """The record keys of a model's feature refs (the same few lists every request)."""
    return tuple(_feature_key(r) for r in refs)


@lru_cache(maxsize=64)
def customer_level_names(refs: tuple[str, ...]) -> frozenset[str]:
    """The features among `refs` that are keyed by a customer (not by the tenant). Only these say that a
    customer exists: tenant-level context features are there for every id, made-up ones included."""

    return frozenset(
        name
        for view, names in resolve_features(list(refs)).items()
        if get_feature_view(view).entity.name != "tenant"
        for name in names
    )


def has_customer_row(record: dict[str, Any], customer_names: frozenset[str]) -> bool:
    """Whether an online-feature record holds a value of any customer-keyed feature."""
    return any(record.get(name) is not None for name in customer_names)


def live_scores(
    services: ApiServices, tenant: TenantFacts, customer_ids: Sequence[str]
) -> tuple[list[ChurnScore], list[str]]:
    """Score customers from their online features; returns (scores, ids with no features for this tenant)."""

    predictor = services.model.get()
    version = str(predictor.model_for(tenant.id).version)  # through the tenant's release channel
    started = time.perf_counter()
    try:
        scores, missing = _live_scores(services, predictor, tenant, customer_ids)
    except Exception:
        services.metrics.model_requests.labels(model=CHURN_MODEL, version=version, outcome="error").inc()
        raise
    services.metrics.model_requests.labels(model=CHURN_MODEL, version=version, outcome="ok").inc()
    services.metrics.model_latency.labels(model=CHURN_MODEL, version=version).observe(time.perf_counter() - started)
    return scores, missing


def _live_scores(
    services: ApiServices, predictor: Any, tenant: TenantFacts, customer_ids: Sequence[str]
) -> tuple[list[ChurnScore], list[str]]:
    refs = list(predictor.feature_names)
    names = _feature_keys(tuple(refs))
    customer_names = customer_level_names(tuple(refs))
    tracer = services.tracer
    with tracer.start_as_current_span("feature_lookup") as span:
        span.set_attribute("shironzi.tenant_id", tenant.id)
        span.set_attribute("shironzi.customers", len(customer_ids))
        records = get_online_features(tenant.id, list(customer_ids), refs, store=services.online_store)
    found, missing = [], []
    for record in records:
        if has_customer_row(record, customer_names):
            found.append((record["customer_id"], {name: record.get(name) for name in names}))
        else:
            missing.append(record["customer_id"])
    if not found:
        return [], missing
    with tracer.start_as_current_span("model_predict") as span:
        span.set_attribute("shironzi.tenant_id", tenant.id)
        span.set_attribute("shironzi.model_version", str(predictor.version))
        predictions = predictor.predict(tenant.id, [values for _, values in found])
    scores = [
        ChurnScore(
            customer_id=cid,
            probability=float(p.probability),
            risk_band=str(p.risk_band),
            reasons=[_reason(r) for r in p.reasons],
            model_name=str(p.model_name),
            model_version=str(p.model_version),
            source="live",
        )
        for (cid, _), p in zip(found, predictions, strict=True)
    ]
    return scores, missing


def scores_with_fallback(
    services: ApiServices, tenant: TenantFacts, customer_ids: Sequence[str], *, source: str
) -> tuple[list[ChurnScore], list[str], str | None]:
    """`source="live"` behind the online store's circuit breaker: while the store is down (or its breaker
    open), the latest batch scores instead, and the name of the degraded dependency as the third value
    (the route puts it in `X-Shironzi-Degraded`); else None."""
    if source != "live":
        return (*batch_scores(services, tenant, customer_ids), None)
    breaker = services.online_breaker
    if breaker.allow():
        try:
            scores, missing = live_scores(services, tenant, customer_ids)
        except ModelUnavailableError:
            breaker.abandoned()  # no model: the call never reached the store, it proves nothing about it
            raise
        except ServiceUnavailableError:
            breaker.failed()
        else:
            breaker.succeeded()
            return scores, missing, None
    breaker.degraded()
    return (*batch_scores(services, tenant, customer_ids), breaker.name)


def _reason(raw: Any) -> dict[str, Any]:
    return {
        "feature": str(raw["feature"]),
        "label": str(raw.get("label", raw["feature"])),
        "contribution": float(raw["contribution"]),
    }


def _prediction_tables(services: ApiServices, tenant: TenantFacts, table: str) -> list[str]:
    """Where this tenant's predictions may live: its dedicated root if it has one, and the pooled table."""

    settings = services.settings
    groups = (LakeGroup.of_tenant(tenant.id, region=tenant.region, placement=tenant.placement),
              LakeGroup.pooled(tenant.region))
    uris = dict.fromkeys(g.uri(settings, layer="predictions", table=table) for g in groups)
    return [u for u in uris if table_exists(u, storage_options=settings.storage_options or None)]


def batch_scores(
    services: ApiServices, tenant: TenantFacts, customer_ids: Sequence[str]
) -> tuple[list[ChurnScore], list[str]]:
    """The latest batch score (newest score_date) of each customer, from `predictions/churn_scores`."""
    import pyarrow as pa

    wanted = list(dict.fromkeys(customer_ids))
    tables = []
    for uri in _prediction_tables(services, tenant, "churn_scores"):

        tables.append(
            read_arrow(
                uri,
                tenant_id=tenant.id,
                filters=[("customer_id", "in", wanted)],
                storage_options=services.settings.storage_options or None,
            )
        )
    rows = pa.concat_tables(tables, promote_options="default").to_pylist() if tables else []
    latest: dict[str, dict[str, Any]] = {}
    for row in rows:
        if row["tenant_id"] != tenant.id:  # belt and braces: the filter already did this
            continue
        seen = latest.get(row["customer_id"])
        if seen is None or (row["score_date"], row["scored_at"]) > (seen["score_date"], seen["scored_at"]):
            latest[row["customer_id"]] = row
    scores = []
    for cid in customer_ids:
        row = latest.get(cid)
        if row is None:
            continue
        scores.append(
            ChurnScore(
                customer_id=cid,
                probability=float(row["churn_probability"]),
                risk_band=str(row["risk_band"]),
                reasons=[_reason(r) for r in json.loads(row["top_reasons"] or "[]")],
                model_name=str(row["model_name"]),
                model_version=str(row["model_version"]),
                source="batch",
                feature_timestamp=row.get("feature_timestamp"),
                score_date=row.get("score_date"),
            )
        )
    missing = [cid for cid in customer_ids if cid not in latest]
    return scores, missing


def latest_forecast(services: ApiServices, tenant: TenantFacts, kpi: str) -> dict[str, Any]:
    """The newest generated forecast of one KPI for this tenant (28 daily points with intervals)."""
    import pyarrow as pa

    tables = [
        read_arrow(
            uri,
            tenant_id=tenant.id,
            filters=[("kpi", "=", kpi)],
            storage_options=services.settings.storage_options or None,
        )
        for uri in _prediction_tables(services, tenant, "forecasts")
    ]
    rows = [r for r in (pa.concat_tables(tables, promote_options="default").to_pylist() if tables else [])
            if r["tenant_id"] == tenant.id]
    if not rows:
        raise NotFoundError(f"no {kpi} forecast yet for tenant {tenant.slug!r}", tenant=tenant.slug, kpi=kpi)
    newest = max((r["generated_date"], r["generated_at"]) for r in rows)
    chosen = sorted(
        (r for r in rows if (r["generated_date"], r["generated_at"]) == newest), key=lambda r: r["horizon_day"]
    )
    first = chosen[0]
    return {
        "kpi": kpi,
        "generated_date": first["generated_date"],
        "model_name": str(first["model_name"]),
        "model_version": str(first["model_version"]),
        "points": [
            {
                "forecast_date": r["forecast_date"],
                "horizon_day": int(r["horizon_day"]),
                "yhat": float(r["yhat"]),
                "yhat_lower": float(r["yhat_lower"]),
                "yhat_upper": float(r["yhat_upper"]),
            }
            for r in chosen
        ],
    }


def customer_not_found(tenant: TenantFacts, customer_id: str, *, what: str) -> ShironziError:
    return CustomerNotFoundError(
        f"customer {customer_id!r} has no {what} in tenant {tenant.slug!r}",
        tenant=tenant.slug,
        customer_id=customer_id,
    )


def apply_band_overrides(services: ApiServices, tenant: TenantFacts, scores: list[ChurnScore]) -> list[ChurnScore]:
    """The tenant's `churn_prediction` risk-band cut-offs (`medium_risk_from`, `high_risk_from`) over the model's:
    each band is recomputed from the probability, live and batch alike. Read through the worker's settings cache,
    which the registry invalidation refreshes, so a change shows within about a second."""
    from dataclasses import replace

    overrides, _ = services.registry.module_settings_versioned(tenant.id, "churn_prediction")
    medium, high = overrides.get("medium_risk_from"), overrides.get("high_risk_from")
    if not scores or (medium is None and high is None):
        return scores
    base = (MEDIUM_FROM, HIGH_FROM)
    if services.model.loaded:  # the model's per-tenant cut-offs fill the one the tenant did not set
        cuts = services.model.get().model_for(tenant.id).bands.get(tenant.id)
        base = (float(cuts[0]), float(cuts[1])) if cuts else base
    thresholds = (base[0] if medium is None else float(medium), base[1] if high is None else float(high))
    return [replace(s, risk_band=risk_band(s.probability, thresholds)) for s in scores]


def forecast_for_settings(forecast: dict[str, Any], *, horizon_days: int, interval_level: float) -> dict[str, Any]:
    """A stored forecast as the tenant's `trend_forecast` settings ask for it: the points up to `horizon_days`
    (the model forecasts its trained horizon, 28 days; a longer setting shows those), and the calibrated 80 %
    interval widened or narrowed to `interval_level` by the ratio of normal quantiles, each side on its own.
    Only the 80 % interval is backtested; other levels assume the errors' shape is roughly normal."""
    from statistics import NormalDist

    ratio = NormalDist().inv_cdf((1 + interval_level) / 2) / NormalDist().inv_cdf((1 + STORED_INTERVAL_LEVEL) / 2)
    points = [
        {**p, "yhat_lower": p["yhat"] - (p["yhat"] - p["yhat_lower"]) * ratio,
         "yhat_upper": p["yhat"] + (p["yhat_upper"] - p["yhat"]) * ratio}
        for p in forecast["points"] if p["horizon_day"] <= horizon_days
    ]
    return {**forecast, "points": points, "interval_level": interval_level}
