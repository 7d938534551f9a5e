"""Small, deterministic bronze data and tenants for the feature store tests."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from feature_store.offline import feature_timestamp_for
from feature_store.registry import get_feature_view
from ingestion.contracts import CANONICAL_SCHEMA
from shironzi.lake import append, table_uri
from shironzi.settings import Settings

START = dt.date(2024, 1, 1)
EVENT_TYPES = {
    "ecommerce": ["customer_signed_up", "session_started", "product_viewed", "cart_updated", "order_placed",
                  "order_refunded", "subscription_changed", "support_ticket_opened"],
    "healthcare": ["patient_registered", "appointment_booked", "appointment_attended", "appointment_missed",
                   "prescription_filled", "portal_login", "claim_submitted"],
    "education": ["student_enrolled", "course_started", "lesson_completed", "assessment_submitted",
                  "payment_made", "forum_post"],
}
PAID = {"order_placed", "order_refunded", "subscription_changed", "prescription_filled", "claim_submitted",
        "payment_made"}


@dataclass(frozen=True)
class FsTenant:
    tenant_id: str
    slug: str
    industry: str
    plan: str


def provision(settings: Settings, specs: list[tuple[str, str, str]]) -> list[FsTenant]:
    """Provision (slug, industry, plan) tenants in the registry, all pooled in the default region."""
    from shironzi.tenancy import TenantContext, get_registry

    registry = get_registry(settings)
    ctx = TenantContext.admin(actor="test", purpose="feature store test")
    out = []
    for slug, industry, plan in specs:
        tenant, _ = registry.provision_tenant(ctx, slug=slug, name=slug.title(), industry=industry,
                                              plan=plan, placement="pooled")
        out.append(FsTenant(tenant.id, slug, industry, plan))
    return out


def bronze_events(tenants: list[FsTenant], *, customers: int = 6, days: int = 60, seed: int = 3,
                  start: dt.date = START) -> pa.Table:
    """Random activity for `customers` customers per tenant; customer ids collide across tenants."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list] = {f.name: [] for f in CANONICAL_SCHEMA}
    for tenant in tenants:
        types = EVENT_TYPES[tenant.industry]
        for number in range(customers):
            first = int(rng.integers(0, days // 2))
            last = int(rng.integers(first, days))
            for day in range(first, last + 1):
                for k in range(int(rng.poisson(1.2 if number % 2 else 0.4))):
                    etype = types[int(rng.integers(0, len(types)))]
                    when = dt.datetime.combine(start + dt.timedelta(days=day), dt.time(int(rng.integers(0, 24))),
                                               tzinfo=dt.UTC)
                    amount = round(float(rng.uniform(5, 120)), 2) if etype in PAID else None
                    rows["tenant_id"].append(tenant.tenant_id)
                    rows["event_id"].append(f"{tenant.slug}-c{number}-{day}-{k}")
                    rows["customer_id"].append(f"c{number}")
                    rows["event_type"].append(etype)
                    rows["event_time"].append(when)
                    rows["event_date"].append(when.date())
                    rows["source"].append("test")
                    rows["ingested_at"].append(when)
                    rows["amount"].append(amount)
                    rows["currency"].append("EUR" if amount is not None else None)
                    rows["properties"].append(json.dumps({}))
    return pa.table(rows, schema=CANONICAL_SCHEMA)


def bronze_uri(settings: Settings) -> str:
    from shironzi.lake import table_uri

    return table_uri(settings.resolved_lake_uri, layer="bronze", table="events", region=settings.default_region)


def write_bronze(settings: Settings, table: pa.Table) -> None:
    from shironzi.lake import append

    append(bronze_uri(settings), table, partition_by="event_date")


def write_view_rows(settings: Settings, view_name: str, rows: list[dict]) -> None:
    """Write offline rows of a view straight to its Delta table (features not given are null)."""
    view = get_feature_view(view_name)
    types = {"int64": pa.int64(), "float64": pa.float64()}
    schema = pa.schema([*((k, pa.string()) for k in view.join_keys), ("snapshot_date", pa.date32()),
                        ("feature_timestamp", pa.timestamp("us", tz="UTC")),
                        *((f.name, types[f.dtype]) for f in view.features)])
    full = [{**{c: None for c in schema.names}, **r,
             "feature_timestamp": feature_timestamp_for(r["snapshot_date"])} for r in rows]
    uri = table_uri(settings.resolved_lake_uri, layer="features", table=view.table, region=settings.default_region)
    append(uri, pa.Table.from_pylist(full, schema=schema))
