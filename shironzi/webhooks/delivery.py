"""Durable webhook delivery: queue, signed attempts, exponential backoff, dead letters, redelivery.

The delivery log `_platform/webhooks/deliveries` is the queue: one row per state of a delivery (`queued`,
then one row per attempt: `retrying`, `delivered` or `dead`), so a delivery's current state is its row with
the highest `attempt`. A dispatcher pass (`dispatch_due`) reads the open deliveries of the retry window,
posts the ones that are due (a few at a time), and appends every outcome in one commit; the dead ones also go
to `_platform/webhooks/dead_letters` in one commit. Nothing lives only in memory: a dispatcher that dies
leaves its deliveries queued, and the next pass sends them. The same `Idempotency-Key` goes with every
attempt and every redelivery of one event, so receivers de-duplicate what a crash or a redelivery repeats.

    ids = send([NewDelivery(tenant_id, url, "at_risk", payload)])   # queue + first attempt
    dispatch_due()                                                 # later attempts (the `webhooks` CLI loop)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from shironzi.errors import NotFoundError
from shironzi.lake.delta import append, read_polars, table_exists
from shironzi.lake.paths import platform_uri
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from shironzi.tenancy.module_settings import webhook_url_problem
from shironzi.tenancy.registry import get_registry
from shironzi.webhooks.signing import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    IDEMPOTENCY_HEADER,
    PLATFORM_RECEIVER,
    SIGNATURE_HEADER,
    signature_header,
    webhook_secret,
)

if TYPE_CHECKING:
    import polars as pl
    import pyarrow as pa

Status = Literal["queued", "retrying", "delivered", "dead"]
OPEN_STATUSES = ("queued", "retrying")
MAX_BACKOFF_SECONDS = 3600.0
PARALLEL_POSTS = 8
ERROR_CHARS = 300


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """One event for one receiver. `tenant_id` None: a platform receiver (alerts), signed with the platform's
    secret; `idempotency_key` defaults to a new one (pass the event's own id to let receivers de-duplicate)."""

    tenant_id: str | None
    url: str
    event_type: str
    payload: Mapping[str, Any]
    idempotency_key: str | None = None


@dataclass
class DispatchResult:
    attempted: int = 0
    delivered: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    dead: list[str] = field(default_factory=list)


def deliveries_uri(settings: Settings) -> str:
    return platform_uri(settings.resolved_lake_uri, "webhooks", "deliveries")


def dead_letters_uri(settings: Settings) -> str:
    return platform_uri(settings.resolved_lake_uri, "webhooks", "dead_letters")


def _schema() -> pa.Schema:
    import pyarrow as pa

    stamp = pa.timestamp("us", tz="UTC")
    return pa.schema([
        pa.field("delivery_id", pa.string(), nullable=False),
        pa.field("attempt", pa.int64(), nullable=False),  # 0: queued
        pa.field("tenant_id", pa.string()),  # null: a platform receiver
        pa.field("url", pa.string(), nullable=False),
        pa.field("event_type", pa.string(), nullable=False),
        pa.field("idempotency_key", pa.string(), nullable=False),
        pa.field("payload", pa.string(), nullable=False),  # the exact JSON body sent
        pa.field("status", pa.string(), nullable=False),
        pa.field("http_status", pa.int64()),
        pa.field("error", pa.string()),
        pa.field("created_at", stamp, nullable=False),
        pa.field("attempted_at", stamp),
        pa.field("next_attempt_at", stamp),
        pa.field("redelivery_of", pa.string()),
    ])


def _write(uri: str, rows: list[dict[str, Any]], settings: Settings) -> None:
    import pyarrow as pa

    if rows:
        append(uri, pa.Table.from_pylist(rows, schema=_schema()), storage_options=settings.storage_options or None)


def queue(deliveries: Sequence[NewDelivery], *, settings: Settings | None = None,
          redelivery_of: Sequence[str | None] | None = None, hold_seconds: float = 0.0) -> list[str]:
    """Record new deliveries (one commit); returns their ids. A dispatch pass sends them once `hold_seconds`
    have passed (the caller that holds them attempts them itself first)."""
    settings = settings or get_settings()
    now = datetime.now(UTC)
    first_attempt = now + timedelta(seconds=hold_seconds)
    rows: list[dict[str, Any]] = []
    for index, item in enumerate(deliveries):
        rows.append({
            "delivery_id": uuid.uuid4().hex, "attempt": 0, "tenant_id": item.tenant_id, "url": item.url,
            "event_type": item.event_type, "idempotency_key": item.idempotency_key or uuid.uuid4().hex,
            "payload": json.dumps(item.payload, sort_keys=True, default=str), "status": "queued",
            "http_status": None, "error": None, "created_at": now, "attempted_at": None,
            "next_attempt_at": first_attempt,
            "redelivery_of": redelivery_of[index] if redelivery_of else None,
        })
    _write(deliveries_uri(settings), rows, settings)
    return [row["delivery_id"] for row in rows]


def send(deliveries: Sequence[NewDelivery], *, settings: Settings | None = None) -> DispatchResult:
    """Queue deliveries and make their first attempt now (failures stay queued for `dispatch_due`)."""
    settings = settings or get_settings()
    # held back from the dispatcher for the length of this first attempt, so that the two do not both send
    ids = queue(deliveries, settings=settings, hold_seconds=_hold_seconds(settings))
    return dispatch_due(settings=settings, only=ids)


def _hold_seconds(settings: Settings) -> float:
    return 2 * settings.webhook_timeout_seconds + 5


def _current(settings: Settings, *, since: datetime | None = None, delivery_id: str | None = None,
             tenant_id: str | None = None) -> pl.DataFrame:
    """Each delivery's latest row (the log folded), newest deliveries first."""
    import polars as pl

    uri = deliveries_uri(settings)
    if not table_exists(uri, storage_options=settings.storage_options or None):
        return pl.from_arrow(_schema().empty_table())  # type: ignore[return-value]
    filters: list[tuple[str, str, Any]] = []
    if since is not None:
        filters.append(("created_at", ">=", since))
    if delivery_id is not None:
        filters.append(("delivery_id", "=", delivery_id))
    if tenant_id is not None:
        filters.append(("tenant_id", "=", tenant_id))
    frame = read_polars(uri, filters=filters or None, storage_options=settings.storage_options or None)
    attempts = frame.group_by("delivery_id").agg(pl.col("attempt").max().alias("attempts"))
    latest = frame.sort("attempt").group_by("delivery_id").last()
    return latest.drop("attempts", strict=False).join(attempts, on="delivery_id").sort(
        "created_at", descending=True)


def _backoff(settings: Settings, attempt: int) -> float:
    return float(min(settings.webhook_backoff_seconds * 2 ** (attempt - 1), MAX_BACKOFF_SECONDS))


def _post(row: Mapping[str, Any], secrets: Sequence[str], settings: Settings) -> tuple[int | None, str | None]:
    """One signed POST: (HTTP status, error text); a 2xx status and no error is a success."""
    import httpx

    problem = webhook_url_problem(row["url"], prod=settings.env == "prod")
    if problem:
        return None, f"refused: {problem}"
    body = row["payload"].encode()
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "shironzi-webhooks/1",
        SIGNATURE_HEADER: signature_header(secrets, body),
        IDEMPOTENCY_HEADER: row["idempotency_key"],
        EVENT_HEADER: row["event_type"],
        DELIVERY_HEADER: row["delivery_id"],
    }
    try:
        response = httpx.post(row["url"], content=body, headers=headers, timeout=settings.webhook_timeout_seconds,
                              follow_redirects=False)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:ERROR_CHARS]
    if 200 <= response.status_code < 300:
        return response.status_code, None
    return response.status_code, f"HTTP {response.status_code}: {response.text[:200]}"


