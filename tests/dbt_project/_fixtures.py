"""Hand-made bronze events for the dbt tests: the canonical bronze schema, written with deltalake."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa
from deltalake import write_deltalake

from shironzi.settings import Settings

BRONZE_SCHEMA = pa.schema(
    [
        ("tenant_id", pa.string()),
        ("event_id", pa.string()),
        ("customer_id", pa.string()),
        ("event_type", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("event_date", pa.date32()),
        ("source", pa.string()),
        ("ingested_at", pa.timestamp("us", tz="UTC")),
        ("amount", pa.float64()),
        ("currency", pa.string()),
        ("properties", pa.string()),
    ]
)

START = dt.date(2024, 1, 1)  # a Monday
INGESTED = dt.datetime(2024, 6, 1, tzinfo=dt.UTC)

# (tenant_id, industry, analytics_enabled)
TENANTS: list[dict[str, Any]] = [
    {"tenant_id": "t-shop", "industry": "ecommerce", "analytics_enabled": True},
    {"tenant_id": "t-clinic", "industry": "healthcare", "analytics_enabled": True},
    {"tenant_id": "t-school", "industry": "education", "analytics_enabled": True},
    {"tenant_id": "t-dark", "industry": "ecommerce", "analytics_enabled": False},
    {"tenant_id": "t-empty", "industry": "healthcare", "analytics_enabled": True},  # zero events
]

# (event_type, amount) cycles per industry: a customer's i-th event uses the i-th entry.
_PATTERNS = {
    "ecommerce": [
        ("customer_signed_up", None),
        ("session_started", None),
        ("product_viewed", None),
        ("order_placed", 40.0),
        ("cart_updated", None),
        ("order_refunded", 15.0),
        ("support_ticket_opened", None),
        ("subscription_changed", 9.0),
        ("order_placed", 25.0),
    ],
    "healthcare": [
        ("patient_registered", None),
        ("appointment_booked", None),
        ("appointment_attended", None),
        ("prescription_filled", 12.5),
        ("portal_login", None),
        ("claim_submitted", 80.0),
        ("appointment_missed", None),
    ],
    "education": [
        ("student_enrolled", None),
        ("course_started", None),
        ("lesson_completed", None),
        ("payment_made", 30.0),
        ("assessment_submitted", None),
        ("forum_post", None),
        ("lesson_completed", None),
    ],
}
_REF = {"order_placed": "order_id", "appointment_attended": "appointment_id", "lesson_completed": "lesson_id"}


def event(
    tenant_id: str,
    customer_id: str,
    event_type: str,
    day: dt.date,
    *,
    event_id: str,
    amount: float | None = None,
    hour: int = 12,
    ingested_at: dt.datetime = INGESTED,
    properties: str | None = None,
) -> dict[str, Any]:
    """One bronze row."""
    key = _REF.get(event_type)
    return {
        "tenant_id": tenant_id,
        "event_id": event_id,
        "customer_id": customer_id,
        "event_type": event_type,
        "event_time": dt.datetime.combine(day, dt.time(hour), tzinfo=dt.UTC),
        "event_date": day,
        "source": "test",
        "ingested_at": ingested_at,
        "amount": amount,
        "currency": "EUR" if amount is not None else None,
        "properties": properties
        if properties is not None
        else json.dumps({key: f"{event_id}-ref"} if key else {}),
    }


def sample_events(days: int = 120) -> list[dict[str, Any]]:
    """A few customers per tenant (customer ids collide across tenants on purpose), active on a
    per-customer rhythm, some of them closing their account or falling silent."""
    rows: list[dict[str, Any]] = []
    for tenant in TENANTS:
        if tenant["tenant_id"] == "t-empty":
            continue
        pattern = _PATTERNS[tenant["industry"]]
        closure = {
            "ecommerce": "account_closed",
            "healthcare": "patient_disenrolled",
            "education": "student_withdrew",
        }[tenant["industry"]]
        for number in range(6):
            customer = f"c{number}"
            every = 2 + number  # c0 every 2 days, c5 every 7 days
            stop = days - 1 if number % 3 else 40 + 10 * number  # c0, c3 go silent
            start = number * 9  # signups spread over the first two months
            for count, offset in enumerate(range(start, min(stop, days - 1) + 1, every)):
                etype, amount = pattern[count % len(pattern)]
                rows.append(
                    event(
                        tenant["tenant_id"],
                        customer,
                        etype,
                        START + dt.timedelta(offset),
                        event_id=f"{tenant['tenant_id']}-{customer}-{offset}",
                        amount=amount,
                        hour=8 + count % 10,
                    )
                )
            if number == 4:  # c4 closes its account mid-way
                day = START + dt.timedelta(70)
                rows.append(
                    event(
                        tenant["tenant_id"],
                        customer,
                        closure,
                        day,
                        event_id=f"{tenant['tenant_id']}-{customer}-closed",
                        hour=23,
                    )
                )
                rows[:] = [
                    r
                    for r in rows
                    if not (
                        r["tenant_id"] == tenant["tenant_id"]
                        and r["customer_id"] == customer
                        and r["event_date"] > day
                    )
                ]
    return rows


def to_table(rows: Sequence[dict[str, Any]], schema: pa.Schema = BRONZE_SCHEMA) -> pa.Table:
    rows = sorted(rows, key=lambda r: (r["tenant_id"], r["event_time"]))
    return pa.Table.from_pylist(list(rows), schema=schema)


def write_bronze(
    uri: str,
    rows: Iterable[dict[str, Any]],
    *,
    mode: str = "append",
    schema: pa.Schema = BRONZE_SCHEMA,
    schema_mode: str | None = None,
) -> None:
    """Append (or overwrite) bronze rows, partitioned by event_date like ingestion does."""
    write_deltalake(
        uri,
        to_table(list(rows), schema),
        mode=mode,
        partition_by=["event_date"],  # type: ignore[arg-type]
        schema_mode=schema_mode,
    )  # type: ignore[arg-type]


def meter_usage(settings: Settings, rows: list[tuple[str, dt.date, int]], collected_at: dt.datetime) -> None:
    """Usage rows as `collect_usage` writes them (one overwrite per day)."""
    import polars as pl

    from shironzi.lake import overwrite
    from shironzi.metering.usage import USAGE_COLUMNS, usage_schema, usage_uri

    frame = pl.DataFrame([{"tenant_id": t, "day": d, "events_landed": n, "bytes_total": 1000 * n,
                           "api_requests": 2 * n, "compute_seconds": n / 10} for t, d, n in rows])
    frame = frame.with_columns(*(pl.lit(0).alias(c) for c in USAGE_COLUMNS if c not in frame.columns))
    frame = frame.with_columns(pl.lit(collected_at).alias("collected_at")).cast(usage_schema())
    for day in frame["day"].unique().to_list():
        overwrite(usage_uri(settings), frame.filter(pl.col("day") == day).select(USAGE_COLUMNS).to_arrow(),
                  partition_by="day", predicate=[("day", "=", day)])
