"""Tenant events and the projection they fold into.

Every change is an immutable row in `tenant_events`. One pure fold (`apply_event`) turns events into the
projection rows (`tenants`, `tenant_modules`, `api_keys`); live writes, bulk provisioning and `rebuild()`
all use it, so the projection is by construction what a replay produces.
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import lru_cache
from operator import itemgetter
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from shironzi.tenancy.keys import random_bytes
from shironzi.tenancy.models import UTCDateTime, api_keys, tenant_events, tenant_modules, tenants

EventType = Literal[
    "tenant_created",
    "plan_changed",
    "module_enabled",
    "module_disabled",
    "module_settings_changed",
    "webhook_secret_rotated",
    "key_issued",
    "key_revoked",
    "suspended",
    "resumed",
    "offboarding_started",
    "tenant_deleted",
    "placement_changed",
    "region_failover_started",
    "region_failed_over",
    "region_failback_started",
    "region_failed_back",
    "channel_changed",
    "rollout_changed",
]
STATUS_AFTER: dict[str, str] = {
    "suspended": "suspended",
    "resumed": "active",
    "offboarding_started": "offboarding",
    "tenant_deleted": "deleted",
}

Row = dict[str, Any]
Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class TenantEvent:
    """One immutable change; `sequence` is its global position in the log (None until stored)."""

    id: str
    tenant_id: str | None
    type: str
    actor: str
    purpose: str
    occurred_at: datetime
    payload: dict[str, Any]
    sequence: int | None = None

    def as_row(self) -> Row:
        return {
            "id": self.id,
            "tenant_id": self.tenant_id,
            "type": self.type,
            "actor": self.actor,
            "purpose": self.purpose,
            "occurred_at": self.occurred_at,
            "payload": self.payload,
        }


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_event_id() -> str:
    """32 hex chars: nanosecond time then 64 random bits, so ids are unique and roughly insert-ordered."""
    return f"{time.time_ns():016x}{random_bytes(8).hex()}"


def new_event(
    type_: EventType,
    *,
    tenant_id: str | None,
    actor: str,
    purpose: str,
    payload: dict[str, Any],
    occurred_at: datetime | None = None,
) -> TenantEvent:
    return TenantEvent(
        id=new_event_id(),
        tenant_id=tenant_id,
        type=type_,
        actor=actor,
        purpose=purpose,
        occurred_at=occurred_at or utcnow(),
        payload=payload,
    )


@dataclass
class ProjectionState:
    """Projection rows held in memory: tenants by id, modules by (tenant, module), keys by prefix."""

    tenants: dict[str, Row] = field(default_factory=dict)
    modules: dict[tuple[str, str], Row] = field(default_factory=dict)
    keys: dict[str, Row] = field(default_factory=dict)

    def copy(self) -> ProjectionState:
        return ProjectionState(
            copy.deepcopy(self.tenants), copy.deepcopy(self.modules), copy.deepcopy(self.keys)
        )

    def enabled_modules(self, tenant_id: str) -> set[str]:
        return {module for (tid, module) in self.modules if tid == tenant_id}


def _iso_or_none(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def apply_event(state: ProjectionState, event: TenantEvent) -> None:
    """Fold one event into the projection (trusting: the command validated it before emitting)."""
    p, tid, at = event.payload, event.tenant_id, event.occurred_at
    kind = event.type
    if kind == "tenant_created":
        assert tid is not None
        state.tenants[tid] = {
            "id": tid,
            "slug": p["slug"],
            "name": p["name"],
            "industry": p["industry"],
            "region": p["region"],
            "plan": p["plan"],
            "placement": p["placement"],
            "status": "active",
            "lake_namespace": p["lake_namespace"],
            "placement_epoch": 0,
            "created_at": at,
            "updated_at": at,
            "channel": "stable",
        }
        for module in p.get("modules", ()):
            state.modules[(tid, module)] = {
                "tenant_id": tid,
                "module": module,
                "enabled_at": at,
                "enabled_by": event.actor,
            }
    elif kind == "plan_changed":
        assert tid is not None
        state.tenants[tid].update(plan=p["to"], updated_at=at)
    elif kind == "placement_changed":  # an online tenant move (shironzi.tenancy.moves)
        assert tid is not None
        state.tenants[tid].update(placement=p["to"], lake_namespace=p["lake_namespace"],
                                  placement_epoch=p["epoch"], updated_at=at)
    elif kind == "module_enabled":
        assert tid is not None
        state.modules[(tid, p["module"])] = {
            "tenant_id": tid,
            "module": p["module"],
            "enabled_at": at,
            "enabled_by": event.actor,
        }
        state.tenants[tid]["updated_at"] = at
    elif kind == "module_disabled":
        assert tid is not None
        state.modules.pop((tid, p["module"]), None)
        state.tenants[tid]["updated_at"] = at
    elif kind in ("module_settings_changed", "webhook_secret_rotated"):  # read from the log (module_settings.py)
        assert tid is not None
        state.tenants[tid]["updated_at"] = at
    elif kind == "channel_changed":
        assert tid is not None
        state.tenants[tid].update(channel=p["to"], updated_at=at)
    elif kind == "rollout_changed":  # a platform event: the rollout row is in `model_rollouts` (channels.py)
        pass
    elif kind in STATUS_AFTER:
        assert tid is not None
        state.tenants[tid].update(status=STATUS_AFTER[kind], updated_at=at)
    elif kind == "key_issued":
        state.keys[p["prefix"]] = {
            "prefix": p["prefix"],
            "tenant_id": tid,
            "key_hash": p["key_hash"],
            "salt": p["salt"],
            "scopes": ",".join(p["scopes"]),
            "label": p.get("label"),
            "created_at": at,
            "created_by": event.actor,
            "expires_at": _iso_or_none(p.get("expires_at")),
            "revoked_at": None,
        }
    elif kind == "key_revoked":
        state.keys[p["prefix"]]["revoked_at"] = at
    elif kind.startswith("region_"):  # DR region changes: their projection is the `regions` table (shironzi.dr)
        pass
    else:
        raise ValueError(f"unknown tenant event type {kind!r}")


# --- reading and writing projection rows -------------------------------------------------------------


def load_state(
    conn: Connection, *, tenant_ids: Iterable[str] = (), prefixes: Iterable[str] = (), lock: bool = False
) -> ProjectionState:
    """The projection rows of some tenants (with their modules) and some keys; `lock` takes row locks."""
    state = ProjectionState()
    tenant_ids, prefixes = sorted(set(tenant_ids)), sorted(set(prefixes))
    if tenant_ids:
        query = sa.select(tenants).where(tenants.c.id.in_(tenant_ids))
        for row in conn.execute(query.with_for_update() if lock else query).mappings():
            state.tenants[row["id"]] = dict(row)
        for row in conn.execute(
            sa.select(tenant_modules).where(tenant_modules.c.tenant_id.in_(tenant_ids))
        ).mappings():
            state.modules[(row["tenant_id"], row["module"])] = dict(row)
    if prefixes:
        query = sa.select(api_keys).where(api_keys.c.prefix.in_(prefixes))
        for row in conn.execute(query.with_for_update() if lock else query).mappings():
            state.keys[row["prefix"]] = dict(row)
    return state


_TABLES: tuple[tuple[str, sa.Table, tuple[str, ...]], ...] = (
    ("tenants", tenants, ("id",)),
    ("modules", tenant_modules, ("tenant_id", "module")),
    ("keys", api_keys, ("prefix",)),
)


def write_diff(conn: Connection, before: ProjectionState, after: ProjectionState) -> None:
    """Make the stored projection go from `before` to `after` (parents inserted first, deleted last)."""
    for attr, table, pk in _TABLES:
        old, new = getattr(before, attr), getattr(after, attr)
        inserts = [row for key, row in new.items() if key not in old]
        if inserts:
            insert_rows(conn, table, inserts)
        for key, row in new.items():
            if key in old and old[key] != row:
                changed = {col: val for col, val in row.items() if old[key].get(col) != val}
                conn.execute(table.update().where(*[table.c[c] == row[c] for c in pk]).values(**changed))
    for attr, table, pk in reversed(_TABLES):
        old, new = getattr(before, attr), getattr(after, attr)
        for key, row in old.items():
            if key not in new:
                conn.execute(table.delete().where(*[table.c[c] == row[c] for c in pk]))


def insert_rows(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Row],
    *,
    chunk_size: int = 20_000,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Bulk insert inside the caller's transaction: COPY on PostgreSQL, driver executemany on SQLite.

    Values are converted column by column here instead of through SQLAlchemy's per-row bind processing,
    which dominates the cost at 100,000s of rows. Every row must carry every inserted column.
    """
    if not rows:
        return
    columns = [c for c in table.columns if not (c.primary_key and c.autoincrement is True)]
    names = [c.name for c in columns]
    dialect = conn.dialect.name
    if dialect not in {"sqlite", "postgresql"}:
        for start in range(0, len(rows), chunk_size):
            conn.execute(table.insert(), list(rows[start : start + chunk_size]))
            if progress:
                progress(len(rows[start : start + chunk_size]))
        return
    getter = itemgetter(*names)
    converters = [(i, fn) for i, c in enumerate(columns) if (fn := _bulk_converter(c, dialect)) is not None]

    def values_of(chunk: Sequence[Row]) -> list[tuple[Any, ...]]:
        values = [getter(row) for row in chunk]
        if not converters:
            return values
        by_column: list[Any] = list(zip(*values, strict=True))
        for index, fn in converters:
            by_column[index] = map(fn, by_column[index])
        return list(zip(*by_column, strict=True))

    if dialect == "postgresql":
        cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        statement = f"COPY {table.name} ({', '.join(names)}) FROM STDIN"
        for start in range(0, len(rows), chunk_size):
            chunk = rows[start : start + chunk_size]
            with cursor.copy(statement) as copy:
                for value in values_of(chunk):
                    copy.write_row(value)
            if progress:
                progress(len(chunk))
        cursor.close()
        return
    if len(rows) > chunk_size:
        conn.exec_driver_sql("PRAGMA cache_size=-131072")  # 128 MiB page cache for big index builds
    statement = f"INSERT INTO {table.name} ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})"
    for start in range(0, len(rows), chunk_size):
        chunk = rows[start : start + chunk_size]
        conn.exec_driver_sql(statement, values_of(chunk))
        if progress:
            progress(len(chunk))


