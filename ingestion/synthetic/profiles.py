"""How customers of each industry behave: which event types play which role, when they happen
(weekly and yearly seasonality, hour of day), what money they move, and how property values look."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date

import numpy as np
import polars as pl

from ingestion.contracts import get_contract
from shironzi.errors import InvalidInputError


@dataclass(frozen=True)
class IndustryProfile:
    """Event roles and rhythms of one industry (event type names come from its contract)."""

    industry: str
    activity: dict[str, float]  # everyday events and their shares
    purchase: dict[str, float]  # amount-carrying events and their shares
    friction: str  # the unhappy event that raises churn risk
    friction_is_failed_assessment: bool  # education: a failed assessment_submitted is the friction event
    weekly: tuple[float, ...]  # Monday..Sunday activity multipliers
    hourly: tuple[float, ...]  # 24 weights for the hour of day
    currency: str
    amount_log_mean: float  # log of the typical amount
    activity_rate: float  # mean daily activity events of an average engaged customer
    purchase_rate: float  # mean daily purchases of an average engaged customer
    friction_rate: float  # mean daily friction events of an average customer

    def yearly(self, day: date) -> float:
        """Yearly seasonality multiplier for one calendar day."""
        doy = day.timetuple().tm_yday
        if self.industry == "ecommerce":  # ramps into Black Friday and December
            return (
                1.0 + 0.45 * np.exp(-(((doy - 335) / 18.0) ** 2)) + 0.1 * np.cos(2 * np.pi * (doy - 20) / 365)
            )
        if self.industry == "education":  # summer break, busy autumn and spring terms
            return (
                1.0
                - 0.55 * np.exp(-(((doy - 205) / 22.0) ** 2))
                + 0.15 * np.exp(-(((doy - 265) / 20.0) ** 2))
            )
        return 1.0 + 0.18 * np.cos(2 * np.pi * (doy - 15) / 365)  # healthcare: winter peak


_EVENING = (1, 1, 1, 1, 1, 2, 3, 4, 5, 6, 6, 7, 8, 7, 6, 6, 7, 8, 10, 12, 12, 10, 6, 3)
_OFFICE = (0.2, 0.1, 0.1, 0.1, 0.2, 0.5, 2, 5, 9, 10, 10, 9, 6, 8, 9, 9, 8, 6, 3, 2, 1.5, 1, 0.5, 0.3)
_STUDY = (1, 0.5, 0.3, 0.2, 0.2, 0.5, 1, 2, 4, 6, 7, 7, 6, 6, 7, 7, 7, 8, 9, 10, 10, 8, 5, 2)

PROFILES: dict[str, IndustryProfile] = {
    "ecommerce": IndustryProfile(
        industry="ecommerce",
        activity={
            "session_started": 0.44,
            "product_viewed": 0.40,
            "cart_updated": 0.14,
            "subscription_changed": 0.02,
        },
        purchase={"order_placed": 0.95, "order_refunded": 0.05},
        friction="support_ticket_opened",
        friction_is_failed_assessment=False,
        weekly=(0.9, 0.9, 0.95, 1.0, 1.1, 1.3, 1.25),
        hourly=_EVENING,
        currency="EUR",
        amount_log_mean=np.log(45.0),
        activity_rate=0.30,
        purchase_rate=0.035,
        friction_rate=0.004,
    ),
    "healthcare": IndustryProfile(
        industry="healthcare",
        activity={"portal_login": 0.55, "appointment_booked": 0.22, "appointment_attended": 0.23},
        purchase={"prescription_filled": 0.65, "claim_submitted": 0.35},
        friction="appointment_missed",
        friction_is_failed_assessment=False,
        weekly=(1.15, 1.15, 1.1, 1.1, 1.05, 0.35, 0.2),
        hourly=_OFFICE,
        currency="USD",
        amount_log_mean=np.log(60.0),
        activity_rate=0.12,
        purchase_rate=0.02,
        friction_rate=0.004,
    ),
    "education": IndustryProfile(
        industry="education",
        activity={
            "lesson_completed": 0.62,
            "course_started": 0.06,
            "forum_post": 0.16,
            "assessment_submitted": 0.16,
        },
        purchase={"payment_made": 1.0},
        friction="assessment_submitted",
        friction_is_failed_assessment=True,
        weekly=(1.15, 1.15, 1.1, 1.05, 0.95, 0.6, 0.7),
        hourly=_STUDY,
        currency="GBP",
        amount_log_mean=np.log(120.0),
        activity_rate=0.35,
        purchase_rate=0.01,
        friction_rate=0.005,
    ),
}


def profile_for(industry: str) -> IndustryProfile:
    """The behaviour profile of an industry; checks it against the industry's contract."""
    if industry not in PROFILES:
        raise InvalidInputError(
            f"no synthetic profile for industry {industry!r}; known: {', '.join(PROFILES)}"
        )
    profile = PROFILES[industry]
    names = set(get_contract(industry).event_type_names)
    used = {*profile.activity, *profile.purchase, profile.friction}
    if not used <= names:
        raise InvalidInputError(
            f"profile {industry} uses event types outside its contract: {sorted(used - names)}"
        )
    return profile


