"""Retention policies (per industry, with per-tenant overrides) and their enforcement.

Defaults, in days:

| industry   | bronze (raw events) | quarantine | audit log |
|------------|---------------------|------------|-----------|
| ecommerce  | 395 (13 months)     | 90         | 1095 (3 years) |
| saas       | 395                 | 90         | 1095      |
| education  | 1095 (3 years)      | 90         | 1825 (5 years) |
| healthcare | 2190 (6 years)      | 180        | 2190 (6 years, the HIPAA documentation period) |
| finance    | 1825 (5 years)      | 180        | 2555 (7 years) |
| (other)    | 395                 | 90         | 2190      |

Bronze and quarantine rows expire per tenant counted from INGESTION time (`ingested_at`, or
`quarantined_at` in quarantine): when the platform collected the data, not when the event happened.
Regulations tie retention to collection, and a backfill of old history is collected today, so importing
a five-year-old history keeps it for the full retention period. (A table without an ingestion-time
column falls back to `event_date`.) A row expires once its ingestion time is before midnight UTC of
`today - days`.

Enforcement costs O(data), not O(tenants): one read of each table's `tenant_id` and time column, joined
to the `tenant_id -> cutoff` map, counts what expires per tenant; then each table gets ONE delete commit
whose predicate groups the tenants by their cutoff (`(tenant_id IN (...) AND ingested_at < ts) OR ...`),
listing only the tenants that have expired rows. `dry_run=True` returns that plan and changes nothing.
When a run would delete more than `settings.retention_confirm_share` of any tenant's rows in a table, it
stops before deleting anything (`RetentionConfirmationRequired`) unless called with `confirm=True`.

The audit log is one platform table whose hash chains run per day, so it only ever loses whole days: a
day partition expires once it is older than the longest audit retention of every tenant that has events
on it (platform events use the default). Deleted rows leave the old data files at the next regular
vacuum (7 days).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

from shironzi.audit.events import AuditEvent
from shironzi.audit.log import AUDIT_PARTITION, audit, audit_table_uri, get_audit_log
from shironzi.errors import InvalidInputError, InvalidStateError
from shironzi.lake.delta import append, delete, open_table, overwrite, read_arrow, sql_literal, table_exists
from shironzi.lake.discovery import LakeTable, discover_tables
from shironzi.lake.leases import table_lease
from shironzi.lake.paths import platform_uri
from shironzi.observability import stage
from shironzi.settings import get_settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.registry import get_registry

if TYPE_CHECKING:
    import pyarrow as pa

RetentionTarget = Literal["bronze", "quarantine", "audit"]
RETENTION_TARGETS: tuple[str, ...] = get_args(RetentionTarget)

DEFAULT_RETENTION_DAYS: dict[str, dict[str, int]] = {
    "ecommerce": {"bronze": 395, "quarantine": 90, "audit": 1095},
    "saas": {"bronze": 395, "quarantine": 90, "audit": 1095},
    "education": {"bronze": 1095, "quarantine": 90, "audit": 1825},
    "healthcare": {"bronze": 2190, "quarantine": 180, "audit": 2190},
    "finance": {"bronze": 1825, "quarantine": 180, "audit": 2555},
}
FALLBACK_RETENTION_DAYS: dict[str, int] = {"bronze": 395, "quarantine": 90, "audit": 2190}
# When a row was collected, best first: bronze, quarantine, then the event date of tables without either.
TIME_COLUMNS: tuple[str, ...] = ("ingested_at", "quarantined_at", "event_date")


@dataclass(frozen=True)
class RetentionPolicy:
    """How long one tenant's data of each kind is kept (days)."""

    tenant_id: str
    industry: str
    days: Mapping[str, int]


def _overrides_uri() -> str:
    return platform_uri(get_settings().resolved_lake_uri, "audit", "retention_overrides")


def set_retention_override(ctx: TenantContext, tenant_id: str, target: RetentionTarget, days: int) -> None:
    """Keep a tenant's data of one kind for `days` instead of its industry default (audited)."""
    import pyarrow as pa

    ctx.require_admin("changing a retention policy")
    if target not in RETENTION_TARGETS:
        raise InvalidInputError(f"retention target must be one of {RETENTION_TARGETS}, got {target!r}")
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise InvalidInputError(f"retention days must be a positive integer, got {days!r}")
    row = {
        "tenant_id": tenant_id,
        "target": target,
        "days": days,
        "set_at": dt.datetime.now(dt.UTC),
        "set_by": ctx.actor,
    }
    append(_overrides_uri(), pa.Table.from_pylist([row]))
    audit(
        ctx,
        "retention_policy_changed",
        tenant_id=tenant_id,
        resource=f"retention:{target}",
        details={"days": days},
        durable=True,
    )


