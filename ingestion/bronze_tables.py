"""One bronze or quarantine Delta table as landing sees it: txn versions per unit, the cached keys of
recent partitions for dedupe, and files written first then committed in one transaction."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pyarrow as pa

from shironzi.errors import CommitConflictError
from shironzi.lake.delta import CHECKPOINT_INTERVAL, Txn, append, read_polars

if TYPE_CHECKING:
    from deltalake import DeltaTable

PARTITION_COLUMN = "event_date"
KEY_COLUMNS = ("tenant_id", "event_id")
UNIT_COLUMN = "_unit"
SEQ_COLUMN = "_seq"
DEFAULT_CACHED_PARTITIONS = 64
COMMIT_ATTEMPTS = 8

log = logging.getLogger("shironzi.ingestion.bronze")


def _ms_floor(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def _ms_ceil(value: datetime) -> str:
    if value.microsecond % 1000:
        value = value + timedelta(microseconds=1000 - value.microsecond % 1000)
    return _ms_floor(value)


def _file_stats(table: pa.Table) -> str:
    """Delta add-action statistics (numRecords, min/max, null counts) for one file's rows."""
    import pyarrow.compute as pc

    mins: dict[str, Any] = {}
    maxs: dict[str, Any] = {}
    nulls: dict[str, int] = {}
    for name in table.column_names:
        column = table.column(name)
        nulls[name] = column.null_count
        kind = column.type
        if not (
            pa.types.is_string(kind)
            or pa.types.is_floating(kind)
            or pa.types.is_integer(kind)
            or pa.types.is_timestamp(kind)
            or pa.types.is_date(kind)
        ):
            continue
        if column.null_count == len(column):
            continue
        bounds = pc.min_max(column).as_py()
        lo, hi = bounds["min"], bounds["max"]
        if pa.types.is_timestamp(kind):
            mins[name], maxs[name] = _ms_floor(lo), _ms_ceil(hi)
        elif pa.types.is_date(kind):
            mins[name], maxs[name] = lo.isoformat(), hi.isoformat()
        elif pa.types.is_floating(kind) and (lo != lo or hi != hi):  # NaN: no usable bounds
            continue
        elif pa.types.is_string(kind) and (len(lo) > 32 or len(hi) > 32):
            continue  # long strings: no bounds rather than truncated ones
        else:
            mins[name], maxs[name] = lo, hi
    return json.dumps(
        {"numRecords": table.num_rows, "minValues": mins, "maxValues": maxs, "nullCount": nulls}
    )