# ---- property values ---------------------------------------------------------------------------------------

ValueMaker = Callable[[np.random.Generator, "PropertyContext"], pl.Series]


@dataclass(frozen=True)
class PropertyContext:
    """What a property value may depend on, for the n events of one event type."""

    n: int
    customer_number: np.ndarray  # int, unique within the tenant
    amount: np.ndarray  # float (NaN when the event carries none)
    failed: np.ndarray  # bool: the friction flavour of the event (a failed assessment)
    event_time_us: np.ndarray  # int64 microseconds since the epoch
    seq: np.ndarray  # int64 global event sequence number


def _choice(options: tuple[str, ...], weights: tuple[float, ...] | None = None) -> ValueMaker:
    p = None if weights is None else np.asarray(weights) / np.sum(weights)

    def make(rng: np.random.Generator, ctx: PropertyContext) -> pl.Series:
        return pl.Series(options, dtype=pl.String).gather(rng.choice(len(options), size=ctx.n, p=p))

    return make


def _id(prefix: str) -> ValueMaker:
    def make(rng: np.random.Generator, ctx: PropertyContext) -> pl.Series:
        return prefix + pl.Series(ctx.seq).cast(pl.String).str.zfill(9)

    return make


def _int(low: int, high: int) -> ValueMaker:
    return lambda rng, ctx: pl.Series(rng.integers(low, high + 1, size=ctx.n), dtype=pl.Int64)


def _float(low: float, high: float) -> ValueMaker:
    return lambda rng, ctx: pl.Series(np.round(rng.uniform(low, high, size=ctx.n), 2), dtype=pl.Float64)


def _bool(p_true: float) -> ValueMaker:
    return lambda rng, ctx: pl.Series(rng.random(ctx.n) < p_true, dtype=pl.Boolean)


_FIRST = (
    "Ada",
    "Bo",
    "Chen",
    "Dara",
    "Eli",
    "Femi",
    "Gita",
    "Hugo",
    "Ines",
    "Jon",
    "Kai",
    "Lena",
    "Mo",
    "Nia",
)
_LAST = ("Okafor", "Silva", "Tanaka", "Novak", "Haddad", "Larsen", "Moreau", "Reyes", "Kowalski", "Singh")


