"""Replaying quarantine after a fix: re-validate quarantined records against the CURRENT contracts and tenant
directory, and land the ones that now pass, exactly once.

A runbook in code (`shironzi ingest replay-quarantine --reason R --since T [--tenant]`):

1. read the quarantine tables of every region for rows with reason code R quarantined at or after T (one
   tenant's with `--tenant`), minus the rows the replay log already records as replayed;
2. decode and validate their raw payloads again, per original source (so bronze keeps the record's real
   provenance), in chunks;
3. land the rows that pass through `BronzeLander.land`, the same landing as the stream and batch paths:
   bronze drops keys it already holds, so a re-run after a crash between the bronze commit and the replay
   log's commit lands nothing twice; the replay log's rows are the landing's ledger, committed last;
4. rows that still fail stay in quarantine as they are (nothing is quarantined twice) and are tried again by
   the next replay. `quota_exceeded` rows are held back while their tenant's ingest quota is not above the one
   they exceeded (`ingestion.stream.quota.still_over_quota`): raise the quota (plan or settings), then replay.

The replay log (`_platform/ingest/quarantine_replays`) says, per quarantined row, when and by which replay it
was landed; `quarantine_status` joins it to the quarantine tables. Every replay writes one audit event.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from typing import Any

import polars as pl
import pyarrow as pa

from ingestion.bronze import SEQ_COLUMN, UNIT_COLUMN, BronzeLander, LandingBatch, Ledger, Reconciliation
from ingestion.contracts import QUOTA_EXCEEDED, decode_json_records
from ingestion.stream.quota import still_over_quota
from shironzi.audit.log import audit_admin_action
from shironzi.errors import InvalidInputError
from shironzi.lake.delta import read_polars, table_exists
from shironzi.lake.paths import platform_uri
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.registry import get_registry

DEFAULT_CHUNK_ROWS = 50_000
REPLAY_ACTOR = "system:quarantine-replay"
QUARANTINE_KEY = ("quarantine_table", "source", "position", "quarantined_at")

REPLAY_LOG_SCHEMA = pa.schema(
    [
        pa.field("replay_id", pa.string(), nullable=False),
        pa.field("replayed_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("quarantine_table", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("position", pa.string(), nullable=False),
        pa.field("quarantined_at", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("reason_code", pa.string(), nullable=False),
        pa.field("tenant_id", pa.string(), nullable=True),
    ]
)


def replay_log_uri(settings: Settings | None = None) -> str:
    """The platform-wide log of quarantined rows that a replay landed."""
    return platform_uri((settings or get_settings()).resolved_lake_uri, "ingest", "quarantine_replays")


def parse_since(text: str) -> datetime:
    """`--since`: an ISO date (midnight UTC) or date-time (UTC unless it says otherwise)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInputError(f"--since must be an ISO date or date-time (2026-01-31, 2026-01-31T08:00), "
                                f"got {text!r}") from None
    if len(text) == 10:  # a bare date
        moment = datetime.combine(date.fromisoformat(text), time(), UTC)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


@dataclass
class ReplayResult:
    """What one replay did. `counts` reconciles the records that passed (landed + duplicates)."""

    replay_id: str
    reason: str
    since: datetime
    tenant_id: str | None
    selected: int = 0  # quarantined rows matching the selection
    already_replayed: int = 0  # ... that an earlier replay landed (skipped)
    still_failing: dict[str, int] = field(default_factory=dict)  # reason code now -> rows left in quarantine
    counts: Reconciliation = field(default_factory=Reconciliation)

    @property
    def replayed(self) -> int:
        """Rows that pass now: landed, or found already in bronze (landed by an interrupted replay)."""
        return self.counts.received

    def as_dict(self) -> dict[str, Any]:
        return {
            "replay_id": self.replay_id, "reason": self.reason, "since": self.since.isoformat(),
            "tenant_id": self.tenant_id, "selected": self.selected, "already_replayed": self.already_replayed,
            "replayed": self.replayed, "landed": self.counts.landed, "duplicates": self.counts.duplicates,
            "still_failing": dict(self.still_failing),
        }


def _quarantine_tables(lander: BronzeLander, settings: Settings) -> list[str]:
    uris = [lander.quarantine_uri(region) for region in settings.regions]
    return [uri for uri in uris if table_exists(uri, storage_options=settings.storage_options)]


