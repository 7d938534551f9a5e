"""The platform's feature views (47 features) and the Spark SQL base views they select from.

The offline pipeline registers, per run, these Spark temp views:

* `events`: the bronze events of the tenants being built, with event_date <= the last snapshot date;
* `snapshots`: (tenant_id, snapshot_date, feature_timestamp): the snapshot dates to compute per tenant;
* `customer_daily`: one row per (tenant, customer, event_date) with counts and amounts per event category;
* `customer_spine`: one row per (tenant, customer, snapshot) for every customer first seen by that date;
* `customer_windows`: the spine with every trailing-window aggregate, computed by window functions over
  the spine rows merged into the daily rows (no range join). Customers silent for more than
  `ACTIVE_LOOKBACK_DAYS` drop out of the spine; their last row then ages out through each view's TTL.

A snapshot on date s sees the events with event_date <= s; its feature_timestamp is the last microsecond of
day s (UTC), so a training row at time t only receives snapshots whose whole day ended at or before t.
"""

from __future__ import annotations

from datetime import timedelta

from feature_store.definitions import CUSTOMER, TENANT, Feature, FeatureView

ACTIVE_LOOKBACK_DAYS = 365
OWNER = "ml-platform"

# Event categories across the three industries' contracts.
VISITS = ("session_started", "portal_login", "appointment_attended", "lesson_completed")
PURCHASES = ("order_placed", "subscription_changed", "prescription_filled", "claim_submitted", "payment_made")
FRICTION = ("support_ticket_opened", "order_refunded", "appointment_missed")
CATEGORIES: dict[str, tuple[str, ...]] = {
    "visits": VISITS,
    "purchases": PURCHASES,
    "friction": FRICTION,
    "support_tickets": ("support_ticket_opened",),
    "refunds": ("order_refunded",),
    "missed_appointments": ("appointment_missed",),
    "product_views": ("product_viewed",),
    "cart_updates": ("cart_updated",),
    "appointments_attended": ("appointment_attended",),
    "prescriptions": ("prescription_filled",),
    "lessons_completed": ("lesson_completed",),
    "assessments_submitted": ("assessment_submitted",),
    "forum_posts": ("forum_post",),
}
AMOUNTS: dict[str, tuple[str, ...]] = {"spend": PURCHASES, "refund_amount": ("order_refunded",)}
DAILY_MEASURES: tuple[str, ...] = ("events", *CATEGORIES, *AMOUNTS)


def _in_list(types: tuple[str, ...]) -> str:
    return ", ".join(f"'{t}'" for t in types)


def _customer_daily_sql() -> str:
    counts = [f"CAST(SUM(CASE WHEN event_type IN ({_in_list(types)}) THEN 1 ELSE 0 END) AS BIGINT) AS {name}"
              for name, types in CATEGORIES.items()]
    amounts = [f"CAST(SUM(CASE WHEN event_type IN ({_in_list(types)}) THEN COALESCE(amount, 0.0) ELSE 0.0 END)"
               f" AS DOUBLE) AS {name}" for name, types in AMOUNTS.items()]
    return (
        "SELECT tenant_id, customer_id, event_date, DATEDIFF(event_date, DATE'1970-01-01') AS day_number,\n"
        "  CAST(COUNT(*) AS BIGINT) AS events,\n  " + ",\n  ".join(counts + amounts) + "\n"
        "FROM events GROUP BY tenant_id, customer_id, event_date"
    )


CUSTOMER_SPINE_SQL = """
SELECT s.tenant_id, f.customer_id, s.snapshot_date, s.feature_timestamp,
       DATEDIFF(s.snapshot_date, DATE'1970-01-01') AS day_number, f.first_seen
FROM snapshots s
JOIN (SELECT tenant_id, customer_id, MIN(event_date) AS first_seen FROM events GROUP BY tenant_id, customer_id) f
  ON f.tenant_id = s.tenant_id AND f.first_seen <= s.snapshot_date
"""

_PARTITION = "PARTITION BY tenant_id, customer_id ORDER BY day_number"


def _window(expr: str, *, days: int | None = None, skip_days: int = 0) -> str:
    """`expr` summed over the `days` days ending `skip_days` before the row's day (None: all history)."""
    if days is None:
        frame = "RANGE BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW"
    else:
        end = "CURRENT ROW" if skip_days == 0 else f"{skip_days} PRECEDING"
        frame = f"RANGE BETWEEN {days + skip_days - 1} PRECEDING AND {end}"
    return f"{expr} OVER ({_PARTITION} {frame})"