def _overrides() -> dict[tuple[str, str], int]:
    uri = _overrides_uri()
    if not table_exists(uri):
        return {}
    rows = read_arrow(uri).sort_by("set_at").to_pylist()
    return {(r["tenant_id"], r["target"]): int(r["days"]) for r in rows}


def policies(tenants: Mapping[str, str] | None = None) -> dict[str, RetentionPolicy]:
    """Every tenant's effective policy: industry defaults, then overrides. `tenants` maps id -> industry
    (default: the registry's directory)."""
    if tenants is None:
        tenants = {tid: info.industry for tid, info in get_registry().tenant_directory(fresh=True).items()}
    overrides = _overrides()
    out = {}
    for tid, industry in tenants.items():
        days = dict(DEFAULT_RETENTION_DAYS.get(industry, FALLBACK_RETENTION_DAYS))
        for target in RETENTION_TARGETS:
            if (tid, target) in overrides:
                days[target] = overrides[(tid, target)]
        out[tid] = RetentionPolicy(tid, industry, days)
    return out


def policy_for(tenant_id: str, *, industry: str | None = None) -> RetentionPolicy:
    """One tenant's effective policy (industry default, then its overrides); the industry comes from the
    registry unless given."""
    if industry is None:
        industry = get_registry().get_tenant(tenant_id).industry
    return policies({tenant_id: industry})[tenant_id]


def _cutoff(today: dt.date, days: int) -> dt.datetime:
    return dt.datetime.combine(today - dt.timedelta(days=days), dt.time(), tzinfo=dt.UTC)


def retention_cutoff(
    tenant_id: str,
    target: RetentionTarget,
    *,
    now: dt.datetime | None = None,
    policy: RetentionPolicy | None = None,
) -> dt.datetime:
    """The instant (UTC) before which a tenant's data of one kind has expired: rows collected earlier are
    deleted by the next enforcement."""
    if target not in RETENTION_TARGETS:
        raise InvalidInputError(f"retention target must be one of {RETENTION_TARGETS}, got {target!r}")
    policy = policy or policy_for(tenant_id)
    today = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()
    return _cutoff(today, policy.days[target])


class RetentionConfirmationRequired(InvalidStateError):
    """An enforcement would delete a larger share of a tenant's rows than the configured threshold."""

    code = "retention_confirmation_required"


@dataclass(frozen=True)
class ExpiringRows:
    """What one enforcement deletes (or would delete) of one tenant in one table."""

    tenant_id: str
    table: str
    uri: str
    column: str
    cutoff: dt.datetime
    expired: int
    total: int

    @property
    def share(self) -> float:
        return self.expired / self.total if self.total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"tenant_id": self.tenant_id, "table": self.table, "column": self.column, "cutoff": self.cutoff,
                "expired": self.expired, "total": self.total, "share": round(self.share, 6)}


def _time_column(names: list[str]) -> str | None:
    return next((c for c in TIME_COLUMNS if c in names), None)


@dataclass
class _TablePlan:
    """What expires in one table: the rows per tenant and the partitions holding them."""

    table: LakeTable
    column: str
    partition_by: list[str]
    cutoffs: pa.Table
    rows: list[ExpiringRows] = field(default_factory=list)
    partitions: list[tuple[Any, ...]] = field(default_factory=list)

    def expired_mask(self, data: pa.Table) -> pa.ChunkedArray:
        """Per row of `data`: is it past its tenant's cutoff? (Tenants without a policy never are.)"""
        import pyarrow as pa
        import pyarrow.compute as pc

        at = pc.index_in(data.column("tenant_id"), value_set=self.cutoffs.column("tenant_id"))
        cutoff = pc.take(self.cutoffs.column("cutoff"), at)
        if pa.types.is_date(data.schema.field(self.column).type):
            cutoff = pc.cast(cutoff, pa.date32())
        return pc.fill_null(pc.less(data.column(self.column), cutoff), False)

    def partition_filter(self) -> list[list[tuple[str, str, Any]]] | None:
        """DNF filters selecting exactly the partitions with expired rows (None: unpartitioned)."""
        if not self.partition_by:
            return None
        if len(self.partition_by) == 1:
            return [[(self.partition_by[0], "in", [values[0] for values in self.partitions])]]
        return [[(c, "=", v) for c, v in zip(self.partition_by, values, strict=True)] for values in self.partitions]


