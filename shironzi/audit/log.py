"""The audit log writer: an append-only, hash-chained Delta table with batched, crash-aware writes.

`AuditLog.record(event)` only appends to an in-memory buffer (cheap enough for a request path); a
background thread flushes it every `audit_flush_events` events or `audit_flush_seconds` seconds, and an
`atexit` hook flushes on shutdown. Denied and admin events are flushed synchronously, so a crash cannot
lose them.

Chains: one per day partition. A flush holds a file lock under SHIRONZI_HOME for the whole chain
append (read tail -> assign seq/prev_hash/hash -> commit), so writer processes on one host (or on hosts
sharing the SHIRONZI_HOME volume) extend the chains one after another; the tail is re-read from the
table whenever another process committed since our last flush. Production runs one audit writer
service, or points every writer at the same lock directory on a shared volume.
"""

from __future__ import annotations

import atexit
import datetime as dt
import logging
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from shironzi.audit.events import (
    AUDIT_SCHEMA,
    GENESIS_HASH,
    ActorKind,
    AuditEvent,
    Outcome,
    event_hash,
)
from shironzi.audit.table_identity import lake_identity
from shironzi.errors import LakeError, ShironziError
from shironzi.lake.delta import _try_open, append, read_arrow, table_exists
from shironzi.lake.leases import file_lock, normalise_uri
from shironzi.lake.paths import platform_uri
from shironzi.settings import get_settings
from shironzi.tenancy.context import TenantContext

logger = logging.getLogger("shironzi.audit")

AUDIT_PARTITION = "event_date"


def audit_table_uri(lake_uri: str | None = None) -> str:
    """The one platform audit table."""
    return platform_uri(lake_uri or get_settings().resolved_lake_uri, "audit", "events")


class AuditLog:
    """Buffered, hash-chained writer for one lake's audit table."""

    def __init__(
        self,
        lake_uri: str,
        *,
        home: Path,
        flush_events: int = 500,
        flush_seconds: float = 1.0,
        storage_options: Mapping[str, str] | None = None,
    ) -> None:
        self.uri = audit_table_uri(lake_uri)
        self.flush_events = flush_events
        self.flush_seconds = flush_seconds
        self.storage_options = dict(storage_options) if storage_options is not None else None
        self._chain_lock_path = home / "locks" / "audit-chain.lock"
        self._buffer: list[AuditEvent] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._in_flight = 0
        self._tails: dict[dt.date, tuple[int, str]] = {}
        self._tails_version: int | None = None
        self.flushes = 0

    # --- recording ------------------------------------------------------------------------------------

    def record(self, event: AuditEvent, *, durable: bool | None = None) -> None:
        """Buffer one event; denied/admin events (or `durable=True`) are written before this returns."""
        if not isinstance(event, AuditEvent):
            raise TypeError(f"expected AuditEvent, got {type(event).__name__}")
        sync = event.must_be_durable if durable is None else durable
        with self._lock:
            if self._closed and not sync:
                sync = True
            self._buffer.append(event)
            full = len(self._buffer) >= self.flush_events
            if not sync:
                self._ensure_thread()
                if full:
                    self._wake.notify()
        if sync:
            self.flush()

    def record_many(self, events: Sequence[AuditEvent]) -> None:
        """Write several events (after anything already buffered) in one commit before returning."""
        for event in events:
            if not isinstance(event, AuditEvent):
                raise TypeError(f"expected AuditEvent, got {type(event).__name__}")
        with self._lock:
            self._buffer.extend(events)
        self.flush()

    def pending(self) -> int:
        """Events recorded but not yet committed (buffered or being written)."""
        with self._lock:
            return len(self._buffer) + self._in_flight

    def _ensure_thread(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="shironzi-audit-flush", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while True:
            with self._lock:
                deadline = time.monotonic() + self.flush_seconds
                while not self._closed and len(self._buffer) < self.flush_events:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    self._wake.wait(remaining)
                if self._closed:
                    return
            try:
                self.flush()
            except ShironziError as exc:  # keep the events buffered and retry on the next tick
                logger.error("audit flush failed, will retry: %s", exc)
                time.sleep(min(self.flush_seconds, 1.0))

    # --- writing --------------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write every buffered event now (one Delta commit); returns how many were written."""
        with self._flush_lock:
            with self._lock:
                batch, self._buffer = self._buffer, []
                self._in_flight = len(batch)
            if not batch:
                return 0
            try:
                self._write_chained(batch)
            except BaseException:
                with self._lock:
                    self._buffer[:0] = batch
                raise
            finally:
                with self._lock:
                    self._in_flight = 0
            self.flushes += 1
            return len(batch)

    def close(self) -> None:
        """Flush what is buffered and stop the background thread."""
        with self._lock:
            self._closed = True
            self._wake.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)
        self.flush()

    def _write_chained(self, batch: Sequence[AuditEvent]) -> None:
        rows = [event.to_row() for event in batch]
        with file_lock(self._chain_lock_path, mode="exclusive", timeout=60):
            days = sorted({row["event_date"] for row in rows})
            tails = self._read_tails(days)
            # Chain order within a flush is record order, per day.
            for row in rows:
                seq, prev = tails.get(row["event_date"], (-1, GENESIS_HASH))
                row["seq"] = seq + 1
                row["prev_hash"] = prev
                row["hash"] = event_hash(row)
                tails[row["event_date"]] = (row["seq"], row["hash"])
            table = pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA)
            result = append(
                self.uri,
                table,
                partition_by=AUDIT_PARTITION,
                schema_mode="merge",  # a table written before a column was added gains it
                metadata={"writer": "shironzi.audit"},
                storage_options=self.storage_options,
            )
            self._tails.update(tails)
            self._tails_version = result.version

    def _read_tails(self, days: Iterable[dt.date]) -> dict[dt.date, tuple[int, str]]:
        """(last seq, last hash) per day: from our cache if nobody else committed since, else the table."""
        wanted = list(days)
        handle = _try_open(self.uri, self.storage_options)
        if handle is None:
            self._tails.clear()
            self._tails_version = None
            return {}
        version = handle.version()
        stale: dict[dt.date, tuple[int, str]] = {}
        if version != self._tails_version:
            if self._tails_version is not None and version > self._tails_version:
                stale = dict(self._tails)  # still in the table unless rewritten: a starting point
            self._tails.clear()  # another writer committed since our last flush: re-read
        for day in [d for d in wanted if d in stale]:
            self._advance_tail(day, stale[day], version)
        missing = [d for d in wanted if d not in self._tails]
        if missing:
            table = read_arrow(
                self.uri,
                columns=["event_date", "seq", "hash"],
                filters=[(AUDIT_PARTITION, "in", missing)],
                version=version,
                storage_options=self.storage_options,
            )
            for row in table.sort_by([("seq", "ascending")]).to_pylist():
                self._tails[row["event_date"]] = (row["seq"], row["hash"])
        self._tails_version = version
        found = {d: self._tails[d] for d in wanted if d in self._tails}
        return found

    def _advance_tail(self, day: dt.date, known: tuple[int, str], version: int) -> None:
        """Move a day's cached tail past what other writers appended, reading only the files that can hold
        seq >= the cached one (min/max stats prune the rest: with several API workers flushing every
        second, re-reading the whole day grew with every flush). If the cached tail row is gone or
        differs (the day was rewritten), leave the day to the full read."""
        seq, digest = known
        table = read_arrow(
            self.uri,
            columns=["seq", "hash"],
            filters=[(AUDIT_PARTITION, "=", day), ("seq", ">=", seq)],
            version=version,
            storage_options=self.storage_options,
        )
        hashes = dict(zip(table.column("seq").to_pylist(), table.column("hash").to_pylist(), strict=True))
        if hashes.get(seq) == digest:
            last = max(hashes)
            self._tails[day] = (last, hashes[last])