def _customer_windows_sql() -> str:
    zeros = ", ".join(f"CAST(0 AS {'DOUBLE' if m in AMOUNTS else 'BIGINT'}) AS {m}" for m in DAILY_MEASURES)
    measures = ", ".join(DAILY_MEASURES)
    sums: list[str] = []
    for measure, windows in {
        "events": (7, 30, 90), "visits": (7, 30, 90), "spend": (7, 30, 90), "purchases": (30, 90),
        "friction": (30, 90), "support_tickets": (90,), "refunds": (90,), "refund_amount": (90,),
        "missed_appointments": (90,), "product_views": (30,), "cart_updates": (30,),
        "appointments_attended": (90,), "prescriptions": (90,), "lessons_completed": (30,),
        "assessments_submitted": (30,), "forum_posts": (30,),
    }.items():
        sums += [f"COALESCE({_window(f'SUM({measure})', days=d)}, 0) AS {measure}_{d}d" for d in windows]
    sums += [f"COALESCE({_window(f'SUM({m})', days=30, skip_days=30)}, 0) AS {m}_prev_30d"
             for m in ("events", "spend")]
    sums.append(f"COALESCE({_window('SUM(CASE WHEN is_spine = 0 THEN 1 ELSE 0 END)', days=7)}, 0) AS active_days_7d")
    sums.append(f"COALESCE({_window('SUM(CASE WHEN is_spine = 0 THEN 1 ELSE 0 END)', days=30)}, 0) AS active_days_30d")
    sums.append(f"COALESCE({_window('SUM(CASE WHEN is_spine = 0 THEN 1 ELSE 0 END)', days=90)}, 0) AS active_days_90d")
    sums += [
        f"{_window('MAX(CASE WHEN is_spine = 0 THEN day_number END)')} AS last_event_day",
        f"{_window('MAX(CASE WHEN visits > 0 THEN day_number END)')} AS last_visit_day",
        f"{_window('MAX(CASE WHEN purchases > 0 THEN day_number END)')} AS last_purchase_day",
        f"{_window('MIN(CASE WHEN purchases > 0 THEN day_number END)')} AS first_purchase_day",
        f"{_window('SUM(CASE WHEN purchases > 0 THEN 1 ELSE 0 END)')} AS lifetime_purchase_days",
        f"{_window('SUM(events)')} AS lifetime_events",
        f"{_window('SUM(spend)')} AS lifetime_spend",
    ]
    return f"""
WITH merged AS (
  SELECT tenant_id, customer_id, day_number, {measures},
         CAST(NULL AS DATE) AS snapshot_date, CAST(NULL AS TIMESTAMP) AS feature_timestamp,
         CAST(NULL AS DATE) AS first_seen, 0 AS is_spine
  FROM customer_daily
  UNION ALL
  SELECT tenant_id, customer_id, day_number, {zeros},
         snapshot_date, feature_timestamp, first_seen, 1 AS is_spine
  FROM customer_spine
),
windowed AS (
  SELECT tenant_id, customer_id, day_number, snapshot_date, feature_timestamp, first_seen, is_spine,
    {(',' + chr(10) + '    ').join(sums)}
  FROM merged
)
SELECT * FROM windowed
WHERE is_spine = 1 AND last_event_day >= day_number - {ACTIVE_LOOKBACK_DAYS}
"""


BASE_VIEWS: tuple[tuple[str, str], ...] = (
    ("customer_daily", _customer_daily_sql()),
    ("customer_spine", CUSTOMER_SPINE_SQL),
    ("customer_windows", _customer_windows_sql()),
)
"""(temp view name, Spark SQL) registered in order before any feature view's transformation runs."""


def _ratio(numerator: str, denominator: str) -> str:
    return f"CASE WHEN {denominator} > 0 THEN CAST({numerator} AS DOUBLE) / {denominator} END"


def _customer_select(columns: list[tuple[str, str]]) -> str:
    body = ",\n  ".join(f"{expr} AS {name}" for name, expr in columns)
    return ("SELECT tenant_id, customer_id, snapshot_date, feature_timestamp,\n  " + body
            + "\nFROM customer_windows")


def _int(name: str, description: str) -> Feature:
    return Feature(name, "int64", description)


def _float(name: str, description: str) -> Feature:
    return Feature(name, "float64", description)


def _plain(features: list[Feature]) -> list[tuple[str, str]]:
    casts = {"int64": "BIGINT", "float64": "DOUBLE"}
    return [(f.name, f"CAST({f.name} AS {casts[f.dtype]})") for f in features]


