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

Bronze and quarantine rows expire per tenant by `event_date`. The audit log is one platform table whose
hash chains run per day, so it only ever loses whole days: a day partition expires once it is older than
the longest audit retention of every tenant that has events on it (platform events use the default).
Deleted rows leave the old data files at the next regular vacuum (7 days).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, get_args

from shironzi.audit.log import AUDIT_PARTITION, audit, audit_table_uri, get_audit_log
from shironzi.errors import InvalidInputError
from shironzi.lake.delta import append, delete, read_arrow, sql_literal, table_exists
from shironzi.lake.discovery import discover_tables
from shironzi.lake.paths import platform_uri
from shironzi.observability import stage
from shironzi.settings import get_settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.registry import get_registry

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


def enforce_retention(
    *,
    now: dt.datetime | None = None,
    ctx: TenantContext | None = None,
    tenants: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Delete expired bronze/quarantine rows per tenant and expired audit days; one audit event per
    tenant enforcement (and one for the audit log). Returns what was deleted."""
    ctx = ctx or TenantContext.admin(actor="service:retention", purpose="retention")
    ctx.require_admin("enforcing retention")
    today = (now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC).date()
    effective = policies(tenants)
    tables = [t for t in discover_tables(include_platform=False) if t.layer in ("bronze", "quarantine")]
    result: dict[str, Any] = {"tenants": {}, "audit_days_deleted": []}
    with stage("retention.enforce") as summary:
        for tid, policy in sorted(effective.items()):
            deleted: dict[str, int] = {}
            for table in tables:
                if table.tenant_id not in (None, tid):
                    continue
                cutoff = today - dt.timedelta(days=policy.days[table.layer or "bronze"])
                where = f"tenant_id = {sql_literal(tid)} AND event_date < {sql_literal(cutoff)}"
                try:
                    rows = delete(table.uri, where, metadata={"shironzi_purpose": "retention"})
                except InvalidInputError:
                    continue  # a table without tenant_id/event_date is not governed by these policies
                if rows:
                    deleted[table.relative] = rows
            result["tenants"][tid] = deleted
            audit(
                ctx,
                "retention_enforced",
                tenant_id=tid,
                resource="lake",
                details={"policy_days": dict(policy.days), "deleted": deleted, "as_of": today.isoformat()},
            )
            summary.rows += sum(deleted.values())
        result["audit_days_deleted"] = _expire_audit_days(today, effective, ctx)
    return result


def _expire_audit_days(
    today: dt.date, effective: Mapping[str, RetentionPolicy], ctx: TenantContext
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
    if expired:
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
