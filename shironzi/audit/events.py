"""Audit events: what one event records, the Delta schema it is stored under, and its chain hash."""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import json
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, get_args

import pyarrow as pa

from shironzi.errors import InvalidInputError

if TYPE_CHECKING:
    from shironzi.tenancy.context import TenantContext

Outcome = Literal["allowed", "denied", "success", "failure"]
ActorKind = Literal["key", "user", "service"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)
ACTOR_KINDS: tuple[str, ...] = get_args(ActorKind)

GENESIS_HASH = "0" * 64
"""The prev_hash of the first event of each day's chain."""

UTC_MICROS = pa.timestamp("us", tz="UTC")
AUDIT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("event_time", UTC_MICROS, nullable=False),
        pa.field("event_date", pa.date32(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("actor", pa.string(), nullable=False),
        pa.field("actor_kind", pa.string(), nullable=False),
        pa.field("is_admin", pa.bool_(), nullable=False),
        pa.field("tenant_id", pa.string(), nullable=True),
        pa.field("action", pa.string(), nullable=False),
        pa.field("resource", pa.string(), nullable=False),
        pa.field("purpose", pa.string(), nullable=False),
        pa.field("outcome", pa.string(), nullable=False),
        pa.field("request_id", pa.string(), nullable=True),
        pa.field("details", pa.string(), nullable=False),
        pa.field("prev_hash", pa.string(), nullable=False),
        pa.field("hash", pa.string(), nullable=False),
        # Added after the first release (tables evolve on the next append): the pseudonymised ids of the
        # data subjects an access disclosed, so an accounting of disclosures reads one column, not the lake.
        pa.field("subjects", pa.list_(pa.string()), nullable=True),
    ]
)
LATE_CHAINED_FIELDS: tuple[str, ...] = ("subjects",)
"""Chained only when set, so events written before the column existed keep their hashes."""
CHAINED_FIELDS: tuple[str, ...] = tuple(
    n for n in AUDIT_SCHEMA.names if n != "hash" and n not in LATE_CHAINED_FIELDS
)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


_ID_PREFIX = os.urandom(4).hex()
_ID_COUNTER = itertools.count()


def new_event_id() -> str:
    """Time-ordered unique id: nanoseconds, a per-process random prefix and a counter (no syscall)."""
    return f"{time.time_ns():016x}{_ID_PREFIX}{next(_ID_COUNTER) & 0xFFFFFF:06x}"


def canonical_json(value: Any) -> str:
    """The one JSON spelling used for hashing and for the stored `details`."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str)


@dataclass(frozen=True)
class AuditEvent:
    """One thing that happened: who did what to which resource, for whom, why, and with what outcome."""

    action: str
    actor: str
    tenant_id: str | None = None
    resource: str = ""
    purpose: str = ""
    outcome: Outcome = "success"
    actor_kind: ActorKind = "service"
    is_admin: bool = False
    request_id: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    event_time: dt.datetime = field(default_factory=utcnow)
    event_id: str = field(default_factory=new_event_id)
    subjects: tuple[str, ...] = ()
    """Pseudonymised ids (`tok_...`) of the data subjects this access disclosed; never clear ids."""

    def __post_init__(self) -> None:
        for name in ("action", "actor"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidInputError(f"an audit event needs a non-empty {name}", field=name)
        if self.outcome not in OUTCOMES:
            raise InvalidInputError(f"audit outcome must be one of {OUTCOMES}, got {self.outcome!r}")
        if self.actor_kind not in ACTOR_KINDS:
            raise InvalidInputError(f"actor_kind must be one of {ACTOR_KINDS}, got {self.actor_kind!r}")
        if self.event_time.tzinfo is None:
            raise InvalidInputError("audit event_time must be timezone-aware (UTC)")
        if self.event_time.tzinfo is not dt.UTC:  # store (and hash) UTC, as the table does
            object.__setattr__(self, "event_time", self.event_time.astimezone(dt.UTC))
        if isinstance(self.subjects, str) or not all(isinstance(s, str) for s in self.subjects):
            raise InvalidInputError("audit subjects must be a sequence of subject tokens", field="subjects")
        object.__setattr__(self, "subjects", tuple(dict.fromkeys(self.subjects)))

    @classmethod
    def from_context(
        cls,
        ctx: TenantContext,
        action: str,
        *,
        tenant_id: str | None = None,
        resource: str = "",
        outcome: Outcome = "success",
        request_id: str | None = None,
        details: Mapping[str, Any] | None = None,
        actor_kind: ActorKind | None = None,
        subjects: Sequence[str] = (),
    ) -> AuditEvent:
        """An event for a TenantContext: its actor, purpose and admin flag; the tenant acted on."""
        tenant = tenant_id if tenant_id is not None else (None if ctx.is_admin else ctx.tenant_id)
        kind: ActorKind = actor_kind or ("key" if ctx.actor.startswith("key:") else "user")
        return cls(
            action=action,
            actor=ctx.actor,
            tenant_id=tenant,
            resource=resource,
            purpose=ctx.purpose,
            outcome=outcome,
            actor_kind=kind,
            is_admin=ctx.is_admin,
            request_id=request_id,
            details=dict(details or {}),
            subjects=tuple(subjects),
        )

    @property
    def must_be_durable(self) -> bool:
        """Denied and admin events are never left in a buffer a crash could lose."""
        return self.outcome == "denied" or self.is_admin

    def to_row(self) -> dict[str, Any]:
        """The stored columns except the chain fields (`seq`, `prev_hash`, `hash`)."""
        return {
            "event_id": self.event_id,
            "event_time": self.event_time,
            "event_date": self.event_time.date(),
            "actor": self.actor,
            "actor_kind": self.actor_kind,
            "is_admin": bool(self.is_admin),
            "tenant_id": self.tenant_id,
            "action": self.action,
            "resource": self.resource,
            "purpose": self.purpose,
            "outcome": self.outcome,
            "request_id": self.request_id,
            "details": canonical_json(dict(self.details)),
            "subjects": list(self.subjects) or None,
        }


def _field_text(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.astimezone(dt.UTC).isoformat(timespec="microseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def event_hash(row: Mapping[str, Any]) -> str:
    """SHA-256 over prev_hash and the canonical serialisation (a JSON array, in CHAINED_FIELDS order)
    of every chained field of the event, then each late field that is set."""
    values = [_field_text(row[name]) for name in CHAINED_FIELDS]
    values += [[name, row[name]] for name in LATE_CHAINED_FIELDS if row.get(name)]
    body = _ENCODER.encode(values)
    return hashlib.sha256(f"{row['prev_hash']}\n{body}".encode()).hexdigest()


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, default=str)