def _secrets_for(rows: Sequence[Mapping[str, Any]], settings: Settings) -> dict[str | None, list[str]]:
    tenants = sorted({str(r["tenant_id"]) for r in rows if r["tenant_id"] is not None})
    found: dict[str | None, list[str]] = {}
    if tenants:
        found.update(get_registry(settings).webhook_secrets_of(tenants))
    found[None] = [webhook_secret(settings, PLATFORM_RECEIVER, 0)]
    return found


def dispatch_due(*, settings: Settings | None = None, only: Collection[str] | None = None,
                 now: datetime | None = None) -> DispatchResult:
    """Attempt every open delivery that is due (or only the given ids): one commit for all the outcomes."""
    settings = settings or get_settings()
    now = now or datetime.now(UTC)
    window = timedelta(seconds=settings.webhook_retry_window_seconds)
    result = DispatchResult()
    with stage("webhooks:dispatch") as summary:
        import polars as pl

        current = _current(settings, since=now - window - timedelta(hours=1))
        if only is None:
            due = current.filter(pl.col("status").is_in(OPEN_STATUSES) & (pl.col("next_attempt_at") <= now))
        else:  # named deliveries: attempted now, but only once (a first attempt, or a retry that is due)
            due = current.filter(pl.col("status").is_in(OPEN_STATUSES) & pl.col("delivery_id").is_in(list(only))
                                 & ((pl.col("attempts") == 0) | (pl.col("next_attempt_at") <= now)))
        rows = due.to_dicts()
        secrets = _secrets_for(rows, settings)
        with ThreadPoolExecutor(max_workers=PARALLEL_POSTS) as pool:
            outcomes = list(pool.map(lambda r: _post(r, secrets.get(r["tenant_id"], []), settings), rows))
        log_rows, dead_rows = [], []
        for row, (http_status, error) in zip(rows, outcomes, strict=True):
            attempt = int(row["attempts"]) + 1
            attempted_at = datetime.now(UTC)
            next_at = attempted_at + timedelta(seconds=_backoff(settings, attempt))
            status: Status = "delivered" if error is None else (
                "dead" if next_at > row["created_at"] + window else "retrying")
            out = {**{k: row[k] for k in _schema().names}, "attempt": attempt, "status": status,
                   "http_status": http_status, "error": error, "attempted_at": attempted_at,
                   "next_attempt_at": next_at if status == "retrying" else None}
            log_rows.append(out)
            getattr(result, status).append(row["delivery_id"])
            if status == "dead":
                dead_rows.append(out)
        _write(deliveries_uri(settings), log_rows, settings)
        _write(dead_letters_uri(settings), dead_rows, settings)
        result.attempted = len(rows)
        summary.rows = len(rows)
        summary.extra.update(delivered=len(result.delivered), retrying=len(result.retrying), dead=len(result.dead))
    return result


