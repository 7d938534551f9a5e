"""Seed a small, real lake for the dashboard tests: registry tenants and keys, gold tables, predictions in
the models contract's schema, bronze, quarantine, the ingest run log, dbt run results, audit events, an
erasure receipt and MLflow model versions. Two tenants carry deliberately distinct values, so a test can
prove that one never sees the other's numbers."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from shironzi.lake import append, overwrite, table_uri
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import TenantContext, get_registry

REGION = "eu-west"
TODAY = dt.date(2026, 3, 31)
DAYS = 60
UTC_US = pa.timestamp("us", tz="UTC")
SEED_ACTOR = "dashboard-tests"


@dataclass(frozen=True)
class SeededTenant:
    id: str
    slug: str
    name: str
    industry: str
    key: str
    revenue_base: float  # daily revenue = base + day index: distinct per tenant
    customers: tuple[str, ...]
    marker_probability: float  # one churn probability only this tenant has


@dataclass
class SeededLake:
    home: Path
    settings: Settings
    admin_key: str
    alpha: SeededTenant
    bravo: SeededTenant
    gamma: SeededTenant  # free plan: dashboards + analytics only
    receipt_request_id: str = ""
    model_versions: dict[str, str] = field(default_factory=dict)


def _uri(layer: str, table: str) -> str:
    return table_uri(get_settings().resolved_lake_uri, layer=layer, table=table, region=REGION)  # type: ignore[arg-type]


def _at(day: dt.date, hour: int = 12) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC)


def _provision() -> tuple[str, list[tuple[str, str, str, str]]]:
    registry = get_registry()
    ctx = TenantContext.admin(actor=SEED_ACTOR, purpose="dashboard tests")
    made = []
    for slug, name, industry, plan in (
        ("alpha-shop", "Alpha Shop", "ecommerce", "enterprise"),
        ("bravo-clinic", "Bravo Clinic", "healthcare", "standard"),
        ("gamma-school", "Gamma School", "education", "free"),
    ):
        tenant, key = registry.provision_tenant(ctx, slug=slug, name=name, industry=industry, region=REGION, plan=plan)
        made.append((tenant.id, slug, name, key))
    _, admin_key = registry.issue_key(ctx, None, scopes=["admin"], label="dashboard tests")
    return admin_key, made


def _kpis(tenant: SeededTenant, core: str) -> pa.Table:
    rows = []
    for i in range(DAYS):
        day = TODAY - dt.timedelta(days=DAYS - 1 - i)
        revenue = tenant.revenue_base + i
        rows.append({
            "tenant_id": tenant.id, "event_date": day, "industry": tenant.industry,
            "active_customers": 40 + i % 7 + (0 if tenant.slug.startswith("alpha") else 500),
            "new_customers": 2 + i % 3, "events": 300 + i, "revenue": revenue, "refunds": 10.0,
            "net_revenue": revenue - 10.0, "core_action_name": core, "core_actions": 50 + i,
            "orders": 50 + i if core == "orders" else None,
            "appointments": 50 + i if core == "appointments" else None,
            "lessons": 50 + i if core == "lessons" else None,
            "support_tickets": 3, "closed_customers": 1 if i % 5 == 0 else 0,
            "last_ingested_at": _at(TODAY, 18),
        })
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("tenant_id", pa.string()), ("event_date", pa.date32()), ("industry", pa.string()),
        ("active_customers", pa.int64()), ("new_customers", pa.int64()), ("events", pa.int64()),
        ("revenue", pa.float64()), ("refunds", pa.float64()), ("net_revenue", pa.float64()),
        ("core_action_name", pa.string()), ("core_actions", pa.int64()), ("orders", pa.int64()),
        ("appointments", pa.int64()), ("lessons", pa.int64()), ("support_tickets", pa.int64()),
        ("closed_customers", pa.int64()), ("last_ingested_at", UTC_US),
    ]))


def _retention(tenant: SeededTenant, rate_base: float) -> pa.Table:
    rows = []
    for c in range(3):
        cohort = dt.date(2026, 1 + c, 1)
        for m in range(3 - c):
            size = 100 + c
            retained = int(size * (rate_base - 0.1 * m))
            rows.append({"tenant_id": tenant.id, "cohort_month": cohort, "months_since_signup": m,
                         "cohort_size": size, "retained_customers": retained, "retention_rate": retained / size})
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("tenant_id", pa.string()), ("cohort_month", pa.date32()), ("months_since_signup", pa.int64()),
        ("cohort_size", pa.int64()), ("retained_customers", pa.int64()), ("retention_rate", pa.float64()),
    ]))


def _usage(tenant: SeededTenant, rows_per_day: int) -> pa.Table:
    rows = [{"tenant_id": tenant.id, "usage_date": TODAY - dt.timedelta(days=d), "rows_ingested": rows_per_day + d,
             "payload_bytes": (rows_per_day + d) * 200, "events": rows_per_day + d - 1, "active_customers": 30,
             "last_ingested_at": _at(TODAY - dt.timedelta(days=d), 18)} for d in range(14)]
    return pa.Table.from_pylist(rows, schema=pa.schema([
        ("tenant_id", pa.string()), ("usage_date", pa.date32()), ("rows_ingested", pa.int64()),
        ("payload_bytes", pa.int64()), ("events", pa.int64()), ("active_customers", pa.int64()),
        ("last_ingested_at", UTC_US),
    ]))


def _customers(tenant: SeededTenant) -> pa.Table:
    return pa.table({
        "tenant_id": [tenant.id] * len(tenant.customers), "customer_id": list(tenant.customers),
        "industry": [tenant.industry] * len(tenant.customers), "status": ["active"] * len(tenant.customers),
        "lifetime_value": [100.0] * len(tenant.customers),
    })


CHURN_SCHEMA = pa.schema([
    ("tenant_id", pa.string()), ("customer_id", pa.string()), ("score_date", pa.date32()),
    ("churn_probability", pa.float64()), ("risk_band", pa.string()), ("top_reasons", pa.string()),
    ("model_name", pa.string()), ("model_version", pa.string()), ("feature_timestamp", UTC_US),
    ("scored_at", UTC_US),
])
FORECAST_SCHEMA = pa.schema([
    ("tenant_id", pa.string()), ("kpi", pa.string()), ("forecast_date", pa.date32()), ("horizon_day", pa.int32()),
    ("yhat", pa.float64()), ("yhat_lower", pa.float64()), ("yhat_upper", pa.float64()), ("model_name", pa.string()),
    ("model_version", pa.string()), ("generated_date", pa.date32()), ("generated_at", UTC_US),
])


def band(p: float) -> str:
    return "low" if p < 0.3 else ("medium" if p < 0.6 else "high")


def _scores(tenant: SeededTenant, score_date: dt.date, probabilities: list[float]) -> pa.Table:
    reasons = [
        {"feature": "days_since_last_order", "label": "Days since last activity", "contribution": 0.41},
        {"feature": "support_tickets_30d", "label": "Support tickets (30 days)", "contribution": 0.22},
        {"feature": "spend_trend_90d", "label": "Spend trend (90 days)", "contribution": -0.05},
    ]
    rows = [{
        "tenant_id": tenant.id, "customer_id": customer, "score_date": score_date, "churn_probability": p,
        "risk_band": band(p), "top_reasons": json.dumps(reasons[: 1 + i % 3]), "model_name": "shironzi-churn",
        "model_version": "2", "feature_timestamp": _at(score_date, 0), "scored_at": _at(score_date, 3),
    } for i, (customer, p) in enumerate(zip(tenant.customers, probabilities, strict=True))]
    return pa.Table.from_pylist(rows, schema=CHURN_SCHEMA)


def _forecasts(tenant: SeededTenant, level: float) -> pa.Table:
    rows = []
    for kpi, base in (("active_customers", level), ("revenue", tenant.revenue_base + DAYS)):
        for h in range(1, 29):
            yhat = base + h
            rows.append({"tenant_id": tenant.id, "kpi": kpi, "forecast_date": TODAY + dt.timedelta(days=h),
                         "horizon_day": h, "yhat": yhat, "yhat_lower": yhat * 0.9, "yhat_upper": yhat * 1.1,
                         "model_name": "shironzi-trend", "model_version": "1", "generated_date": TODAY,
                         "generated_at": _at(TODAY, 4)})
    return pa.Table.from_pylist(rows, schema=FORECAST_SCHEMA)


def _features(tenant: SeededTenant) -> pa.Table:
    snapshot = TODAY - dt.timedelta(days=1 if tenant.slug.startswith("alpha") else 9)
    return pa.table({
        "tenant_id": [tenant.id] * len(tenant.customers), "customer_id": list(tenant.customers),
        "snapshot_date": pa.array([snapshot] * len(tenant.customers), pa.date32()),
        "feature_timestamp": pa.array([_at(snapshot, 23)] * len(tenant.customers), UTC_US),
        "events_7d": list(range(len(tenant.customers))),
    })


def _bronze(tenant: SeededTenant) -> pa.Table:
    from ingestion.contracts.schema import CANONICAL_SCHEMA

    rows = []
    for i, customer in enumerate(tenant.customers):
        source = "kafka:events" if i % 2 else "file:landing"
        day = TODAY - dt.timedelta(days=i % 3)
        rows.append({"tenant_id": tenant.id, "event_id": f"{tenant.slug}-e{i}", "customer_id": customer,
                     "event_type": "signup", "event_time": _at(day, 10), "event_date": day, "source": source,
                     "ingested_at": _at(day, 11 + i % 5), "amount": None, "currency": None,
                     "properties": json.dumps({"note": customer})})
    return pa.Table.from_pylist(rows, schema=CANONICAL_SCHEMA)


def _quarantine(tenant: SeededTenant, reasons: dict[str, int]) -> pa.Table:
    from ingestion.contracts.schema import QUARANTINE_SCHEMA

    rows = []
    for code, n in reasons.items():
        for i in range(n):
            rows.append({"quarantined_at": _at(TODAY, 9), "tenant_id": tenant.id, "reason_code": code,
                         "reason": f"{code} in test record",
                         "raw_payload": json.dumps({"tenant_id": tenant.id, "i": i}),
                         "source": "kafka:events", "position": f"events:0:{i}", "event_date": TODAY})
    return pa.Table.from_pylist(rows, schema=QUARANTINE_SCHEMA)


def _anomalies(tenant: SeededTenant, kind: str, expected: float) -> pa.Table:
    """One detector finding per tenant, with a kind and an expected count only that tenant has."""
    return pa.table({"tenant_id": [tenant.id], "event_date": pa.array([TODAY - dt.timedelta(days=2)], pa.date32()),
                     "kind": [kind], "score": [6.5], "expected": [expected], "observed": [0.0],
                     "detected_at": pa.array([_at(TODAY, 3)], UTC_US)})


def _run_log() -> pa.Table:
    from ingestion.bronze import RUN_LOG_SCHEMA

    rows = []
    for i, (kind, status) in enumerate((("files", "succeeded"), ("stream", "succeeded"), ("stream", "failed"))):
        started = _at(TODAY, 12 + i)
        rows.append({"run_id": f"run-{i}", "flush": 0, "source_kind": kind, "source_name": f"source-{i}",
                     "worker": "0", "started_at": started, "finished_at": started + dt.timedelta(seconds=4 + i),
                     "received": 1000 * (i + 1), "landed": 990 * (i + 1), "quarantined": 10 * (i + 1),
                     "duplicates": 0, "duplicates_in_batch": 0, "duplicates_existing": 0, "recovered": 0,
                     "status": status, "error": "broker went away" if status == "failed" else None,
                     "table_versions": "{}", "positions": "{}",
                     "quarantined_by_reason": json.dumps({"schema_violation": 10 * (i + 1)})})
    return pa.Table.from_pylist(rows, schema=RUN_LOG_SCHEMA)


def _dbt_results(home: Path) -> None:
    target = home / "dbt" / REGION / "target"
    target.mkdir(parents=True, exist_ok=True)
    results = [
        {"unique_id": f"model.shironzi.{name}", "status": "success", "execution_time": 0.5 + i, "message": "OK"}
        for i, name in enumerate(("fct_tenant_daily_kpis", "fct_cohort_retention", "dim_customers"))
    ] + [{"unique_id": "test.shironzi.not_null_dim_customers_tenant_id", "status": "pass", "execution_time": 0.1,
          "message": None}]
    (target / "run_results.json").write_text(json.dumps(
        {"metadata": {"generated_at": _at(TODAY, 5).isoformat()}, "results": results}))


def _mlflow(settings: Settings, seeded: SeededLake) -> None:
    """Two real registered versions of shironzi-churn (champion = v2) with metrics, in MLflow's SQLite store."""
    import mlflow
    from mlflow import MlflowClient

    uri = settings.resolved_mlflow_tracking_uri  # both URIs: else the registry is the process's last one set
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.create_experiment("shironzi-churn", artifact_location=str(settings.home / "mlartifacts"))
    client.create_registered_model("shironzi-churn")
    for version, auc in (("1", 0.71), ("2", 0.78)):
        run = client.create_run(experiment)
        metrics = {"auc": auc, "pr_auc": auc - 0.3, "auc_bucket_small": auc - 0.05, "auc_bucket_large": auc + 0.02,
                   "holdout_rows": 5000.0, "psi_days_since_last_order": 0.04 * int(version),
                   "psi_support_tickets_30d": 0.31}
        for key, value in metrics.items():
            client.log_metric(run.info.run_id, key, value)
        client.set_terminated(run.info.run_id)
        made = client.create_model_version("shironzi-churn", source=f"runs:/{run.info.run_id}/model",
                                           run_id=run.info.run_id)
        seeded.model_versions[version] = str(made.version)
    client.set_registered_model_alias("shironzi-churn", "champion", "2")
    del mlflow