def _replayed_keys(settings: Settings) -> pl.DataFrame:
    uri = replay_log_uri(settings)
    if not table_exists(uri, storage_options=settings.storage_options):
        return pl.DataFrame(schema={"quarantine_table": pl.String, "source": pl.String, "position": pl.String,
                                    "quarantined_at": pl.Datetime("us", "UTC")})
    return read_polars(uri, columns=list(QUARANTINE_KEY), storage_options=settings.storage_options)


def select_quarantined(
    *, reason: str, since: datetime, tenant_id: str | None = None, settings: Settings | None = None,
    lander: BronzeLander | None = None,
) -> pl.DataFrame:
    """The quarantined rows a replay of (`reason`, `since`, `tenant_id`) considers, with `quarantine_table`
    and `replayed` (True when the replay log already holds them)."""
    settings = settings or get_settings()
    lander = lander or BronzeLander(settings=settings)
    filters: list[tuple[str, str, Any]] = [
        ("reason_code", "=", reason), ("event_date", ">=", since.date()),
    ]
    if tenant_id is not None:
        filters.append(("tenant_id", "=", tenant_id))
    parts = []
    for uri in _quarantine_tables(lander, settings):
        rows = read_polars(uri, filters=filters, storage_options=settings.storage_options)
        rows = rows.filter(pl.col("quarantined_at") >= since)
        parts.append(rows.with_columns(pl.lit(uri).alias("quarantine_table")))
    if not parts:
        return pl.DataFrame()
    selected = pl.concat(parts, how="vertical_relaxed")
    done = _replayed_keys(settings).unique().with_columns(pl.lit(True).alias("replayed"))
    selected = selected.join(done, on=list(QUARANTINE_KEY), how="left")
    return selected.with_columns(pl.col("replayed").fill_null(False))


def replay_quarantine(
    *,
    reason: str,
    since: datetime,
    tenant_id: str | None = None,
    settings: Settings | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_progress: Callable[[int, int], None] | None = None,
) -> ReplayResult:
    """Re-validate the selected quarantined rows and land those that pass, exactly once (module docstring).
    `tenant_id`: a slug or an id. `on_progress(done, total)` is called after each chunk."""
    if not reason:
        raise InvalidInputError("--reason is required (a quarantine reason code, e.g. unknown_event_type)")
    if chunk_rows < 1:
        raise InvalidInputError("chunk_rows must be >= 1")
    settings = settings or get_settings()
    lander = BronzeLander(settings=settings)
    if tenant_id is not None:  # a slug or an id; an unknown one is a TenantNotFoundError
        tenant_id = get_registry(settings).get_tenant(tenant_id).id
    result = ReplayResult(replay_id=uuid.uuid4().hex, reason=reason, since=since, tenant_id=tenant_id)
    with stage("quarantine_replay", reason=reason, tenant_id=tenant_id) as summary:
        selected = select_quarantined(reason=reason, since=since, tenant_id=tenant_id, settings=settings,
                                      lander=lander)
        result.selected = selected.height
        todo = selected.filter(~pl.col("replayed")) if selected.height else selected
        result.already_replayed = result.selected - todo.height
        if reason == QUOTA_EXCEEDED and todo.height:  # held back until the tenant's ingest quota has risen
            held = still_over_quota(todo, lander.tenants, settings=settings)
            if held.any():
                result.still_failing[QUOTA_EXCEEDED] = int(held.sum())
                todo = todo.filter(~held)
        done = 0
        for (source,), rows in (todo.partition_by("source", as_dict=True).items() if todo.height else []):
            for offset in range(0, rows.height, chunk_rows):
                chunk = rows.slice(offset, chunk_rows)
                result.counts.add(_replay_chunk(lander, chunk, str(source), result, settings, first_seq=done))
                done += chunk.height
                if on_progress is not None:
                    on_progress(done, todo.height)
        summary.rows = result.counts.landed
        summary.extra.update(selected=result.selected, already_replayed=result.already_replayed,
                             replayed=result.replayed, still_failing=sum(result.still_failing.values()))
    _audit(result)
    return result