def dispatch_until_settled(*, settings: Settings | None = None, timeout: float = 60.0,
                           only: Collection[str] | None = None) -> DispatchResult:
    """Dispatch passes until no open delivery is left (or `timeout`): the CLI loop and short-backoff tests."""
    settings = settings or get_settings()
    total = DispatchResult()
    deadline = time.monotonic() + timeout
    while True:
        step = dispatch_due(settings=settings, only=only)
        total.attempted += step.attempted
        total.delivered += step.delivered
        total.dead += step.dead
        total.retrying = step.retrying
        pending = open_deliveries(settings=settings, only=only)
        if pending.is_empty() or time.monotonic() >= deadline:
            return total
        soonest: Any = pending["next_attempt_at"].min()
        wait = (soonest - datetime.now(UTC)).total_seconds()
        time.sleep(min(max(wait, 0.01), max(deadline - time.monotonic(), 0.0)))


def open_deliveries(*, settings: Settings | None = None, only: Collection[str] | None = None) -> pl.DataFrame:
    """Deliveries still queued or waiting for a retry."""
    import polars as pl

    settings = settings or get_settings()
    frame = _current(settings).filter(pl.col("status").is_in(OPEN_STATUSES))
    return frame.filter(pl.col("delivery_id").is_in(list(only))) if only is not None else frame


def delivery_log(*, settings: Settings | None = None, tenant_id: str | None = None,
                 delivery_id: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
    """The newest deliveries (one tenant's when given), each with its latest state and `attempts`."""
    settings = settings or get_settings()
    return _current(settings, tenant_id=tenant_id, delivery_id=delivery_id).head(limit).to_dicts()


def attempts_of(delivery_id: str, *, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Every row of one delivery, oldest first (attempt 0 is the queueing)."""
    settings = settings or get_settings()
    uri = deliveries_uri(settings)
    if not table_exists(uri, storage_options=settings.storage_options or None):
        return []
    frame = read_polars(uri, filters=[("delivery_id", "=", delivery_id)],
                        storage_options=settings.storage_options or None)
    return frame.sort("attempt").to_dicts()


def dead_letters(*, settings: Settings | None = None, tenant_id: str | None = None) -> list[dict[str, Any]]:
    settings = settings or get_settings()
    uri = dead_letters_uri(settings)
    if not table_exists(uri, storage_options=settings.storage_options or None):
        return []
    filters = [("tenant_id", "=", tenant_id)] if tenant_id is not None else None
    return read_polars(uri, filters=filters, storage_options=settings.storage_options or None).to_dicts()


def redeliver(delivery_id: str, *, settings: Settings | None = None, tenant_id: str | None = None
              ) -> DispatchResult:
    """Send a delivery again (a dead letter, or one the receiver lost) as a new delivery with the same body and
    idempotency key. With `tenant_id` (a tenant's own call) another tenant's delivery is not found."""
    settings = settings or get_settings()
    found = delivery_log(settings=settings, delivery_id=delivery_id, tenant_id=tenant_id, limit=1)
    if not found:
        raise NotFoundError(f"delivery {delivery_id!r} not found", delivery=delivery_id)
    row = found[0]
    again = NewDelivery(row["tenant_id"], row["url"], row["event_type"], json.loads(row["payload"]),
                        row["idempotency_key"])
    ids = queue([again], settings=settings, redelivery_of=[delivery_id], hold_seconds=_hold_seconds(settings))
    return dispatch_due(settings=settings, only=ids)