def seed_lake(home: Path) -> SeededLake:
    """Fill `home` (already SHIRONZI_HOME) with everything the pages read."""
    from shironzi.audit.erasure import erase_subject
    from shironzi.audit.log import audit, get_audit_log, record_training_run

    settings = get_settings()
    admin_key, made = _provision()
    (a_id, a_slug, a_name, a_key), (b_id, b_slug, b_name, b_key), (g_id, g_slug, g_name, g_key) = made
    alpha = SeededTenant(a_id, a_slug, a_name, "ecommerce", a_key, 1234.5,
                         tuple(f"alpha-cust-{i:03d}" for i in range(8)), 0.8123)
    bravo = SeededTenant(b_id, b_slug, b_name, "healthcare", b_key, 777777.25,
                         tuple(f"bravo-patient-{i:03d}" for i in range(6)), 0.9377)
    gamma = SeededTenant(g_id, g_slug, g_name, "education", g_key, 5.5, ("gamma-student-000",), 0.5)
    seeded = SeededLake(home, settings, admin_key, alpha, bravo, gamma)

    kpis = [_kpis(alpha, "orders"), _kpis(bravo, "appointments"), _kpis(gamma, "lessons")]
    overwrite(_uri("gold", "fct_tenant_daily_kpis"), pa.concat_tables(kpis), partition_by="event_date")
    overwrite(_uri("gold", "fct_cohort_retention"), pa.concat_tables([_retention(alpha, 0.9), _retention(bravo, 0.6)]))
    overwrite(_uri("gold", "fct_tenant_usage"), pa.concat_tables([_usage(alpha, 1000), _usage(bravo, 55555)]),
              partition_by="usage_date")
    overwrite(_uri("gold", "dim_customers"), pa.concat_tables([_customers(alpha), _customers(bravo)]))

    old = TODAY - dt.timedelta(days=7)
    append(_uri("predictions", "churn_scores"), _scores(alpha, old, [0.5] * len(alpha.customers)),
           partition_by="score_date")
    alpha_p = [alpha.marker_probability, 0.65, 0.45, 0.35, 0.25, 0.15, 0.05, 0.72]
    bravo_p = [bravo.marker_probability, 0.61, 0.44, 0.31, 0.12, 0.02]
    append(_uri("predictions", "churn_scores"),
           pa.concat_tables([_scores(alpha, TODAY, alpha_p), _scores(bravo, TODAY, bravo_p)]),
           partition_by="score_date")
    append(_uri("predictions", "forecasts"), pa.concat_tables([_forecasts(alpha, 47.0), _forecasts(bravo, 545.0)]),
           partition_by="generated_date")

    append(_uri("features", "customer_activity_v1"), pa.concat_tables([_features(alpha), _features(bravo)]))
    append(_uri("bronze", "events"), pa.concat_tables([_bronze(alpha), _bronze(bravo)]), partition_by="event_date")
    append(_uri("quarantine", "events"),
           pa.concat_tables([_quarantine(alpha, {"schema_violation": 3, "unknown_event_type": 1}),
                             _quarantine(bravo, {"late_event": 4242})]),
           partition_by="event_date")
    from shironzi.lake.paths import platform_uri

    append(platform_uri(settings.resolved_lake_uri, "ingest", "runs"), _run_log())
    append(platform_uri(settings.resolved_lake_uri, "monitoring", "anomalies"),
           pa.concat_tables([_anomalies(alpha, "volume_spike", 3131.0), _anomalies(bravo, "silent", 9191.0)]),
           partition_by="event_date")
    _dbt_results(home)

    admin = TenantContext.admin(actor=SEED_ACTOR, purpose="dashboard tests")
    audit(TenantContext.for_tenant(alpha.id, actor="key:alphaanalyst", purpose="api"), "read_scores",
          resource="api:/v1/scores")
    audit(TenantContext.for_tenant(bravo.id, actor="key:bravoanalyst", purpose="api"), "read_scores",
          resource="api:/v1/scores")
    record_training_run("models.train", run_id="run-churn-2", inputs=[(_uri("gold", "dim_customers"), 0)],
                        model_name="shironzi-churn", model_version="2")
    audit(admin, "model_promotion", resource="model:shironzi-churn", details={"version": "2", "from": "1"})
    receipt = erase_subject(admin, alpha.id, alpha.customers[-1], request_id="era_dashboard_test")
    seeded.receipt_request_id = receipt.request_id
    get_audit_log().flush()
    _mlflow(settings, seeded)
    return seeded