# --- one writer per lake ------------------------------------------------------------------------------

_logs: dict[str, AuditLog] = {}
_logs_lock = threading.Lock()


def get_audit_log() -> AuditLog:
    """The process's audit writer for the configured lake (created on first use, flushed at exit)."""
    settings = get_settings()
    key = f"{settings.resolved_lake_uri}|{settings.home}"
    log = _logs.get(key)
    if log is None:
        with _logs_lock:
            log = _logs.get(key)
            if log is None:
                log = AuditLog(
                    settings.resolved_lake_uri,
                    home=settings.home,
                    flush_events=settings.audit_flush_events,
                    flush_seconds=settings.audit_flush_seconds,
                    storage_options=settings.storage_options,
                )
                _logs[key] = log
    return log


def flush_all() -> None:
    """Flush every writer of this process (tests, shutdown)."""
    for log in list(_logs.values()):
        try:
            log.flush()
        except ShironziError as exc:
            logger.error("audit flush at exit failed: %s", exc)


def reset_audit_logs() -> None:
    """Flush and forget every writer (tests)."""
    with _logs_lock:
        for log in _logs.values():
            try:
                log.close()
            except ShironziError as exc:
                logger.error("audit flush on reset failed: %s", exc)
        _logs.clear()


atexit.register(flush_all)


# --- helpers the rest of the platform calls ----------------------------------------------------------


def audit(
    ctx: TenantContext,
    action: str,
    *,
    tenant_id: str | None = None,
    resource: str = "",
    outcome: Outcome = "success",
    request_id: str | None = None,
    details: Mapping[str, Any] | None = None,
    actor_kind: ActorKind | None = None,
    durable: bool | None = None,
    subjects: Sequence[str] = (),
) -> AuditEvent:
    """Record what a context did (buffered unless denied/admin); returns the event. `subjects` are the
    pseudonymised ids of the data subjects it disclosed (see `shironzi.audit.disclosures`)."""
    event = AuditEvent.from_context(
        ctx,
        action,
        tenant_id=tenant_id,
        resource=resource,
        outcome=outcome,
        request_id=request_id,
        details=details,
        actor_kind=actor_kind,
        subjects=subjects,
    )
    get_audit_log().record(event, durable=durable)
    return event


