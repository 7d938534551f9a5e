"""The SQL connector: incremental loads of a database table or query (any SQLAlchemy URL) into bronze.

The watermark column (integer, or timestamp/date) is the unit's sequence number: each row's seq is its
watermark (timestamps as epoch microseconds), every data commit carries the txn
`shironzi-sql-<sha(source)[:16]>` at the highest watermark it covers, and the watermark row is committed
LAST to `{lake}/_platform/ingest/watermarks` with the same txn. The next run reads rows with a watermark
above the recorded one; after a crash between commits, each table drops the rows at or below its own txn
version. Rows sharing one watermark value always land in the same chunk.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from ingestion.batch.files import BatchRunResult, finish_run, quality_gate
from ingestion.bronze import (
    SEQ_COLUMN,
    UNIT_COLUMN,
    BronzeLander,
    LandingBatch,
    Ledger,
    Reconciliation,
    records_keys,
)
from shironzi.errors import InvalidInputError, ServiceUnavailableError, ShironziError
from shironzi.lake import read_polars, txn_version
from shironzi.lake.paths import platform_uri
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings

if TYPE_CHECKING:
    from shironzi.tenancy.records import TenantInfo

DEFAULT_CHUNK_ROWS = 100_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

WATERMARK_SCHEMA = pa.schema(
    [
        pa.field("source_name", pa.string(), nullable=False),
        pa.field("watermark", pa.int64(), nullable=False),  # epoch microseconds for timestamps
        pa.field("watermark_text", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # "int" or "timestamp"
        pa.field("rows", pa.int64(), nullable=False),
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("committed_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def watermarks_uri(settings: Settings | None = None) -> str:
    return platform_uri((settings or get_settings()).resolved_lake_uri, "ingest", "watermarks")


def sql_app_id(source_name: str) -> str:
    """The Delta txn app id of one SQL source."""
    return "shironzi-sql-" + hashlib.sha256(source_name.encode()).hexdigest()[:16]


def current_watermark(source_name: str, *, settings: Settings | None = None) -> int | None:
    """The last committed watermark of a source (epoch microseconds for timestamps), None before any load."""
    return txn_version(watermarks_uri(settings), sql_app_id(source_name))


def _watermark_seq(column: pl.Series) -> tuple[pl.Series, bool]:
    """The watermark as a non-negative Int64 sequence, and whether it is a timestamp."""
    dtype = column.dtype
    if dtype == pl.String:  # e.g. SQLite keeps timestamps as text
        try:
            column = column.str.to_datetime(time_unit="us", strict=True)
        except pl.exceptions.PolarsError as exc:
            raise InvalidInputError(
                f"watermark column {column.name!r} is text that is not a timestamp; "
                "use an integer or timestamp column"
            ) from exc
        dtype = column.dtype
    if dtype.is_integer():
        seq, is_time = column.cast(pl.Int64), False
    elif isinstance(dtype, pl.Datetime):
        local = column.dt.replace_time_zone("UTC") if dtype.time_zone is None else column
        seq, is_time = local.dt.epoch("us"), True
    elif dtype == pl.Date:
        seq, is_time = column.cast(pl.Datetime("us")).dt.epoch("us"), True
    else:
        raise InvalidInputError(
            f"watermark column {column.name!r} is {dtype}; use an integer or timestamp column"
        )
    if seq.null_count():
        raise InvalidInputError(f"watermark column {column.name!r} has null values")
    if len(seq) and seq.min() < 0:  # type: ignore[operator]
        raise InvalidInputError(
            f"watermark column {column.name!r} has negative values (or times before 1970)"
        )
    return seq, is_time


def _bind_value(watermark: int, is_time: bool) -> Any:
    if not is_time:
        return watermark
    from datetime import timedelta

    return (_EPOCH + timedelta(microseconds=watermark)).replace(tzinfo=None)


def _read_new_rows(
    url: str, selectable: str, watermark: str, last: int | None, is_time: bool | None
) -> pl.DataFrame:
    column = '"' + watermark.replace('"', '""') + '"'
    sql = f"SELECT * FROM ({selectable}) AS src"
    params: dict[str, Any] = {}
    if last is not None:
        sql += f" WHERE {column} > :last"
        params["last"] = _bind_value(last, bool(is_time))
    sql += f" ORDER BY {column}"
    frame = fetch_frame(url, sql, params)
    if watermark not in frame.columns:
        raise InvalidInputError(f"watermark column {watermark!r} is not in the source's columns {frame.columns}")
    return frame


def fetch_frame(url: str, sql: str, params: Mapping[str, Any] | None = None) -> pl.DataFrame:
    """The rows of one query on a SQLAlchemy URL, as a frame (one readable error when it cannot run)."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(url)
    except Exception as exc:  # noqa: BLE001 - bad URL or missing driver
        raise InvalidInputError(f"invalid database URL for the SQL connector: {exc}") from exc
    try:
        with engine.connect() as conn:
            result = conn.execute(sa.text(sql), dict(params or {}))
            names = list(result.keys())
            rows = result.fetchall()
    except sa.exc.OperationalError as exc:
        raise ServiceUnavailableError(f"cannot query the source database: {exc.orig}") from exc
    except sa.exc.SQLAlchemyError as exc:
        raise InvalidInputError(f"the source query failed: {exc}") from exc
    finally:
        engine.dispose()
    return pl.DataFrame([list(r) for r in rows], schema=names, orient="row", infer_schema_length=None)