def _full_name(rng: np.random.Generator, ctx: PropertyContext) -> pl.Series:
    first = pl.Series(_FIRST, dtype=pl.String).gather(ctx.customer_number % len(_FIRST))
    last = pl.Series(_LAST, dtype=pl.String).gather((ctx.customer_number // len(_FIRST)) % len(_LAST))
    return first + " " + last


def _email(rng: np.random.Generator, ctx: PropertyContext) -> pl.Series:
    return "user" + pl.Series(ctx.customer_number).cast(pl.String) + "@example.com"


def _phone(rng: np.random.Generator, ctx: PropertyContext) -> pl.Series:
    return "+1-555-" + pl.Series(ctx.customer_number % 10_000_000).cast(pl.String).str.zfill(7)


def _iso(us: np.ndarray) -> pl.Series:
    return pl.Series(us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")).dt.to_string("%Y-%m-%dT%H:%M:%SZ")


def _date_of_birth(rng: np.random.Generator, ctx: PropertyContext) -> pl.Series:
    age_days = 365.25 * (18 + (ctx.customer_number * 7919) % 60)
    return _iso(ctx.event_time_us - (age_days * 86_400 * 1_000_000).astype(np.int64))


def _scheduled_for(rng: np.random.Generator, ctx: PropertyContext) -> pl.Series:
    ahead = rng.integers(1, 30, size=ctx.n) * 86_400 * 1_000_000
    return _iso(ctx.event_time_us + ahead)


def _score(rng: np.random.Generator, ctx: PropertyContext) -> pl.Series:
    passed = rng.uniform(60, 100, size=ctx.n)
    failed = rng.uniform(10, 59, size=ctx.n)
    return pl.Series(np.round(np.where(ctx.failed, failed, passed), 1), dtype=pl.Float64)


def _passed(rng: np.random.Generator, ctx: PropertyContext) -> pl.Series:
    return pl.Series(~ctx.failed, dtype=pl.Boolean)


def _postcode(rng: np.random.Generator, ctx: PropertyContext) -> pl.Series:
    return "PC" + pl.Series(ctx.customer_number % 90_000 + 10_000).cast(pl.String)


# property name -> how its values look (by name, shared across industries); unknown names fall back by type
VALUE_MAKERS: dict[str, ValueMaker] = {
    "email": _email,
    "full_name": _full_name,
    "phone": _phone,
    "date_of_birth": _date_of_birth,
    "signup_channel": _choice(("organic", "ads", "referral", "partner"), (5, 3, 2, 1)),
    "plan": _choice(("basic", "plus", "pro"), (6, 3, 1)),
    "referrer": _choice(("google", "newsletter", "friend", "social")),
    "session_id": _id("ses_"),
    "device": _choice(("web", "ios", "android"), (5, 3, 3)),
    "product_id": lambda rng, ctx: "sku_" + pl.Series(rng.zipf(1.6, size=ctx.n) % 5000).cast(pl.String),
    "category": _choice(("books", "home", "fashion", "electronics", "garden", "toys")),
    "price": _float(3, 250),
    "quantity": _int(1, 5),
    "cart_value": _float(5, 400),
    "order_id": _id("ord_"),
    "item_count": _int(1, 8),
    "payment_method": _choice(("card", "paypal", "bank_transfer", "voucher"), (6, 3, 1, 1)),
    "shipping_postcode": _postcode,
    "refund_reason": _choice(("damaged", "late", "not_as_described", "changed_mind")),
    "from_plan": _choice(("basic", "plus", "pro")),
    "to_plan": _choice(("basic", "plus", "pro")),
    "auto_renew": _bool(0.7),
    "ticket_id": _id("tkt_"),
    "topic": _choice(("delivery", "billing", "product", "account")),
    "priority": _choice(("low", "normal", "high", "urgent"), (3, 5, 2, 1)),
    "reason": _choice(("price", "moved", "service", "no_longer_needed", "other")),
    "closed_by_customer": _bool(0.85),
    "insurance_plan": _choice(("bronze", "silver", "gold", "medicaid")),
    "appointment_id": _id("apt_"),
    "specialty": _choice(("general", "cardiology", "dermatology", "pediatrics", "orthopedics")),
    "scheduled_for": _scheduled_for,
    "duration_minutes": _int(10, 60),
    "notified": _bool(0.6),
    "prescription_id": _id("rx_"),
    "medication_code": lambda rng, ctx: (
        "med_" + pl.Series(rng.integers(100, 999, size=ctx.n)).cast(pl.String)
    ),
    "refill": _bool(0.4),
    "mfa_used": _bool(0.5),
    "claim_id": _id("clm_"),
    "procedure_code": lambda rng, ctx: (
        "cpt_" + pl.Series(rng.integers(10000, 99999, size=ctx.n)).cast(pl.String)
    ),
    "program": _choice(("data_science", "nursing", "design", "business", "languages")),
    "course_id": lambda rng, ctx: (
        "crs_" + pl.Series(ctx.customer_number % 40 + rng.integers(0, 3, size=ctx.n)).cast(pl.String)
    ),
    "modality": _choice(("online", "hybrid", "campus"), (6, 2, 1)),
    "lesson_id": _id("les_"),
    "minutes_spent": _int(5, 90),
    "assessment_id": _id("asm_"),
    "score": _score,
    "passed": _passed,
    "invoice_id": _id("inv_"),
    "installment": _int(1, 12),
    "thread_id": _id("thr_"),
    "post_length": _int(20, 2000),
}

_BY_TYPE: dict[str, ValueMaker] = {
    "string": _id("v_"),
    "int": _int(0, 100),
    "float": _float(0, 100),
    "bool": _bool(0.5),
    "timestamp": lambda rng, ctx: _iso(ctx.event_time_us),
}


def value_maker(name: str, type_: str) -> ValueMaker:
    """How values of a property are generated: by its name, else by its contract type."""
    return VALUE_MAKERS.get(name, _BY_TYPE[type_])