def _plan_table(
    table: LakeTable, cutoffs: pa.Table, storage_options: Mapping[str, str] | None
) -> _TablePlan | None:
    """Count, per tenant of `cutoffs` (tenant_id, cutoff), the table's rows past the cutoff and all its rows:
    one read of `tenant_id`, the time column and the partition columns."""
    import pyarrow as pa
    import pyarrow.compute as pc

    target = open_table(table.uri, storage_options=storage_options)
    names = [f.name for f in target.schema().fields]
    column = _time_column(names)
    if "tenant_id" not in names or column is None:
        return None  # a table without tenant_id or a time column is not governed by these policies
    plan = _TablePlan(table, column, list(target.metadata().partition_columns), cutoffs)
    data = read_arrow(table.uri, columns=list(dict.fromkeys(["tenant_id", column, *plan.partition_by])),
                      storage_options=storage_options)
    expired = plan.expired_mask(data)
    if not pc.any(expired).as_py():
        return plan
    at = pc.index_in(data.column("tenant_id"), value_set=cutoffs.column("tenant_id"))
    counts = (
        pa.table({"tenant_id": data.column("tenant_id"), "expired": pc.cast(expired, "int64"),
                  "cutoff": pc.take(cutoffs.column("cutoff"), at)})
        .group_by("tenant_id").aggregate([("expired", "sum"), ("expired", "count"), ("cutoff", "min")])
        .filter(pc.greater(pc.field("expired_sum"), 0)).sort_by("tenant_id")
    )
    for tid, expired_rows, total, cutoff in zip(*(counts.column(c).to_pylist() for c in (
            "tenant_id", "expired_sum", "expired_count", "cutoff_min")), strict=True):
        plan.rows.append(ExpiringRows(tid, table.relative, table.uri, column, cutoff, int(expired_rows), int(total)))
    if plan.partition_by:
        held = data.filter(expired).select(plan.partition_by).group_by(plan.partition_by).aggregate([])
        plan.partitions = sorted(zip(*(held.column(c).to_pylist() for c in plan.partition_by), strict=True))
    return plan


def _rewrite_without_expired(plan: _TablePlan, storage_options: Mapping[str, str] | None) -> int:
    """One commit: the partitions holding expired rows are replaced by their rows that have not expired.
    Runs under the table's exclusive lease, so no writer adds rows to those partitions meanwhile."""
    import pyarrow.compute as pc

    where = plan.partition_filter()
    with table_lease(plan.table.uri, mode="exclusive"):
        data = read_arrow(plan.table.uri, filters=where, storage_options=storage_options)
        expired = plan.expired_mask(data)
        deleted = int(pc.sum(pc.cast(expired, "int64")).as_py() or 0)
        if deleted:
            overwrite(plan.table.uri, data.filter(pc.invert(expired)), partition_by=plan.partition_by or None,
                      predicate=where, metadata={"shironzi_purpose": "retention"}, storage_options=storage_options)
    return deleted


def plan_retention(
    *, now: dt.datetime | None = None, tenants: Mapping[str, str] | None = None
) -> list[ExpiringRows]:
    """What enforcement would delete now: one entry per tenant and bronze/quarantine table with expired rows."""
    today = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()
    return [row for plan in _plan(today, policies(tenants)) for row in plan.rows]


def _plan(today: dt.date, effective: Mapping[str, RetentionPolicy]) -> list[_TablePlan]:
    import numpy as np
    import pyarrow as pa

    settings = get_settings()
    plans: list[_TablePlan] = []
    for table in discover_tables(include_platform=False):
        if table.layer not in ("bronze", "quarantine"):
            continue
        scope = [table.tenant_id] if table.tenant_id is not None else sorted(effective)
        scope = [t for t in scope if t in effective]
        if not scope:
            continue
        days = np.array([effective[t].days[table.layer] for t in scope], dtype="timedelta64[D]")
        cutoffs = pa.table({
            "tenant_id": pa.array(scope, pa.string()),
            "cutoff": pa.array(np.datetime64(today, "D") - days).cast(pa.timestamp("us")).cast(
                pa.timestamp("us", tz="UTC")),
        })
        plan = _plan_table(table, cutoffs, settings.storage_options)
        if plan is not None and plan.rows:
            plans.append(plan)
    return plans