def ingest_sql(
    url: str,
    *,
    watermark: str,
    source_name: str,
    table: str | None = None,
    query: str | None = None,
    settings: Settings | None = None,
    tenants: Mapping[str, TenantInfo] | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    check_quality: bool = True,
    backfill: bool = False,
) -> BatchRunResult:
    """Land the rows of `table` (or `query`) whose `watermark` is above the last committed one (`backfill`:
    freshness is judged against the load's own newest event, see `ingestion.quality`)."""
    settings = settings or get_settings()
    if (table is None) == (query is None):
        raise InvalidInputError("give exactly one of table or query")
    if not source_name:
        raise InvalidInputError("a source name is required (it keys the watermark)")
    if table is not None:
        selectable = ".".join('"' + part.replace('"', '""') + '"' for part in table.split("."))
        selectable = f"SELECT * FROM {selectable}"
    else:
        selectable = str(query)
    app = sql_app_id(source_name)
    last = current_watermark(source_name, settings=settings)
    is_time = _last_is_time(source_name, settings) if last is not None else None
    result = BatchRunResult(run_id=uuid.uuid4().hex, source_kind="sql", source_name=source_name)
    gate = quality_gate(check_quality, settings=settings, backfill=backfill, run_id=result.run_id)
    lander = BronzeLander(settings=settings, tenants=tenants, precommit=gate)
    started_at = datetime.now(UTC)
    error: BaseException | None = None
    with stage("ingest_sql", source=source_name) as summary:
        try:
            frame = _read_new_rows(url, selectable, watermark, last, is_time)
            if frame.is_empty():  # nothing new: no column types to check
                frame = frame.with_columns(pl.col(watermark).cast(pl.Int64))
            seq, is_time = _watermark_seq(frame.get_column(watermark))
            if frame.is_empty() and last is not None:
                is_time = _last_is_time(source_name, settings)
            frame = frame.with_columns(seq.alias(SEQ_COLUMN))
            if last is not None:  # drivers compare timestamps loosely (SQLite: as text): re-check exactly
                frame = frame.filter(pl.col(SEQ_COLUMN) > last)
            for chunk, part in enumerate(_chunks(frame, chunk_rows), start=1):
                _land_chunk(
                    part,
                    lander,
                    result,
                    settings=settings,
                    source_name=source_name,
                    app=app,
                    is_time=is_time,
                    watermark=watermark,
                    chunk=chunk,
                )
        except BaseException as exc:
            error = exc
        summary.rows = result.totals.landed
        summary.table_version = result.totals.table_versions or None
        result.seconds = max(0.0, (datetime.now(UTC) - started_at).total_seconds())
    result.positions = {
        "source": source_name,
        "from_watermark": last,
        "to_watermark": current_watermark(source_name, settings=settings),
    }
    if isinstance(error, KeyboardInterrupt | SystemExit):
        raise error
    finish_run(
        result, lander, started_at=started_at, check_quality=check_quality, error=error, settings=settings
    )
    if error is not None:
        if isinstance(error, ShironziError):
            raise error
        raise InvalidInputError(f"SQL ingestion of {source_name!r} failed: {error}") from error
    return result


def _last_is_time(source_name: str, settings: Settings) -> bool:
    rows = read_polars(watermarks_uri(settings), filters=[("source_name", "=", source_name)])
    return rows.sort("watermark").get_column("kind").to_list()[-1] == "timestamp"


def _chunks(frame: pl.DataFrame, chunk_rows: int) -> list[pl.DataFrame]:
    """Split rows (sorted by watermark) into chunks of about `chunk_rows`, never splitting one watermark."""
    if frame.is_empty():
        return []
    seqs = frame.get_column(SEQ_COLUMN).to_list()
    chunks, start = [], 0
    while start < len(seqs):
        end = min(start + chunk_rows, len(seqs))
        while end < len(seqs) and seqs[end] == seqs[end - 1]:
            end += 1
        chunks.append(frame.slice(start, end - start))
        start = end
    return chunks


def _land_chunk(
    part: pl.DataFrame,
    lander: BronzeLander,
    result: BatchRunResult,
    *,
    settings: Settings,
    source_name: str,
    app: str,
    is_time: bool,
    watermark: str,
    chunk: int,
) -> None:
    source = f"sql:{source_name}"
    frame = part.with_columns(
        (pl.lit(f"{source_name}@{chunk}:") + pl.int_range(1, part.height + 1).cast(pl.String)).alias(
            "position"
        )
    )
    validated = lander.validate(frame.drop(SEQ_COLUMN), source=source)
    origins = frame.select("position", pl.lit(app).alias(UNIT_COLUMN), pl.col(SEQ_COLUMN))
    batch = LandingBatch.build(validated, records=records_keys(frame), origins=origins)
    top = int(part.get_column(SEQ_COLUMN).max())  # type: ignore[arg-type]
    top_text = str(part.get_column(watermark).max())

    def watermark_rows(counts: Reconciliation) -> pa.Table:
        return pa.Table.from_pylist(
            [
                {
                    "source_name": source_name,
                    "watermark": top,
                    "watermark_text": top_text,
                    "kind": "timestamp" if is_time else "int",
                    "rows": counts.received,
                    "run_id": result.run_id,
                    "committed_at": datetime.now(UTC),
                }
            ],
            schema=WATERMARK_SCHEMA,
        )

    counts = lander.land(
        batch,
        ledger=Ledger(watermarks_uri(settings), watermark_rows),
        metadata={"shironzi.run_id": result.run_id, "shironzi.source": source},
    )
    result.totals.add(counts)
    result.flushes += 1
