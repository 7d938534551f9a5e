"""A deterministic simulation of multi-tenant customer activity with a latent churn process.

Vectorised per day over all customers (numpy Generator seeded once), no per-event Python loops.

The model, per customer i and day d:

* **Tenants** get customers from a Zipf-like law (weight ~ rank^-zipf_exponent, ranks shuffled by the seed).
* **Signup**: ~35% of customers exist before the window; the rest sign up during it, with a per-tenant growth
  trend (density ~ exp(g * t / days), g ~ N(0.5, 0.7)).
* **Engagement** e_i,d is an Ornstein-Uhlenbeck process around a baseline that decays with tenure for
  "decliners" (so engagement decays and recovers); **dissatisfaction** f_i,d is a second OU process.
* **Events**: activity ~ Poisson(rate * exp(e) * weekly(d) * yearly(d)), purchases ~ Poisson(rate *
  exp(e + spend_propensity) * season), friction (support tickets, missed appointments, failed assessments)
  ~ Poisson(rate * exp(f)).
* **Churn**: the daily hazard h_i,d = sigmoid(x) with x computed from OBSERVABLE behaviour at the end of day
  d-1 (see `churn_logit`): recency, events in the last 7 and 30 days, spend in the last 90 days, friction
  in the last 30 days, tenure, plus a small unobservable frailty. On the churn day the customer emits the
  terminal event (account_closed, patient_disenrolled, student_withdrew) with probability 0.75, else goes
  silent; afterwards it emits nothing.

Ground truth (written apart from the lake by `write_ground_truth`):

* `customers`: tenant_id, customer_id, industry, signup_date, churn_date (null = still a customer at the
  end), churn_kind ("terminal_event" | "silent" | null), frailty, decliner.
* `churn_snapshots`, every `snapshot_every_days` days, for every customer who has signed up and not
  churned by the END of `snapshot_date` s:
  - `hazard_next_day` = h_i,s+1, the true churn hazard for day s+1 given everything up to the end of s;
  - `churn_probability_30d` = 1 - (1 - hazard_next_day)^30, the oracle's 30-day churn score;
  - `churned_within_30d` = churn_date is in [s+1, s+30];
  - `horizon_complete` = s + 30 <= the last simulated day (only these rows have a trustworthy label).
  The oracle AUC is `roc_auc(churned_within_30d, churn_probability_30d)` over rows with horizon_complete;
  a model scores the same rows using features from events with event_date <= snapshot_date.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl

from ingestion.contracts import RECORD_FIELDS, get_contract
from ingestion.synthetic.bad_records import BAD_KINDS, plan_bad_records
from ingestion.synthetic.laws import EventTypeIndex, churn_logit, pick_codes, sigmoid, tenant_sizes
from ingestion.synthetic.profiles import PROFILES, PropertyContext, profile_for, value_maker
from ingestion.synthetic.sparse import simulate_sparse_buyers, snapshot_rows
from shironzi.errors import InvalidInputError

BURN_IN_DAYS = 90  # simulated before `start` so that behaviour history exists on day 0; nothing is emitted
PRE_EXISTING_SHARE = 0.35
TERMINAL_EVENT_PROBABILITY = 0.75
HORIZON_DAYS = 30
BUYER_KINDS = ("dense", "sparse")
_CUSTOMER_PREFIX = {"ecommerce": "cus_", "healthcare": "pat_", "education": "stu_"}
_MS_PER_DAY = 86_400_000


@dataclass(frozen=True)
class SimTenant:
    """A tenant to simulate: the caller passes real registry tenants."""

    tenant_id: str
    industry: str
    buyers: str = "dense"  # "dense": the engagement/hazard model; "sparse": Pareto/NBD buyers (see `sparse`)


def as_sim_tenants(tenants: Iterable[Any]) -> list[SimTenant]:
    """Accept SimTenant, (tenant_id, industry) tuples, dicts, or registry objects (`id`, `industry`)."""
    out: list[SimTenant] = []
    for item in tenants:
        if isinstance(item, SimTenant):
            out.append(item)
        elif isinstance(item, tuple | list) and len(item) in (2, 3):
            out.append(SimTenant(*(str(v) for v in item)))
        elif isinstance(item, dict):
            out.append(SimTenant(str(item.get("tenant_id") or item.get("id")), str(item["industry"]),
                                 str(item.get("buyers", "dense"))))
        else:
            tenant_id = getattr(item, "tenant_id", None) or getattr(item, "id", None)
            out.append(SimTenant(str(tenant_id), str(item.industry)))
    if not out:
        raise InvalidInputError("simulate needs at least one tenant")
    ids = [t.tenant_id for t in out]
    if len(set(ids)) != len(ids):
        raise InvalidInputError("simulate got the same tenant_id twice")
    for t in out:
        profile_for(t.industry)
        if t.buyers not in BUYER_KINDS:
            raise InvalidInputError(f"tenant {t.tenant_id}: buyers must be one of {', '.join(BUYER_KINDS)}, "
                                    f"not {t.buyers!r}")
    return out


@dataclass(frozen=True)
class Simulation:
    """The output of `simulate`.

    `events`: the valid events, one row each, ordered by event_time: tenant_id, event_id, customer_id,
    event_type, event_time (UTC, microseconds), amount, currency, properties (JSON text), seq (0..n-1).
    `customers`, `snapshots`: ground truth (see the module docstring). `bad_plan`: which events get a bad
    copy of which kind (`seq, kind, variant`), materialised per output format by the emitters.
    """

    events: pl.DataFrame
    customers: pl.DataFrame
    snapshots: pl.DataFrame
    bad_plan: pl.DataFrame
    tenants: list[SimTenant]
    seed: int
    start: date
    days: int
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def end(self) -> date:
        """The last simulated day."""
        return self.start + timedelta(days=self.days - 1)

    def bad_counts(self) -> dict[str, int]:
        """kind -> number of bad records planned."""
        counts = self.bad_plan.group_by("kind").len()
        return dict(sorted(zip(counts["kind"].to_list(), counts["len"].to_list(), strict=True)))


def simulate(
    tenants: Iterable[Any],
    *,
    customers: int | None = None,
    days: int = 365,
    start: date | None = None,
    seed: int = 0,
    target_events: int | None = None,
    zipf_exponent: float = 1.1,
    snapshot_every_days: int = 7,
    bad_share: float = 0.0,
    bad_kinds: Sequence[str] = BAD_KINDS,
) -> Simulation:
    """Simulate `days` days of activity for `customers` customers spread over `tenants`.

    `customers` defaults to 3,000 per tenant. `start` defaults to `days` days before today (so every event
    is in the past). `target_events` scales event rates so the run yields roughly that many events (the
    churn model is normalised by the same scale, so churn behaves alike at every size). `bad_share` of the
    events get a bad copy of one of `bad_kinds` (see `BAD_KINDS`), emitted by the writers.
    """
    sim_tenants = as_sim_tenants(tenants)
    if days < 1:
        raise InvalidInputError("days must be at least 1")
    if snapshot_every_days < 1:
        raise InvalidInputError("snapshot_every_days must be at least 1")
    start = start or (datetime.now(UTC).date() - timedelta(days=days))
    customers = customers if customers is not None else 3_000 * len(sim_tenants)
    rng = np.random.default_rng(seed)

    industries = sorted({t.industry for t in sim_tenants})
    profiles = [PROFILES[i] for i in industries]
    tenant_industry = np.asarray([industries.index(t.industry) for t in sim_tenants], dtype=np.int16)
    sizes = tenant_sizes(len(sim_tenants), customers, zipf_exponent=zipf_exponent, rng=rng)
    tenant_of = np.repeat(np.arange(len(sim_tenants), dtype=np.int32), sizes)
    n = int(sizes.sum())
    ind = tenant_industry[tenant_of]
    customer_number = np.concatenate([np.arange(1, s + 1) for s in sizes]).astype(np.int64)

    # signup: pre-existing customers, then per-tenant growth trends inside the window
    growth = np.clip(rng.normal(0.5, 0.7, size=len(sim_tenants)), -1.5, 2.5)[tenant_of]
    u = rng.random(n)
    in_window = np.where(np.abs(growth) < 1e-6, u * days, days * np.log1p(u * np.expm1(growth)) / growth)
    pre = rng.random(n) < PRE_EXISTING_SHARE
    signup_day = np.where(pre, -BURN_IN_DAYS - rng.integers(0, 365, size=n), np.floor(in_window)).astype(
        np.int32
    )
    sparse = np.asarray([t.buyers == "sparse" for t in sim_tenants])[tenant_of]
    signup_day = np.where(sparse, np.floor(in_window), signup_day).astype(np.int32)  # sparse: first buy in window
    signup_day = np.minimum(signup_day, days - 1)

    # latent traits
    baseline = rng.normal(0.0, 0.5, size=n)
    decliner = rng.random(n) < 0.35
    decay_per_year = np.where(decliner, rng.exponential(1.2, size=n), 0.0)
    spend_propensity = rng.normal(0.0, 0.5, size=n)
    frailty = rng.normal(0.0, 0.25, size=n)
    unhappy_base = rng.normal(0.0, 0.6, size=n)
    engagement = baseline + rng.normal(0.0, 0.5, size=n)
    unhappiness = unhappy_base.copy()

    act_rate = np.asarray([p.activity_rate for p in profiles])[ind]
    buy_rate = np.asarray([p.purchase_rate for p in profiles])[ind]
    fric_rate = np.asarray([p.friction_rate for p in profiles])[ind]
    amount_mu = np.asarray([p.amount_log_mean for p in profiles])[ind]
    amount_scale = np.exp(amount_mu)
    weekly = np.asarray([p.weekly for p in profiles])  # (industries, 7)
    hourly = np.asarray([np.asarray(p.hourly) / np.sum(p.hourly) for p in profiles])
    hourly_cum = np.cumsum(hourly, axis=1)

    rate_scale = 1.0
    if target_events is not None:
        if target_events < 1:
            raise InvalidInputError("target_events must be positive")
        active_days = np.clip(days - np.maximum(signup_day, 0), 0, days).astype(float)
        expected = float(np.sum(active_days * (act_rate + buy_rate + fric_rate))) * 1.25 * 0.8
        rate_scale = target_events / max(expected, 1.0)

    types = EventTypeIndex(industries)
    act_codes, act_cum = types.role_table(industries, "activity")
    buy_codes, buy_cum = types.role_table(industries, "purchase")
    friction_code = np.asarray([types.code[(i, PROFILES[i].friction)] for i in industries], dtype=np.int16)
    failed_flag = np.asarray([PROFILES[i].friction_is_failed_assessment for i in industries])
    signup_code = np.asarray(
        [types.code[(i, get_contract(i).signup_event)] for i in industries], dtype=np.int16
    )
    terminal_code = np.asarray(
        [types.code[(i, get_contract(i).terminal_event)] for i in industries], dtype=np.int16
    )
    refund_codes = {types.code[("ecommerce", "order_refunded")]} if "ecommerce" in industries else set()

    # behaviour history (ring buffers) and state
    buf30 = np.zeros((30, n), dtype=np.int32)
    fric_buf = np.zeros((30, n), dtype=np.int32)
    spend_buf = np.zeros((90, n), dtype=np.float64)
    events_7d = np.zeros(n)
    events_30d = np.zeros(n)
    friction_30d = np.zeros(n)
    spend_90d = np.zeros(n)
    last_event_day = signup_day.astype(np.int64)
    churn_day = np.full(n, np.iinfo(np.int32).max, dtype=np.int64)
    churned = np.zeros(n, dtype=bool)
    silent = np.zeros(n, dtype=bool)

    chunks: list[tuple[np.ndarray, ...]] = []
    snaps: list[tuple[np.ndarray, ...]] = []

    def hazard(day: int) -> np.ndarray:
        return sigmoid(
            churn_logit(
                recency_days=(day - last_event_day).astype(float),
                events_7d=events_7d,
                events_30d=events_30d,
                spend_90d=spend_90d,
                friction_30d=friction_30d,
                tenure_days=(day - signup_day).astype(float),
                frailty=frailty,
                rate_scale=rate_scale,
                amount_scale=amount_scale,
            )
        )

    def emit(day: int, who: np.ndarray, codes: np.ndarray, amounts: np.ndarray, failed: np.ndarray) -> None:
        if day < 0 or who.size == 0:
            return
        hours = (rng.random(who.size)[:, None] > hourly_cum[ind[who]]).sum(axis=1)
        ms = np.minimum(hours, 23) * 3_600_000 + rng.integers(0, 3_600_000, size=who.size)
        chunks.append(
            (
                who.astype(np.int32),
                np.full(who.size, day, dtype=np.int32),
                codes.astype(np.int16),
                ms.astype(np.int64),
                amounts,
                failed,
            )
        )

    for day in range(-BURN_IN_DAYS, days):
        today = start + timedelta(days=day)
        alive = (signup_day <= day) & ~churned & ~sparse
        tenure_years = np.maximum(day - signup_day, 0) / 365.0

        # churn decided from behaviour up to yesterday
        leaving = alive & (rng.random(n) < hazard(day)) & (signup_day < day)
        if leaving.any():
            churned |= leaving
            churn_day[leaving] = day
            leavers = np.flatnonzero(leaving)
            says_goodbye = rng.random(leavers.size) < TERMINAL_EVENT_PROBABILITY
            silent[leavers[~says_goodbye]] = True
            who = leavers[says_goodbye]
            emit(day, who, terminal_code[ind[who]], np.full(who.size, np.nan), np.zeros(who.size, bool))
        alive &= ~leaving

        # latent dynamics
        engagement += 0.05 * (
            baseline - decay_per_year * tenure_years - engagement
        ) + 0.18 * rng.standard_normal(n)
        unhappiness += 0.05 * (unhappy_base - unhappiness) + 0.2 * rng.standard_normal(n)

        season = weekly[ind, today.weekday()] * np.asarray([p.yearly(today) for p in profiles])[ind]
        lam_act = rate_scale * act_rate * np.exp(engagement) * season
        lam_buy = rate_scale * buy_rate * np.exp(engagement + spend_propensity) * season
        lam_fric = rate_scale * fric_rate * np.exp(unhappiness)
        n_act = rng.poisson(lam_act * alive)
        n_buy = rng.poisson(lam_buy * alive)
        n_fric = rng.poisson(lam_fric * alive)
        joining = np.flatnonzero((signup_day == day) & ~sparse)

        emit(
            day,
            joining,
            signup_code[ind[joining]],
            np.full(joining.size, np.nan),
            np.zeros(joining.size, bool),
        )
        who = np.repeat(np.arange(n), n_act)
        emit(
            day,
            who,
            pick_codes(act_codes, act_cum, ind[who], rng.random(who.size)),
            np.full(who.size, np.nan),
            np.zeros(who.size, bool),
        )
        who = np.repeat(np.arange(n), n_buy)
        codes = pick_codes(buy_codes, buy_cum, ind[who], rng.random(who.size))
        amounts = np.round(
            np.exp(amount_mu[who] + 0.35 * spend_propensity[who] + 0.6 * rng.standard_normal(who.size)), 2
        )
        if refund_codes:
            amounts = np.where(np.isin(codes, list(refund_codes)), np.round(amounts * 0.7, 2), amounts)
        emit(day, who, codes, amounts, np.zeros(who.size, bool))
        spend_today = np.bincount(who, weights=amounts, minlength=n)
        who = np.repeat(np.arange(n), n_fric)
        emit(day, who, friction_code[ind[who]], np.full(who.size, np.nan), failed_flag[ind[who]])

        # behaviour history through today
        total = n_act + n_buy + n_fric + (signup_day == day)
        slot30, slot90 = day % 30, day % 90
        events_7d += total - buf30[(day - 7) % 30]
        events_30d += total - buf30[slot30]
        buf30[slot30] = total
        friction_30d += n_fric - fric_buf[slot30]
        fric_buf[slot30] = n_fric
        spend_90d += spend_today - spend_buf[slot90]
        spend_buf[slot90] = spend_today
        last_event_day = np.where(total > 0, day, last_event_day)

        if day >= 0 and (day + 1) % snapshot_every_days == 0:
            who = np.flatnonzero(alive)
            h = hazard(day + 1)[who]
            snaps.append((who.astype(np.int32), np.full(who.size, day, dtype=np.int32), h))

    if sparse.any():
        _add_sparse_buyers(np.flatnonzero(sparse), signup_day, days=days, every=snapshot_every_days,
                           rng=np.random.default_rng([seed, 0x5BA55E]), codes=(signup_code, act_codes, buy_codes),
                           ind=ind, amount_mu=amount_mu, hourly_cum=hourly_cum, chunks=chunks, snaps=snaps,
                           churn_day=churn_day, churned=churned, silent=silent)

    events = _build_events(
        chunks,
        sim_tenants=sim_tenants,
        tenant_of=tenant_of,
        ind=ind,
        industries=industries,
        customer_number=customer_number,
        types=types,
        start=start,
        seed=seed,
        rng_seed=seed,
    )
    tenant_ids = pl.Series([t.tenant_id for t in sim_tenants], dtype=pl.String)
    customer_ids = _customer_ids(sim_tenants, tenant_of, customer_number)
    industry_names = pl.Series(industries, dtype=pl.String)
    start_series = pl.lit(start)
    customers_gt = pl.DataFrame(
        {
            "tenant_id": tenant_ids.gather(tenant_of),
            "customer_id": customer_ids,
            "industry": industry_names.gather(ind),
            "_signup_day": signup_day,
            "_churn_day": np.where(churned, churn_day, 0).astype(np.int32),
            "_churned": churned,
            "_silent": silent,
            "frailty": frailty,
            "decliner": decliner,
        }
    ).select(
        "tenant_id",
        "customer_id",
        "industry",
        (start_series + pl.duration(days=pl.col("_signup_day"))).alias("signup_date"),
        pl.when(pl.col("_churned"))
        .then(start_series + pl.duration(days=pl.col("_churn_day")))
        .alias("churn_date"),
        pl.when(pl.col("_churned"))
        .then(pl.when(pl.col("_silent")).then(pl.lit("silent")).otherwise(pl.lit("terminal_event")))
        .alias("churn_kind"),
        "frailty",
        "decliner",
    )
    snapshots = _build_snapshots(
        snaps,
        churn_day=churn_day,
        days=days,
        start=start,
        tenant_ids=tenant_ids.gather(tenant_of),
        customer_ids=customer_ids,
    )
    bad_plan = plan_bad_records(
        events.height, share=bad_share, kinds=list(bad_kinds), rng=np.random.default_rng([seed, 0xBAD])
    )
    return Simulation(
        events=events,
        customers=customers_gt,
        snapshots=snapshots,
        bad_plan=bad_plan,
        tenants=sim_tenants,
        seed=seed,
        start=start,
        days=days,
        params={
            "customers": n,
            "zipf_exponent": zipf_exponent,
            "rate_scale": rate_scale,
            "snapshot_every_days": snapshot_every_days,
            "bad_share": bad_share,
            "bad_kinds": list(bad_kinds),
            "horizon_days": HORIZON_DAYS,
        },
    )


def _add_sparse_buyers(
    customers: np.ndarray, signup_day: np.ndarray, *, days: int, every: int, rng: np.random.Generator,
    codes: tuple[np.ndarray, np.ndarray, np.ndarray], ind: np.ndarray, amount_mu: np.ndarray,
    hourly_cum: np.ndarray, chunks: list[tuple[np.ndarray, ...]], snaps: list[tuple[np.ndarray, ...]],
    churn_day: np.ndarray, churned: np.ndarray, silent: np.ndarray,
) -> None:
    """The sparse tenants' customers (Pareto/NBD buyers): their events, dropout and ground-truth snapshots."""
    buyers = simulate_sparse_buyers(customers, signup_day[customers].astype(np.int64), days=days, rng=rng)
    dies = buyers.churn_day < days
    churn_day[customers[dies]] = buyers.churn_day[dies]
    churned[customers[dies]] = True
    silent[customers[dies]] = True
    keep = buyers.day < days
    who, day = buyers.who[keep], buyers.day[keep]
    signup_code, act_codes, buy_codes = codes
    first = day == signup_day[who]
    first &= np.r_[True, (who[1:] != who[:-1]) | (day[1:] != day[:-1])]  # one signup per customer
    parts = [(who[first], signup_code[ind[who[first]]], np.full(int(first.sum()), np.nan)),
             (who, act_codes[ind[who], 0], np.full(who.size, np.nan)),
             (who, buy_codes[ind[who], 0],
              np.round(np.exp(amount_mu[who] + 0.6 * rng.standard_normal(who.size)), 2))]
    hour = np.minimum((rng.random(who.size)[:, None] > hourly_cum[ind[who]]).sum(axis=1), 22)
    for offset, (people, code, amounts) in enumerate(parts):
        days_of = day[first] if offset == 0 else day
        hours = hour[first] if offset == 0 else hour
        ms = hours * 3_600_000 + offset * 600_000 + rng.integers(0, 600_000, size=people.size)
        chunks.append((people.astype(np.int32), days_of.astype(np.int32), code.astype(np.int16), ms.astype(np.int64),
                       amounts, np.zeros(people.size, bool)))
    snaps.extend(snapshot_rows(buyers, customers, signup_day[customers], days=days, every=every))