@lru_cache(maxsize=4096)
def _sqlite_datetime(value: datetime | None) -> str | None:
    # The text form SQLAlchemy's SQLite DATETIME type writes and parses (naive UTC, microseconds).
    # Cached: a bulk provisioning stamps every row with the same instant.
    return (
        None if value is None else value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
    )


_compact_json = json.JSONEncoder(separators=(",", ":")).encode


def _bulk_converter(column: sa.Column[Any], dialect: str) -> Callable[[Any], Any] | None:
    kind = column.type
    if isinstance(kind, UTCDateTime):
        return _sqlite_datetime if dialect == "sqlite" else None
    if isinstance(kind, sa.JSON):
        return _compact_json
    return None


def append_events(
    conn: Connection, events: Sequence[TenantEvent], *, progress: Callable[[int], None] | None = None
) -> None:
    insert_rows(conn, tenant_events, [e.as_row() for e in events], progress=progress)


def row_to_event(row: Any) -> TenantEvent:
    return TenantEvent(
        id=row.id,
        tenant_id=row.tenant_id,
        type=row.type,
        actor=row.actor,
        purpose=row.purpose,
        occurred_at=row.occurred_at,
        payload=dict(row.payload),
        sequence=row.sequence,
    )


def replay(conn: Connection, *, batch_size: int = 50_000) -> ProjectionState:
    """Fold the whole event log, in sequence order, into a fresh in-memory projection."""
    state = ProjectionState()
    query = (
        sa.select(tenant_events).order_by(tenant_events.c.sequence).execution_options(yield_per=batch_size)
    )
    result = conn.execute(query)
    for row in result:
        apply_event(state, row_to_event(row))
    return state
