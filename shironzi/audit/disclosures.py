"""An accounting of disclosures (HIPAA §164.528): every access to one data subject's records, from the audit log.

Every door that shows a subject's data records the subject in the `subjects` column of its audit event, in
pseudonymised form (`tok_...`, the HMAC of the id under the tenant's key, as landing tokenises PII), never
in clear: API reads (`api_read`, one token per customer in a batch), dashboard views that listed the subject
(`dashboard_subjects_shown`), exports (`data_exported`) and notifications (`notification_sent`).
`disclosures` answers from that column alone: the audit table is partitioned by day and its files are
clustered by tenant, so a window of one tenant reads only those files, never the lake itself.

Tokens stay linkable to the subject while the tenant's key lives; offboarding destroys the key, and with
it the link.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from shironzi.audit.log import audit, read_audit_events
from shironzi.audit.queries import window_filters
from shironzi.errors import InvalidInputError, KeyDestroyedError, NotFoundError
from shironzi.privacy.phi import stored_customer_ids
from shironzi.privacy.tokens import TOKEN_PATTERN, pseudonym
from shironzi.settings import get_settings
from shironzi.tenancy import get_registry
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.keystore import get_keystore

CHANNEL_OF_ACTION: dict[str, str] = {
    "api_read": "api",
    "dashboard_subjects_shown": "dashboard",
    "data_exported": "export",
    "notification_sent": "notification",
}
"""The audit actions that disclose subjects, and the door each stands for."""
QUERY_ACTION = "disclosures_queried"

_keys: dict[str, tuple[bytes | None, float]] = {}
_keys_lock = threading.Lock()


def _tenant_key(tenant_id: str) -> bytes | None:
    """The tenant's key, cached for the key-cache TTL (a request path must not unwrap it every call);
    None once the key is destroyed."""
    now = time.monotonic()
    cached = _keys.get(tenant_id)
    if cached is not None and cached[1] > now:
        return cached[0]
    try:
        key: bytes | None = get_keystore().get_or_create_key(tenant_id)
    except KeyDestroyedError:
        key = None
    with _keys_lock:
        _keys[tenant_id] = (key, now + get_settings().key_cache_ttl_seconds)
    return key


def forget_tenant_keys() -> None:
    """Drop the cached tenant keys (tests; after a key is destroyed or rotated)."""
    with _keys_lock:
        _keys.clear()


def subject_tokens(tenant_id: str, subject_ids: Iterable[str]) -> tuple[str, ...]:
    """The pseudonymised forms of a tenant's subject ids (ids that already are tokens stay as they are);
    empty when the tenant's key is destroyed (its subjects can no longer be named)."""
    ids = [s for s in dict.fromkeys(subject_ids) if isinstance(s, str) and s]
    if not ids:
        return ()
    key = _tenant_key(tenant_id)
    if key is None:
        return tuple(s for s in ids if TOKEN_PATTERN.match(s))
    return tuple(s if TOKEN_PATTERN.match(s) else pseudonym(key, s) for s in ids)


def record_disclosure(
    ctx: TenantContext,
    action: str,
    *,
    tenant_id: str,
    subject_ids: Sequence[str],
    resource: str,
    details: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    durable: bool | None = None,
) -> None:
    """Audit that `ctx` disclosed these subjects of a tenant (buffered, like every read, unless `durable`):
    dashboards, exports and notifications call it; API routes go through `TenantAccess.audit_read(subjects=...)`."""
    if action not in CHANNEL_OF_ACTION:
        raise InvalidInputError(f"not a disclosure action: {action!r} (one of {sorted(CHANNEL_OF_ACTION)})")
    audit(ctx, action, tenant_id=tenant_id, resource=resource, request_id=request_id, durable=durable,
          details={**(details or {}), "subject_count": len(subject_ids)},
          subjects=subject_tokens(tenant_id, subject_ids))


def _rows_naming(table: pa.Table, tokens: Sequence[str]) -> pa.Table:
    """The rows whose `subjects` list holds one of the tokens."""
    if "subjects" not in table.column_names or table.num_rows == 0:
        return table.slice(0, 0)
    column = table.column("subjects").combine_chunks()
    hits = pc.is_in(pc.list_flatten(column), value_set=pa.array(list(tokens), pa.string()))
    parents = pc.filter(pc.list_parent_indices(column), hits)
    return table.take(pc.unique(parents))


def _entry(row: Mapping[str, Any]) -> dict[str, Any]:
    details = json.loads(row["details"] or "{}")
    return {
        "when": row["event_time"],
        "who": row["actor"],
        "actor_kind": row["actor_kind"],
        "channel": CHANNEL_OF_ACTION.get(row["action"], "other"),
        "purpose": row["purpose"],
        "action": row["action"],
        "what": row["resource"],
        "details": details,
        "outcome": row["outcome"],
        "request_id": row["request_id"],
    }


def _as_stored(tenant_id: str, subject_id: str) -> str:
    """The subject id as the lake and the access events hold it: a clear patient id of a tenant whose contract
    makes the customer id PHI is looked up in its encrypted form (`shironzi.privacy.phi`)."""
    try:
        industry = get_registry().get_tenant(tenant_id).industry
    except NotFoundError:
        return subject_id  # an unknown tenant holds no subject: the answer is empty either way
    (stored,) = stored_customer_ids([tenant_id], [subject_id], industries={tenant_id: industry})
    return stored or subject_id


def disclosures(
    ctx: TenantContext,
    tenant_id: str,
    subject_id: str,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """Every access to one subject of a tenant in a window (when, who, purpose, what), oldest first.

    An unknown subject gives an empty list, not an error. The query itself is audited (durably), and it
    names the subject by token, so it never shows up as a disclosure of the subject."""
    ctx.require_tenant(tenant_id)
    if not isinstance(subject_id, str) or not subject_id.strip():
        raise InvalidInputError("a subject id is required", field="subject")
    start = start if start is None or start.tzinfo else start.replace(tzinfo=dt.UTC)
    end = end if end is None or end.tzinfo else end.replace(tzinfo=dt.UTC)
    filters = window_filters(tenant_id, start, end)
    tokens = subject_tokens(tenant_id, [_as_stored(tenant_id, subject_id.strip())])
    rows = _rows_naming(read_audit_events(filters=filters), tokens) if tokens else None
    entries = [_entry(r) for r in rows.to_pylist()] if rows is not None else []
    entries.sort(key=lambda e: e["when"])
    by_channel: dict[str, int] = {}
    for entry in entries:
        by_channel[entry["channel"]] = by_channel.get(entry["channel"], 0) + 1
    subject = tokens[0] if tokens else None
    audit(ctx, QUERY_ACTION, tenant_id=tenant_id, resource="disclosures", durable=True, request_id=request_id,
          details={"subject": subject, "from": start, "to": end, "found": len(entries)})
    return {"tenant_id": tenant_id, "subject": subject, "start": start, "end": end,
            "count": len(entries), "by_channel": by_channel, "disclosures": entries}


__all__: Sequence[str] = (
    "CHANNEL_OF_ACTION", "disclosures", "forget_tenant_keys", "record_disclosure", "subject_tokens"
)