def _check_threshold(plan: list[ExpiringRows], share: float) -> None:
    over = [row for row in plan if row.share > share]
    if over:
        worst = max(over, key=lambda r: (r.share, r.expired))
        more = f" (and {len(over) - 1} more tenant/table pairs)" if len(over) > 1 else ""
        raise RetentionConfirmationRequired(
            f"retention would delete {worst.share:.0%} of tenant {worst.tenant_id}'s rows in {worst.table} "
            f"({worst.expired} of {worst.total}, more than the {share:.0%} threshold){more}; nothing was "
            "deleted: check with --dry-run, then rerun with --confirm",
            tenant=worst.tenant_id,
        )


def enforce_retention(
    *,
    now: dt.datetime | None = None,
    ctx: TenantContext | None = None,
    tenants: Mapping[str, str] | None = None,
    dry_run: bool = False,
    confirm: bool = False,
) -> dict[str, Any]:
    """Delete expired bronze/quarantine rows (one commit per table) and expired audit days; one audit event
    per tenant with deleted rows, and one for the run. Returns the plan and what was deleted."""
    ctx = ctx or TenantContext.admin(actor="service:retention", purpose="retention")
    ctx.require_admin("enforcing retention")
    today = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()
    effective = policies(tenants)
    settings = get_settings()
    result: dict[str, Any] = {"dry_run": dry_run, "tenants": {}, "audit_days_deleted": [], "commits": {}}
    with stage("retention.enforce", dry_run=dry_run) as summary:
        plans = _plan(today, effective)
        plan = [row for p in plans for row in p.rows]
        result["plan"] = [r.as_dict() for r in plan]
        for row in plan:
            result["tenants"].setdefault(row.tenant_id, {})[row.table] = row.expired
        summary.rows = sum(r.expired for r in plan)
        summary.extra.update(tenants=len(result["tenants"]), tables=len(plans))
        if dry_run:
            result["audit_days_deleted"] = _expire_audit_days(today, effective, ctx, dry_run=True)
            return result
        if not confirm:
            _check_threshold(plan, settings.retention_confirm_share)
        for table_plan in plans:
            result["commits"][table_plan.table.relative] = _rewrite_without_expired(
                table_plan, settings.storage_options
            )
        get_audit_log().record_many([  # one commit for every tenant's event
            AuditEvent.from_context(
                ctx,
                "retention_enforced",
                tenant_id=tid,
                resource="lake",
                details={"policy_days": dict(effective[tid].days), "deleted": deleted_rows,
                         "as_of": today.isoformat(), "counted_from": "ingestion"},
            )
            for tid, deleted_rows in sorted(result["tenants"].items())
        ])
        result["audit_days_deleted"] = _expire_audit_days(today, effective, ctx)
    return result


def _expire_audit_days(
    today: dt.date, effective: Mapping[str, RetentionPolicy], ctx: TenantContext, *, dry_run: bool = False
) -> list[str]:
    """Drop whole audit day partitions older than the longest audit retention of the tenants on them."""
    uri = audit_table_uri()
    get_audit_log().flush()
    if not table_exists(uri):
        return []
    fallback = FALLBACK_RETENTION_DAYS["audit"]
    oldest_possible = today - dt.timedelta(
        days=min([fallback, *(p.days["audit"] for p in effective.values())])
    )
    rows = read_arrow(
        uri, columns=[AUDIT_PARTITION, "tenant_id"], filters=[(AUDIT_PARTITION, "<", oldest_possible)]
    )
    by_day: dict[dt.date, set[str | None]] = {}
    for row in rows.to_pylist():
        by_day.setdefault(row[AUDIT_PARTITION], set()).add(row["tenant_id"])
    expired = []
    for day, tenants in sorted(by_day.items()):
        keep_days = max(
            effective[t].days["audit"] if t is not None and t in effective else fallback for t in tenants
        )
        if day < today - dt.timedelta(days=keep_days):
            expired.append(day)
    if expired and not dry_run:
        where = f"{AUDIT_PARTITION} IN ({', '.join(sql_literal(d) for d in expired)})"
        delete(uri, where, metadata={"shironzi_purpose": "retention"})
        audit(
            ctx,
            "audit_days_expired",
            resource=uri,
            durable=True,
            details={"days": [d.isoformat() for d in expired]},
        )
    return [d.isoformat() for d in expired]