def _replay_chunk(
    lander: BronzeLander, chunk: pl.DataFrame, source: str, result: ReplayResult, settings: Settings, *,
    first_seq: int,
) -> Reconciliation:
    """Validate one chunk of one source's quarantined rows and land those that pass (ledger: the replay log)."""
    positions = [str(i) for i in range(chunk.height)]  # unique within the chunk; the originals may repeat
    decoded = decode_json_records(chunk.get_column("raw_payload").to_list(), positions, source=source)
    checked = lander.validate(decoded, source=source)
    unit = f"shironzi-replay-{result.replay_id}"
    origins = pl.DataFrame({"position": positions, UNIT_COLUMN: [unit] * chunk.height,
                            SEQ_COLUMN: list(range(first_seq + 1, first_seq + 1 + chunk.height))},
                           schema={"position": pl.String, UNIT_COLUMN: pl.String, SEQ_COLUMN: pl.Int64})
    full = LandingBatch.build(checked, records=decoded.records.select("tenant_id", "event_id", "position"),
                              origins=origins)
    failing = pl.from_arrow(checked.quarantined.select(["position", "reason_code"]))
    assert isinstance(failing, pl.DataFrame)
    for code, rows in failing.get_column("reason_code").value_counts().iter_rows():
        result.still_failing[code] = result.still_failing.get(code, 0) + rows
    passing = chunk.with_columns(pl.Series("_pos", positions)).filter(
        ~pl.col("_pos").is_in(failing.get_column("position").implode()))
    if passing.is_empty():
        return Reconciliation()
    # Rows that still fail stay in quarantine once: the landing sees only those that pass.
    batch = dataclasses.replace(full, result=dataclasses.replace(
        checked, quarantined=checked.quarantined.slice(0, 0), counts_by_reason={},
        input_rows=checked.input_rows - checked.quarantined.num_rows))
    replayed_at = datetime.now(UTC)

    def ledger_rows(_counts: Reconciliation) -> pa.Table:
        rows = passing.select(
            pl.lit(result.replay_id).alias("replay_id"), pl.lit(replayed_at).cast(pl.Datetime("us", "UTC"))
            .alias("replayed_at"), "quarantine_table", "source", "position", "quarantined_at", "reason_code",
            "tenant_id")
        return rows.to_arrow().cast(REPLAY_LOG_SCHEMA)

    return lander.land(batch, ledger=Ledger(replay_log_uri(settings), ledger_rows),
                       metadata={"shironzi.replay_id": result.replay_id, "shironzi.source": source})


def _audit(result: ReplayResult) -> None:
    ctx = TenantContext.admin(actor=REPLAY_ACTOR, purpose=f"replay quarantine: {result.reason}")
    audit_admin_action(ctx, "quarantine_replayed", tenant_id=result.tenant_id, resource="quarantine:events",
                       details=result.as_dict())


def quarantine_status(
    *, since: datetime, reason: str | None = None, tenant_id: str | None = None, settings: Settings | None = None
) -> pl.DataFrame:
    """Per reason code: rows quarantined since `since`, and how many of them a replay has landed."""
    settings = settings or get_settings()
    lander = BronzeLander(settings=settings)
    filters: list[tuple[str, str, Any]] = [("event_date", ">=", since.date())]
    if reason is not None:
        filters.append(("reason_code", "=", reason))
    if tenant_id is not None:
        filters.append(("tenant_id", "=", tenant_id))
    parts = [
        read_polars(uri, columns=["reason_code", "source", "position", "quarantined_at"], filters=filters,
                    storage_options=settings.storage_options).with_columns(pl.lit(uri).alias("quarantine_table"))
        for uri in _quarantine_tables(lander, settings)
    ]
    empty = pl.DataFrame(schema={"reason_code": pl.String, "quarantined": pl.UInt32, "replayed": pl.UInt32})
    if not parts:
        return empty
    rows = pl.concat(parts, how="vertical_relaxed").filter(pl.col("quarantined_at") >= since)
    done = _replayed_keys(settings).unique().with_columns(pl.lit(True).alias("_replayed"))
    rows = rows.join(done, on=list(QUARANTINE_KEY), how="left")
    return rows.group_by("reason_code").agg(
        pl.len().alias("quarantined"), pl.col("_replayed").fill_null(False).sum().alias("replayed")
    ).sort("reason_code")