_ACTIVITY = [
    *(_int(f"events_{d}d", f"Events in the last {d} days.") for d in (7, 30, 90)),
    *(_int(f"active_days_{d}d", f"Days with at least one event in the last {d} days.") for d in (7, 30, 90)),
    *(_int(f"visits_{d}d", f"Sessions, portal logins, attended appointments or lessons in {d} days.")
      for d in (7, 30, 90)),
    *(_float(f"spend_{d}d", f"Amount of purchase events in the last {d} days.") for d in (7, 30, 90)),
    *(_int(f"purchases_{d}d", f"Purchase events in the last {d} days.") for d in (30, 90)),
]
customer_activity = FeatureView(
    name="customer_activity",
    entity=CUSTOMER,
    features=(*_ACTIVITY, _float("avg_purchase_90d", "Mean purchase amount over the last 90 days.")),
    transformation=_customer_select(
        [*_plain(_ACTIVITY), ("avg_purchase_90d", _ratio("spend_90d", "purchases_90d"))]
    ),
    ttl=timedelta(days=14),
    owner=OWNER,
    description="Trailing 7/30/90-day activity: events, active days, visits, spend and purchases.",
    tags=("churn", "trend"),
)

customer_lifecycle = FeatureView(
    name="customer_lifecycle",
    entity=CUSTOMER,
    features=(
        _int("days_since_last_event", "Days from the last event to the snapshot date."),
        _int("days_since_last_visit", "Days since the last visit (null: never visited)."),
        _int("days_since_last_purchase", "Days since the last purchase (null: never purchased)."),
        _int("tenure_days", "Days since the customer was first seen (signup)."),
        _int("lifetime_events", "Every event up to the snapshot date."),
        _float("lifetime_spend", "Every purchase amount up to the snapshot date."),
    ),
    transformation=_customer_select([
        ("days_since_last_event", "CAST(day_number - last_event_day AS BIGINT)"),
        ("days_since_last_visit", "CAST(day_number - last_visit_day AS BIGINT)"),
        ("days_since_last_purchase", "CAST(day_number - last_purchase_day AS BIGINT)"),
        ("tenure_days", "CAST(DATEDIFF(snapshot_date, first_seen) AS BIGINT)"),
        ("lifetime_events", "CAST(lifetime_events AS BIGINT)"),
        ("lifetime_spend", "CAST(lifetime_spend AS DOUBLE)"),
    ]),
    ttl=timedelta(days=14),
    owner=OWNER,
    description="Recency and tenure: days since the last event, visit and purchase; days since signup.",
    tags=("churn",),
)

customer_trends = FeatureView(
    name="customer_trends",
    entity=CUSTOMER,
    features=(
        _float("events_30d_share_of_90d", "events_30d / events_90d (1/3 = steady; lower = declining)."),
        _float("visits_30d_share_of_90d", "visits_30d / visits_90d."),
        _float("spend_30d_share_of_90d", "spend_30d / spend_90d."),
        _float("events_slope_30d", "(events in the last 30 days - the 30 before) / 30, per day."),
        _float("spend_slope_30d", "(spend in the last 30 days - the 30 before) / 30, per day."),
    ),
    transformation=_customer_select([
        ("events_30d_share_of_90d", _ratio("events_30d", "events_90d")),
        ("visits_30d_share_of_90d", _ratio("visits_30d", "visits_90d")),
        ("spend_30d_share_of_90d", _ratio("spend_30d", "spend_90d")),
        ("events_slope_30d", "CAST(events_30d - events_prev_30d AS DOUBLE) / 30.0"),
        ("spend_slope_30d", "CAST(spend_30d - spend_prev_30d AS DOUBLE) / 30.0"),
    ]),
    ttl=timedelta(days=14),
    owner=OWNER,
    description="Activity trend: the 30-day share of 90-day activity and 30-day-over-30-day slopes.",
    tags=("churn", "trend"),
)

_FRICTION = [
    _int("friction_events_30d", "Support tickets, refunds and missed appointments in 30 days."),
    _int("friction_events_90d", "Support tickets, refunds and missed appointments in 90 days."),
    _int("support_tickets_90d", "Support tickets opened in 90 days."),
    _int("refunds_90d", "Refunded orders in 90 days."),
    _float("refund_amount_90d", "Refunded amount in 90 days."),
    _int("missed_appointments_90d", "Missed appointments in 90 days."),
]
customer_friction = FeatureView(
    name="customer_friction",
    entity=CUSTOMER,
    features=tuple(_FRICTION),
    transformation=_customer_select([
        ("friction_events_30d", "CAST(friction_30d AS BIGINT)"),
        ("friction_events_90d", "CAST(friction_90d AS BIGINT)"),
        *_plain(_FRICTION[2:]),
    ]),
    ttl=timedelta(days=14),
    owner=OWNER,
    description="Negative events: support tickets, refunds and missed appointments.",
    tags=("churn",),
)