class DataTable:
    """One target Delta table (bronze or quarantine, partitioned by event_date): its txn versions and,
    for bronze, a cache of the keys of recently touched partitions."""

    def __init__(
        self,
        uri: str,
        schema: pa.Schema,
        *,
        dedupe: bool,
        storage_options: Mapping[str, str] | None,
        cached_partitions: int = DEFAULT_CACHED_PARTITIONS,
    ) -> None:
        self.uri = uri
        self.schema = schema
        self.dedupe = dedupe
        self.storage_options = dict(storage_options or {}) or None
        self._handle: DeltaTable | None = None
        self._txns: dict[str, int | None] = {}
        self._keys: OrderedDict[date, pl.DataFrame] = OrderedDict()
        self._cached_partitions = cached_partitions

    @property
    def is_local(self) -> bool:
        return "://" not in self.uri or self.uri.startswith("file://")

    def handle(self, *, create: bool = False) -> DeltaTable | None:
        """The delta-rs table (created empty when asked), refreshed to the latest version."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        if self._handle is None:
            try:
                self._handle = DeltaTable(self.uri, storage_options=self.storage_options)
            except TableNotFoundError:
                if not create:
                    return None
                self._handle = DeltaTable.create(
                    self.uri,
                    self.schema,
                    partition_by=[PARTITION_COLUMN],
                    mode="ignore",
                    configuration={"delta.checkpointInterval": str(CHECKPOINT_INTERVAL)},
                    storage_options=self.storage_options,
                )
        else:
            self._handle.update_incremental()
        return self._handle

    def txn_version(self, unit: str) -> int | None:
        """The highest seq of `unit` already committed to this table (read from the Delta log once)."""
        if unit not in self._txns:
            table = self.handle()
            self._txns[unit] = None if table is None else table.transaction_version(unit)
        return self._txns[unit]

    def drop_recovered(self, rows: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """Rows whose seq is beyond this table's txn for their unit; and how many were already committed."""
        units = rows.get_column(UNIT_COLUMN).unique().to_list()
        done = {u: v for u in units if (v := self.txn_version(u)) is not None}
        if not done:
            return rows, 0
        limit = pl.col(UNIT_COLUMN).replace_strict(done, default=-1, return_dtype=pl.Int64)
        kept = rows.filter(pl.col(SEQ_COLUMN) > limit)
        return kept, rows.height - kept.height

    def _load_keys(self, dates: list[date]) -> None:
        missing = [d for d in dates if d not in self._keys]
        if missing:
            if self.handle() is None:
                loaded = pl.DataFrame(
                    schema={"tenant_id": pl.String, "event_id": pl.String, PARTITION_COLUMN: pl.Date}
                )
            else:
                loaded = read_polars(
                    self.uri,
                    columns=[*KEY_COLUMNS, PARTITION_COLUMN],
                    filters=[(PARTITION_COLUMN, "in", missing)],
                    storage_options=self.storage_options or {},
                )
            by_date = {
                key[0]: part.drop(PARTITION_COLUMN)
                for key, part in loaded.partition_by(PARTITION_COLUMN, as_dict=True).items()
            }
            for day in missing:
                self._keys[day] = by_date.get(
                    day, pl.DataFrame(schema={"tenant_id": pl.String, "event_id": pl.String})
                )
        for day in dates:
            self._keys.move_to_end(day)

    def drop_existing(self, rows: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """Rows whose (tenant_id, event_id) is not yet in their event_date partition; and how many were."""
        if not self.dedupe or rows.is_empty():
            return rows, 0
        dates = rows.get_column(PARTITION_COLUMN).unique().to_list()
        self._load_keys(dates)
        existing = [self._keys[d] for d in dates if self._keys[d].height]
        if not existing:
            return rows, 0
        known = pl.concat(existing, rechunk=False)
        fresh = rows.join(known, on=list(KEY_COLUMNS), how="anti", maintain_order="left")
        return fresh, rows.height - fresh.height

    def remember(self, rows: pl.DataFrame, versions: Mapping[str, int]) -> None:
        """After a commit: the new keys join the cache, the committed txn versions replace the old ones."""
        self._txns.update(versions)
        if not self.dedupe:
            return
        for (day,), part in (
            rows.select(*KEY_COLUMNS, PARTITION_COLUMN).partition_by(PARTITION_COLUMN, as_dict=True).items()
        ):
            if day in self._keys:
                self._keys[day] = pl.concat([self._keys[day], part.drop(PARTITION_COLUMN)], rechunk=False)
                self._keys.move_to_end(day)
        while len(self._keys) > self._cached_partitions:
            self._keys.popitem(last=False)

    def write_files(self, data: pa.Table) -> list[Any]:
        """Write the rows as parquet files under their partition directories; nothing is committed yet."""
        import pyarrow.compute as pc
        import pyarrow.parquet as pq
        from deltalake.transaction import AddAction

        self.handle(create=True)
        root = Path(self.uri.removeprefix("file://"))
        actions: list[Any] = []
        data = data.sort_by([(PARTITION_COLUMN, "ascending"), ("tenant_id", "ascending")])
        runs = pc.run_end_encode(data.column(PARTITION_COLUMN).combine_chunks())
        ends = runs.run_ends.to_pylist()
        days = runs.values.to_pylist()
        body = data.drop_columns([PARTITION_COLUMN])
        for start, end, day in zip([0, *ends[:-1]], ends, days, strict=True):
            part = body.slice(start, end - start)
            relative = f"{PARTITION_COLUMN}={day.isoformat()}/part-{uuid.uuid4()}-c000.snappy.parquet"
            target = root / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(part, target, compression="snappy", row_group_size=1 << 20)
            actions.append(
                AddAction(
                    path=relative,
                    size=target.stat().st_size,
                    partition_values={PARTITION_COLUMN: day.isoformat()},
                    modification_time=int(time.time() * 1000),
                    data_change=True,
                    stats=_file_stats(part),
                )
            )
        return actions

    def commit_files(
        self, actions: list[Any], versions: Mapping[str, int], metadata: Mapping[str, str]
    ) -> int:
        """Commit written files in one transaction carrying a txn per unit; returns the new version."""
        from deltalake import CommitProperties, Transaction
        from deltalake.exceptions import CommitFailedError

        properties = CommitProperties(
            custom_metadata=dict(metadata),
            app_transactions=[Transaction(app, int(v)) for app, v in versions.items()],
        )
        for attempt in range(COMMIT_ATTEMPTS):
            table = self.handle(create=True)
            assert table is not None
            try:
                table.create_write_transaction(
                    actions,
                    "append",
                    self.schema,
                    partition_by=[PARTITION_COLUMN],
                    commit_properties=properties,
                )
                table.update_incremental()
                return table.version()
            except CommitFailedError as exc:  # a concurrent writer won the race: blind appends just retry
                log.debug("commit conflict on %s (attempt %d): %s", self.uri, attempt + 1, exc)
                time.sleep(0.01 * 2**attempt)
        raise CommitConflictError(f"commit to {self.uri} kept conflicting", uri=self.uri)

    def append(self, data: pa.Table, versions: Mapping[str, int], metadata: Mapping[str, str]) -> int:
        """Write and commit in one step (object stores: delta-rs writes and commits together)."""
        result = append(
            self.uri,
            data,
            partition_by=PARTITION_COLUMN,
            txns=[Txn(app, int(v)) for app, v in versions.items()],
            metadata=metadata,
            storage_options=self.storage_options or {},
        )
        self._handle = None
        return result.version