def audit_admin_action(
    ctx: TenantContext,
    action: str,
    *,
    tenant_id: str | None,
    resource: str = "registry",
    details: Mapping[str, Any] | None = None,
    outcome: Outcome = "success",
    request_id: str | None = None,
) -> AuditEvent:
    """Record a tenant-administration action synchronously (it is in the table when this returns)."""
    return audit(
        ctx,
        action,
        tenant_id=tenant_id,
        resource=resource,
        outcome=outcome,
        request_id=request_id,
        details=details,
        durable=True,
    )


def _actor_of(ctx_or_actor: TenantContext | str) -> tuple[str, str, bool, str | None]:
    if isinstance(ctx_or_actor, TenantContext):
        tenant = None if ctx_or_actor.is_admin else ctx_or_actor.tenant_id
        return ctx_or_actor.actor, ctx_or_actor.purpose, ctx_or_actor.is_admin, tenant
    return str(ctx_or_actor), "pipeline", False, None


def _inputs(inputs: Iterable[tuple[str, int] | Mapping[str, Any]] | None) -> list[dict[str, Any]]:
    found = []
    for item in inputs or ():
        uri, version = (item["table"], item.get("version")) if isinstance(item, Mapping) else item
        found.append({"table": normalise_uri(str(uri)), "version": None if version is None else int(version)})
    return found


def record_table_write(
    ctx_or_actor: TenantContext | str,
    table_uri: str,
    version: int,
    rows: int,
    run_id: str | None = None,
    *,
    inputs: Iterable[tuple[str, int] | Mapping[str, Any]] | None = None,
    operation: str = "write",
    tenant_id: str | None = None,
    models: Iterable[tuple[str, str | int]] | None = None,
) -> AuditEvent:
    """Record that a pipeline committed `version` of a table (with the input tables+versions it read and, for
    predictions, the (model name, version) pairs that produced the rows)."""
    actor, purpose, is_admin, ctx_tenant = _actor_of(ctx_or_actor)
    event = AuditEvent(
        action="table_write",
        actor=actor,
        tenant_id=tenant_id or ctx_tenant,
        resource=normalise_uri(table_uri),
        purpose=purpose,
        outcome="success",
        actor_kind="service" if not isinstance(ctx_or_actor, TenantContext) else "user",
        is_admin=is_admin,
        request_id=run_id,
        details={
            "version": int(version),
            "rows": int(rows),
            "run_id": run_id,
            "operation": operation,
            "inputs": _inputs(inputs),
            **({"models": [{"model": m, "version": str(v)} for m, v in sorted(set(models))]} if models else {}),
        },
    )
    get_audit_log().record(event)
    return event


def record_training_run(
    ctx_or_actor: TenantContext | str,
    *,
    run_id: str,
    inputs: Iterable[tuple[str, int] | Mapping[str, Any]],
    model_name: str,
    model_version: str | int | None = None,
    tenant_id: str | None = None,
) -> AuditEvent:
    """Record a training run: the feature/training tables (and versions) it read and the model it produced.

    Input tables are recorded by their lake-relative identity (`region/layer/table`), so the event still
    names them after the home moves; `shironzi.audit.table_identity` resolves them."""
    actor, purpose, is_admin, ctx_tenant = _actor_of(ctx_or_actor)
    event = AuditEvent(
        action="training_run",
        actor=actor,
        tenant_id=tenant_id or ctx_tenant,
        resource=f"model:{model_name}",
        purpose=purpose,
        outcome="success",
        is_admin=is_admin,
        request_id=run_id,
        details={
            "run_id": run_id,
            "model": model_name,
            "model_version": None if model_version is None else str(model_version),
            "inputs": [{**i, "table": lake_identity(i["table"])} for i in _inputs(inputs)],
        },
    )
    get_audit_log().record(event)
    return event


def read_audit_events(
    *,
    filters: Sequence[tuple[str, str, Any]] | None = None,
    lake_uri: str | None = None,
    flush: bool = True,
) -> pa.Table:
    """Audit rows (flushing this process's buffer first), ordered by time; empty when none yet."""
    if flush:
        try:
            get_audit_log().flush()
        except ShironziError as exc:
            raise LakeError(f"could not flush the audit buffer before reading: {exc.message}") from exc
    uri = audit_table_uri(lake_uri)
    if not table_exists(uri):
        return AUDIT_SCHEMA.empty_table()
    table = read_arrow(uri, filters=list(filters) if filters else None)
    return table.sort_by([("event_time", "ascending"), ("event_date", "ascending"), ("seq", "ascending")])
