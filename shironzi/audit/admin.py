"""Tenant administration in the audit log: the registry calls `audit_registry_events` after each commit."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from shironzi.audit.events import ActorKind, AuditEvent
from shironzi.audit.log import get_audit_log
from shironzi.errors import ShironziError

if TYPE_CHECKING:
    from shironzi.tenancy.context import TenantContext
    from shironzi.tenancy.events import TenantEvent

logger = logging.getLogger("shironzi.audit")

BULK_THRESHOLD = 1000
"""Above this many registry events in one commit (bulk provisioning) one summary event is recorded."""
_SECRET_FIELDS = frozenset({"key_hash", "salt"})
ACTION_FOR_EVENT: dict[str, str] = {
    "tenant_created": "tenant_provisioned",
    "plan_changed": "tenant_plan_changed",
    "module_enabled": "module_enabled",
    "module_disabled": "module_disabled",
    "key_issued": "api_key_issued",
    "key_revoked": "api_key_revoked",
    "suspended": "tenant_suspended",
    "resumed": "tenant_resumed",
    "offboarding_started": "tenant_offboarding_started",
    "tenant_deleted": "tenant_deleted",
}


def _public(payload: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k not in _SECRET_FIELDS}


def audit_registry_events(ctx: TenantContext, events: Sequence[TenantEvent]) -> None:
    """Record committed registry events (secrets stripped) and flush them before returning.

    A failed audit write does not undo the registry change (it is already committed); the events stay
    buffered, the failure is logged, and the writer's background thread retries them.
    """
    if not events:
        return
    log = get_audit_log()
    kind: ActorKind = "key" if ctx.actor.startswith("key:") else "user"
    if len(events) > BULK_THRESHOLD:
        counts = Counter(e.type for e in events)
        tenants = sorted({e.tenant_id for e in events if e.tenant_id})
        entries = [
            AuditEvent(
                action="tenants_bulk_provisioned",
                actor=ctx.actor,
                actor_kind=kind,
                is_admin=ctx.is_admin,
                purpose=ctx.purpose,
                resource="registry",
                details={"events": dict(counts), "tenants": tenants},
            )
        ]
    else:
        entries = [
            AuditEvent(
                action=ACTION_FOR_EVENT.get(event.type, event.type),
                actor=ctx.actor,
                actor_kind=kind,
                is_admin=ctx.is_admin,
                tenant_id=event.tenant_id,
                resource="registry",
                purpose=ctx.purpose,
                request_id=event.id,
                details=_public(event.payload),
            )
            for event in events
        ]
    try:
        log.record_many(entries)
    except ShironziError as exc:
        logger.error(
            "audit write of %d registry events failed (kept buffered, will retry): %s", len(events), exc
        )
        log._ensure_thread()
