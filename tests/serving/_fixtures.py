"""Helpers of the serving tests.

- A small, real API world: tenants with colliding customer ids, keys of every kind, online features, and
  prediction tables in the contract schema.
- One small real lake and a promoted churn champion for the whole test session: the lake is built by the
  demo's own stage functions (provision, simulate + land, dbt, features) on a small simulation, then
  `models.churn.train_churn` and `models.registry.promote_if_better` run for real. Modules point
  `MLFLOW_TRACKING_URI` at this registry (or at a copy of it when they move aliases).
- Requests generated from the OpenAPI document (one valid request per operation, aimed at tenant A).
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from shironzi.settings import Settings, get_settings

SHARED_CUSTOMER = "cust-shared"
A_ONLY_CUSTOMER = "cust-a-only"
B_ONLY_CUSTOMER = "cust-b-only"
A_MARK = 7731.25  # feature values of tenant A start here: they must never appear in B's responses
B_MARK = 3.5
CHURN = "shironzi-churn"
METHODS = ("get", "post", "put", "patch", "delete")
ENV_VARS = ("SHIRONZI_DATABASE_URL", "SHIRONZI_LAKE_URI", "SHIRONZI_KAFKA_BOOTSTRAP", "SHIRONZI_SPARK_REMOTE",
            "SHIRONZI_ONLINE_STORE_URL", "SHIRONZI_REDIS_URL", "SHIRONZI_SECRETS_URL", "MLFLOW_TRACKING_URI",
            "SHIRONZI_API_RATE_LIMITS", "SHIRONZI_API_MODEL_REFRESH_SECONDS", "OTEL_EXPORTER_OTLP_ENDPOINT")


@dataclass
class ApiWorld:
    home: Path
    settings: Settings
    tenant_a: str
    tenant_b: str
    slug_a: str
    slug_b: str
    admin_key: str
    keys: dict[str, str] = field(default_factory=dict)  # own, other, revoked, expired, read_only, write_only
    objects: dict[str, str] = field(default_factory=dict)  # path parameter -> an id of tenant A's (export_id)

    def auth(self, kind: str) -> dict[str, str]:
        if kind == "none":
            return {}
        key = self.admin_key if kind == "admin" else self.keys[kind]
        return {"Authorization": f"Bearer {key}"}


@contextmanager
def isolated_home(root: Path, **env: str) -> Iterator[Settings]:
    """SHIRONZI_HOME=root (and `env`) for a whole module; the process caches are reset around it."""
    from shironzi.audit.log import reset_audit_logs
    from shironzi.tenancy.registry import reset_registries

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHIRONZI_HOME", str(root))
        for var in ENV_VARS:
            mp.delenv(var, raising=False)
        for name, value in env.items():
            mp.setenv(name, value)
        root.mkdir(parents=True, exist_ok=True)
        get_settings.cache_clear()
        reset_registries()
        reset_audit_logs()
        try:
            yield get_settings()
        finally:
            reset_audit_logs()
            reset_registries()
            get_settings.cache_clear()


def customer_feature_values(offset: float) -> dict[str, dict[str, float]]:
    """Values for every customer-level feature view: view -> feature -> value (distinct per offset)."""
    from feature_store.registry import list_feature_views

    values: dict[str, dict[str, float]] = {}
    step = 0
    for view in list_feature_views():
        if view.entity.name == "tenant":
            continue
        row: dict[str, float] = {}
        for feature in view.features:
            step += 1
            row[feature.name] = (int(offset) + step) if feature.dtype == "int64" else offset + step / 8
        values[view.name] = row
    return values


def seed_online(settings: Settings, tenant_id: str, customer_id: str, offset: float) -> None:
    from feature_store.online import OnlineRow, open_online_store

    stamp = dt.datetime(2026, 1, 5, tzinfo=dt.UTC)
    store = open_online_store(settings=settings)
    try:
        store.write_rows(
            OnlineRow(tenant_id, view, customer_id, stamp, values)
            for view, values in customer_feature_values(offset).items()
        )
    finally:
        store.close()


def seed_tenant_context(settings: Settings, tenant_id: str, value: float) -> None:
    """Tenant-level context features (keyed by the tenant, never by a customer), as a materialised demo has."""
    from feature_store.online import TENANT_ENTITY_KEY, OnlineRow, open_online_store
    from feature_store.registry import get_feature_view

    view = get_feature_view("tenant_context")
    values = {f.name: (int(value) if f.dtype == "int64" else value) for f in view.features}
    store = open_online_store(settings=settings)
    try:
        store.write_rows([OnlineRow(tenant_id, view.name, TENANT_ENTITY_KEY, dt.datetime(2026, 1, 5, tzinfo=dt.UTC),
                                    values)])
    finally:
        store.close()


def seed_predictions(settings: Settings, tenant_id: str, customers: dict[str, float], *, mark: float) -> None:
    """Batch churn scores and forecasts in the contract schema (predictions/* pooled tables)."""
    import pyarrow as pa

    from shironzi.lake import append, table_uri

    lake = settings.resolved_lake_uri
    ts = pa.timestamp("us", tz="UTC")
    now = dt.datetime(2026, 1, 6, tzinfo=dt.UTC)
    scores = pa.Table.from_pylist(
        [
            {
                "tenant_id": tenant_id,
                "customer_id": cid,
                "score_date": dt.date(2026, 1, 6),
                "churn_probability": p,
                "risk_band": "low" if p < 0.3 else "medium" if p < 0.6 else "high",
                "top_reasons": json.dumps([{"feature": "events_30d", "label": f"events {mark}", "contribution": mark}]),
                "model_name": "shironzi-churn",
                "model_version": "1",
                "feature_timestamp": now,
                "scored_at": now,
            }
            for cid, p in customers.items()
        ],
        schema=pa.schema([("tenant_id", pa.string()), ("customer_id", pa.string()), ("score_date", pa.date32()),
                          ("churn_probability", pa.float64()), ("risk_band", pa.string()),
                          ("top_reasons", pa.string()), ("model_name", pa.string()), ("model_version", pa.string()),
                          ("feature_timestamp", ts), ("scored_at", ts)]),
    )
    append(table_uri(lake, layer="predictions", table="churn_scores", region="eu-west"), scores,
           partition_by="score_date")
    points = [
        {
            "tenant_id": tenant_id,
            "kpi": kpi,
            "forecast_date": dt.date(2026, 1, 6) + dt.timedelta(days=h),
            "horizon_day": h,
            "yhat": mark + h,
            "yhat_lower": mark + h - 1,
            "yhat_upper": mark + h + 1,
            "model_name": "shironzi-trend",
            "model_version": "1",
            "generated_date": dt.date(2026, 1, 6),
            "generated_at": now,
        }
        for kpi in ("active_customers", "revenue")
        for h in range(1, 29)
    ]
    forecasts = pa.Table.from_pylist(
        points,
        schema=pa.schema([("tenant_id", pa.string()), ("kpi", pa.string()), ("forecast_date", pa.date32()),
                          ("horizon_day", pa.int32()), ("yhat", pa.float64()), ("yhat_lower", pa.float64()),
                          ("yhat_upper", pa.float64()), ("model_name", pa.string()), ("model_version", pa.string()),
                          ("generated_date", pa.date32()), ("generated_at", ts)]),
    )
    append(table_uri(lake, layer="predictions", table="forecasts", region="eu-west"), forecasts,
           partition_by="generated_date")


def build_world(settings: Settings, *, expired_key: bool = True, seed_tables: bool = True) -> ApiWorld:
    """Tenants A and B (ecommerce, pooled, colliding customer ids) with keys of every kind, online features
    and prediction tables."""
    from shironzi.tenancy import TenantContext, get_registry

    registry = get_registry(settings)
    ctx = TenantContext.admin(actor="test", purpose="serving tests")
    a, key_a = registry.provision_tenant(ctx, slug="alpha-shop", name="Alpha", industry="ecommerce",
                                         plan="enterprise", placement="pooled")
    b, key_b = registry.provision_tenant(ctx, slug="beta-shop", name="Beta", industry="ecommerce",
                                         plan="standard", placement="pooled")
    _, admin_key = registry.issue_key(ctx, None, scopes=["admin"], label="test admin")
    revoked, revoked_key = registry.issue_key(ctx, a.id, scopes=["read", "write"], label="revoked")
    registry.revoke_key(ctx, revoked.prefix)
    _, read_only = registry.issue_key(ctx, a.id, scopes=["read"], label="read only")
    _, write_only = registry.issue_key(ctx, a.id, scopes=["write"], label="write only")
    world = ApiWorld(settings.home, settings, a.id, b.id, a.slug, b.slug, admin_key,
                     keys={"own": key_a, "other": key_b, "revoked": revoked_key, "read_only": read_only,
                           "write_only": write_only})
    expires = None
    if expired_key:
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1.5)
        _, world.keys["expired"] = registry.issue_key(ctx, a.id, scopes=["read", "write"], expires_at=expires,
                                                      label="expires")
    seed_online(settings, a.id, SHARED_CUSTOMER, A_MARK)
    seed_online(settings, a.id, A_ONLY_CUSTOMER, A_MARK + 100)
    seed_online(settings, b.id, SHARED_CUSTOMER, B_MARK)
    seed_online(settings, b.id, B_ONLY_CUSTOMER, B_MARK + 100)
    seed_tenant_context(settings, a.id, 41.0)
    seed_tenant_context(settings, b.id, 42.0)
    if seed_tables:
        seed_predictions(settings, a.id, {SHARED_CUSTOMER: 0.81, A_ONLY_CUSTOMER: 0.42}, mark=A_MARK)
        seed_predictions(settings, b.id, {SHARED_CUSTOMER: 0.11, B_ONLY_CUSTOMER: 0.22}, mark=B_MARK)
    if expires is not None:
        time.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds() + 0.1))
    return world


def finished_export(client: Any, world: ApiWorld, export_id: str, key: str = "own") -> dict[str, Any]:
    """Poll `GET /v1/exports/{id}` until the export is ready or failed (its body)."""
    deadline = time.monotonic() + 60
    while True:
        body: dict[str, Any] = client.get(f"/v1/exports/{export_id}", headers=world.auth(key)).json()
        if body.get("status") in ("ready", "failed"):
            return body
        assert time.monotonic() < deadline, f"export {export_id} did not finish: {body}"
        time.sleep(0.05)


@dataclass(frozen=True)
class HealthTenant:
    """A healthcare tenant of an API world: its patient's clear id and the protected id its tables hold."""

    tenant_id: str
    patient: str
    stored: str


PATIENT = "pat_0004711"


def add_healthcare_tenant(world: ApiWorld) -> HealthTenant:
    """A pooled healthcare tenant whose online features and batch scores are keyed by the PHI-protected id
    of `PATIENT`, as landing leaves them; keys `phi_masked` (read) and `phi_reader` (read + phi:read)."""
    from shironzi.privacy.phi import PhiCipher
    from shironzi.tenancy import TenantContext, get_registry

    registry = get_registry(world.settings)
    ctx = TenantContext.admin(actor="test", purpose="serving PHI tests")
    clinic, _ = registry.provision_tenant(ctx, slug="gamma-clinic", name="Gamma", industry="healthcare",
                                          plan="standard", placement="pooled")
    _, world.keys["phi_masked"] = registry.issue_key(ctx, clinic.id, scopes=["read"], label="no phi")
    _, world.keys["phi_reader"] = registry.issue_key(ctx, clinic.id, scopes=["read", "phi:read"], label="phi")
    stored = PhiCipher.of(clinic.id, create=True).protect(PATIENT)
    seed_online(world.settings, clinic.id, stored, 55.0)
    seed_tenant_context(world.settings, clinic.id, 43.0)
    seed_predictions(world.settings, clinic.id, {stored: 0.66}, mark=55.0)
    return HealthTenant(clinic.id, PATIENT, stored)


@dataclass(frozen=True)
class TrainedModel:
    home: Path
    tracking_uri: str
    version: str
    run_id: str
    demo_tenants: dict[str, str]  # slug -> tenant id (their online features are real)

    def copy_registry(self, target_dir: Path) -> str:
        """A private copy of the MLflow database (artifacts stay shared, read-only): a tracking URI."""
        source = Path(self.tracking_uri.removeprefix("sqlite:///"))
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / "mlflow.db"
        shutil.copy2(source, target)
        return f"sqlite:///{target}"


def train_small_champion(root: Path, *, days: int = 100, customers: int = 300) -> TrainedModel:
    from models.churn import train_churn
    from models.registry import promote_if_better
    from models.tracking import tracking_uri
    from orchestration.demo import (
        DemoState,
        build_and_materialize_features,
        build_curated_layer,
        provision_demo_tenants,
        simulate_and_land_files,
    )
    from shironzi.tenancy import get_registry

    with isolated_home(root) as settings:
        state = DemoState(settings=settings, seed=7, days=days, customers=customers)
        for stage_fn in (provision_demo_tenants, simulate_and_land_files, build_curated_layer,
                         build_and_materialize_features):
            stage_fn(state)
        result = train_churn(settings=settings, seed=0)
        decision = promote_if_better(CHURN, settings=settings)
        assert decision.promoted, decision.reason
        registry = get_registry(settings)
        tenants = {registry.get_tenant(tid).slug: tid for tid in state.tenant_ids}
        assert result.model_version is not None
        return TrainedModel(settings.home, tracking_uri(settings), str(result.model_version), result.run_id, tenants)


# ---------------------------------------------------------------------------- requests from the OpenAPI document


def openapi_operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method, path, op)
        for path, item in schema["paths"].items()
        for method, op in item.items()
        if method in METHODS
    ]


def customer_operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """Tenant operations naming customers: a `customer_id` in the path or `customer_ids` in the body."""
    found = []
    for method, path, op in openapi_operations(schema):
        if op.get("x-shironzi-auth") != "tenant":
            continue
        in_path = any(p["in"] == "path" and p["name"] == "customer_id" for p in op.get("parameters", []))
        body = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
        body = schema["components"]["schemas"].get(body.get("$ref", "").rsplit("/", 1)[-1], body)
        if in_path or "customer_ids" in body.get("properties", {}):
            found.append((method, path, op))
    return found


def documented_customer_operations(client: Any) -> tuple[list[tuple[str, str, dict[str, Any]]], dict[str, Any]]:
    """The customer operations of the app's OpenAPI document, and its component schemas."""
    schema = client.get("/openapi.json").json()
    operations = customer_operations(schema)
    assert len(operations) >= 3, "the customer routes went missing from the document"
    return operations, schema["components"]["schemas"]


def customer_requests(
    op: dict[str, Any], path: str, components: dict[str, Any], world: ApiWorld, customer: str
) -> list[tuple[str | None, dict[str, Any]]]:
    """(source, request) naming `customer` for a customer operation, one per `source` it offers."""
    params = op.get("parameters", [])
    sources = [p["schema"].get("enum", ["live", "batch"]) for p in params if p["name"] == "source"]
    body_sources = ["live", "batch"] if "churn:batch" in path else [None]
    out = []
    for source in (sources[0] if sources else body_sources):
        spec = openapi_request(op, path.replace("{customer_id}", customer), components, world)
        if source is not None and spec["json"] is None:
            spec["params"] = {**spec["params"], "source": source}
        if spec["json"] is not None:
            spec["json"] = {**spec["json"], "customer_ids": [customer]}
            if source is not None:
                spec["json"]["source"] = source
        out.append((source, spec))
    return out


def _example(schema: dict[str, Any], components: dict[str, Any], name: str, world: ApiWorld) -> Any:
    """A small valid value for a JSON schema, aimed at tenant A's objects where a name says what it is."""
    if "$ref" in schema:
        return _example(components[schema["$ref"].rsplit("/", 1)[-1]], components, name, world)
    if "anyOf" in schema:
        options = [s for s in schema["anyOf"] if s.get("type") != "null"]
        return _example(options[0], components, name, world) if options else None
    named = {
        "customer_id": A_ONLY_CUSTOMER, "customer_ids": [A_ONLY_CUSTOMER, SHARED_CUSTOMER], "tenant_id": world.tenant_a,
        "subject_id": A_ONLY_CUSTOMER, "kpi": "revenue", "name": "shironzi-churn", "module": "notifications",
        "scopes": ["read"], "slug": "bola-new-tenant", "plan": "enterprise", "industry": "ecommerce",
        "events": [{"tenant_id": world.tenant_a, "event_id": "bola-1", "customer_id": A_ONLY_CUSTOMER,
                    "event_type": "session_started", "event_time": "2026-01-05T10:00:00Z"}],
        "table": "eu-west/predictions/churn_scores", "request_id": "unknown-receipt", "prefix": "aaaaaaaaaa",
        **world.objects,
    }
    if name in named and named[name] in schema.get("enum", [named[name]]):
        return named[name]
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {
            key: _example(sub, components, key, world)
            for key, sub in schema.get("properties", {}).items()
            if key in schema.get("required", [])
        }
    if kind == "array":
        return [_example(schema.get("items", {}), components, name, world)]
    if schema.get("format") in ("date", "date-time"):
        return "2026-01-06" if schema["format"] == "date" else "2026-01-06T00:00:00Z"
    return {"integer": 1, "number": 1.0, "boolean": True}.get(kind or "", "x")


def openapi_request(op: dict[str, Any], path: str, components: dict[str, Any], world: ApiWorld) -> dict[str, Any]:
    query: dict[str, Any] = {}
    for param in op.get("parameters", []):
        value = _example(param["schema"], components, param["name"], world)
        if param["in"] == "path":
            path = path.replace("{" + param["name"] + "}", str(value))
        elif param["in"] == "query" and param.get("required"):
            query[param["name"]] = value
    body = None
    content = op.get("requestBody", {}).get("content", {}).get("application/json")
    if content:
        body = _example(content["schema"], components, "", world)
    return {"url": path, "params": query, "json": body}