_SIGNALS = [
    _int("product_views_30d", "Ecommerce: products viewed in 30 days."),
    _int("cart_updates_30d", "Ecommerce: cart updates in 30 days."),
    _int("appointments_attended_90d", "Healthcare: appointments attended in 90 days."),
    _int("prescriptions_90d", "Healthcare: prescriptions filled in 90 days."),
    _int("lessons_completed_30d", "Education: lessons completed in 30 days."),
    _int("assessments_submitted_30d", "Education: assessments submitted in 30 days."),
    _int("forum_posts_30d", "Education: forum posts in 30 days."),
]
customer_industry_signals = FeatureView(
    name="customer_industry_signals",
    entity=CUSTOMER,
    features=tuple(_SIGNALS),
    transformation=_customer_select(_plain(_SIGNALS)),
    ttl=timedelta(days=14),
    owner=OWNER,
    description="Industry-specific engagement: product views, appointments, prescriptions, lessons, assessments.",
    tags=("churn",),
)

customer_repeat_purchases = FeatureView(
    name="customer_repeat_purchases",
    entity=CUSTOMER,
    features=(
        _int("repeat_purchase_days", "Days with a purchase after the first one (BG/NBD x; null: never bought)."),
        _int("purchase_span_days", "Days from the first to the last purchase (BG/NBD t_x)."),
        _int("days_since_first_purchase", "Days from the first purchase to the snapshot (BG/NBD T)."),
    ),
    transformation=_customer_select([
        ("repeat_purchase_days",
         "CAST(CASE WHEN lifetime_purchase_days > 0 THEN lifetime_purchase_days - 1 END AS BIGINT)"),
        ("purchase_span_days", "CAST(last_purchase_day - first_purchase_day AS BIGINT)"),
        ("days_since_first_purchase", "CAST(day_number - first_purchase_day AS BIGINT)"),
    ]),
    ttl=timedelta(days=14),
    owner=OWNER,
    description="Repeat-purchase summary (frequency, recency span, age) that the BG/NBD customer-base model reads.",
    tags=("churn",),
)

tenant_context = FeatureView(
    name="tenant_context",
    entity=TENANT,
    features=(
        _int("tenant_active_customers_30d", "Customers of the tenant with an event in the last 30 days."),
        _int("tenant_active_customers_prev_30d", "Customers with an event in the 30 days before those."),
        _float("tenant_growth_30d", "Relative change of active customers, 30 days over the previous 30."),
        _int("tenant_new_customers_30d", "Customers first seen in the last 30 days."),
        _int("tenant_events_30d", "Events of all the tenant's customers in the last 30 days."),
    ),
    transformation="""
SELECT tenant_id, snapshot_date, feature_timestamp,
  CAST(SUM(CASE WHEN events_30d > 0 THEN 1 ELSE 0 END) AS BIGINT) AS tenant_active_customers_30d,
  CAST(SUM(CASE WHEN events_prev_30d > 0 THEN 1 ELSE 0 END) AS BIGINT) AS tenant_active_customers_prev_30d,
  CASE WHEN SUM(CASE WHEN events_prev_30d > 0 THEN 1 ELSE 0 END) > 0
       THEN CAST(SUM(CASE WHEN events_30d > 0 THEN 1 ELSE 0 END) AS DOUBLE)
            / SUM(CASE WHEN events_prev_30d > 0 THEN 1 ELSE 0 END) - 1.0 END AS tenant_growth_30d,
  CAST(SUM(CASE WHEN DATEDIFF(snapshot_date, first_seen) < 30 THEN 1 ELSE 0 END) AS BIGINT)
    AS tenant_new_customers_30d,
  CAST(SUM(events_30d) AS BIGINT) AS tenant_events_30d
FROM customer_windows
GROUP BY tenant_id, snapshot_date, feature_timestamp
""",
    ttl=timedelta(days=14),
    owner=OWNER,
    description="Tenant-level context: size (active customers), growth and new customers.",
    tags=("churn", "trend"),
)

FEATURE_VIEWS: tuple[FeatureView, ...] = (
    customer_activity,
    customer_lifecycle,
    customer_trends,
    customer_friction,
    customer_industry_signals,
    customer_repeat_purchases,
    tenant_context,
)