def _customer_ids(
    sim_tenants: list[SimTenant], tenant_of: np.ndarray, customer_number: np.ndarray
) -> pl.Series:
    prefixes = pl.Series([_CUSTOMER_PREFIX.get(t.industry, "cus_") for t in sim_tenants], dtype=pl.String)
    return prefixes.gather(tenant_of) + pl.Series(customer_number).cast(pl.String).str.zfill(7)


def _build_events(
    chunks: list[tuple[np.ndarray, ...]],
    *,
    sim_tenants: list[SimTenant],
    tenant_of: np.ndarray,
    ind: np.ndarray,
    industries: list[str],
    customer_number: np.ndarray,
    types: EventTypeIndex,
    start: date,
    seed: int,
    rng_seed: int,
) -> pl.DataFrame:
    """Concatenate the daily chunks into the ordered events frame with ids, currencies and properties."""
    if chunks:
        who, day, code, ms, amount, failed = (np.concatenate(parts) for parts in zip(*chunks, strict=True))
    else:
        who, day, code, ms = (np.zeros(0, dtype=t) for t in (np.int32, np.int32, np.int16, np.int64))
        amount, failed = np.zeros(0), np.zeros(0, dtype=bool)
    start_us = int(datetime(start.year, start.month, start.day, tzinfo=UTC).timestamp()) * 1_000_000
    time_us = start_us + (day.astype(np.int64) * _MS_PER_DAY + ms) * 1000
    order = np.lexsort((code, who, time_us))
    who, code, time_us, amount, failed = who[order], code[order], time_us[order], amount[order], failed[order]
    seq = np.arange(who.size, dtype=np.int64)

    currencies = pl.Series([PROFILES[i].currency for i in industries], dtype=pl.String)
    events = pl.DataFrame(
        {
            "tenant_id": pl.Series([t.tenant_id for t in sim_tenants], dtype=pl.String).gather(
                tenant_of[who]
            ),
            "event_id": f"evt_{seed:x}_" + pl.Series(seq).cast(pl.String).str.zfill(10),
            "customer_id": _customer_ids(sim_tenants, tenant_of, customer_number).gather(who),
            "event_type": pl.Series(types.names, dtype=pl.String).gather(code),
            "event_time": pl.Series(time_us, dtype=pl.Int64).cast(pl.Datetime("us", "UTC")),
            "amount": pl.Series(amount, dtype=pl.Float64).fill_nan(None),
            "currency": currencies.gather(ind[who]),
            "seq": seq,
        }
    ).with_columns(
        pl.when(pl.col("amount").is_null()).then(None).otherwise(pl.col("currency")).alias("currency")
    )

    parts: list[pl.DataFrame] = []
    for type_code in np.unique(code):
        rows = np.flatnonzero(code == type_code)
        industry, name = types.industry_of[type_code], types.names[type_code]
        ctx = PropertyContext(
            n=rows.size,
            customer_number=customer_number[who[rows]],
            amount=amount[rows],
            failed=failed[rows],
            event_time_us=time_us[rows],
            seq=seq[rows],
        )
        rng = np.random.default_rng([rng_seed, int(type_code), 0x5EED])
        specs = get_contract(industry).event_type(name).properties
        if specs:
            values = pl.DataFrame({p.name: value_maker(p.name, p.type)(rng, ctx) for p in specs})
            props = values.select(pl.struct(pl.all()).struct.json_encode()).to_series()
        else:
            props = pl.Series(["{}"] * rows.size, dtype=pl.String)
        parts.append(pl.DataFrame({"seq": seq[rows], "properties": props.cast(pl.String)}))
    properties = (
        pl.concat(parts).sort("seq")
        if parts
        else pl.DataFrame(schema={"seq": pl.Int64, "properties": pl.String})
    )
    return events.with_columns(properties.get_column("properties")).select(*RECORD_FIELDS, "seq")


def _build_snapshots(
    snaps: list[tuple[np.ndarray, ...]],
    *,
    churn_day: np.ndarray,
    days: int,
    start: date,
    tenant_ids: pl.Series,
    customer_ids: pl.Series,
) -> pl.DataFrame:
    if snaps:
        who, day, h = (np.concatenate(parts) for parts in zip(*snaps, strict=True))
    else:
        who, day, h = np.zeros(0, dtype=np.int32), np.zeros(0, dtype=np.int32), np.zeros(0)
    churn = churn_day[who]
    return pl.DataFrame(
        {
            "tenant_id": tenant_ids.gather(who),
            "customer_id": customer_ids.gather(who),
            "snapshot_date": pl.Series(day, dtype=pl.Int32),
            "hazard_next_day": h,
            "churn_probability_30d": 1.0 - (1.0 - h) ** HORIZON_DAYS,
            "churned_within_30d": (churn > day) & (churn <= day + HORIZON_DAYS),
            "horizon_complete": day + HORIZON_DAYS <= days - 1,
        }
    ).with_columns((pl.lit(start) + pl.duration(days=pl.col("snapshot_date"))).alias("snapshot_date"))
