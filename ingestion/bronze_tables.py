"""One bronze or quarantine Delta table as landing sees it: txn versions per unit, the cached keys of
recent partitions for dedupe, and files staged first then committed in one transaction through the
kernel's staged-write API (`shironzi.lake.staged`), for local and object-store tables alike."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Mapping
from datetime import date
from typing import TYPE_CHECKING

import polars as pl
import pyarrow as pa

from shironzi.lake.delta import StagedFiles, Txn, commit_staged, read_polars, stage_files

if TYPE_CHECKING:
    from deltalake import DeltaTable

PARTITION_COLUMN = "event_date"
KEY_COLUMNS = ("tenant_id", "event_id")
UNIT_COLUMN = "_unit"
SEQ_COLUMN = "_seq"
DEFAULT_CACHED_PARTITIONS = 64


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

    def handle(self) -> DeltaTable | None:
        """The delta-rs table refreshed to the latest version (None while the table does not exist)."""
        from deltalake import DeltaTable
        from deltalake.exceptions import TableNotFoundError

        if self._handle is None:
            try:
                self._handle = DeltaTable(self.uri, storage_options=self.storage_options)
            except TableNotFoundError:
                return None
        else:
            self._handle.update_incremental()
        return self._handle

    def txn_versions(self, units: Iterable[str]) -> dict[str, int | None]:
        """The highest seq of each unit already committed to this table, read from the Delta log once per unit
        (the units not yet known share one refresh of the log: on an object store, one LIST, not one per unit)."""
        wanted = list(dict.fromkeys(units))
        missing = [unit for unit in wanted if unit not in self._txns]
        if missing:
            table = self.handle()
            for unit in missing:
                self._txns[unit] = None if table is None else table.transaction_version(unit)
        return {unit: self._txns[unit] for unit in wanted}

    def txn_version(self, unit: str) -> int | None:
        """The highest seq of `unit` already committed to this table (read from the Delta log once)."""
        return self.txn_versions([unit])[unit]

    def drop_recovered(self, rows: pl.DataFrame) -> tuple[pl.DataFrame, int]:
        """Rows whose seq is beyond this table's txn for their unit; and how many were already committed."""
        units = rows.get_column(UNIT_COLUMN).unique().to_list()
        done = {u: v for u, v in self.txn_versions(units).items() if v is not None}
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

    def stage(self, data: pa.Table) -> StagedFiles:
        """Write the rows as Parquet files under their partition directories; nothing is committed yet."""
        return stage_files(self.uri, data, partition_by=PARTITION_COLUMN, storage_options=self.storage_options or {})

    def commit(self, staged: StagedFiles, versions: Mapping[str, int], metadata: Mapping[str, str]) -> int:
        """Commit staged files in one transaction carrying a txn per unit; returns the new version."""
        result = commit_staged(
            staged,
            txns=[Txn(app, int(v)) for app, v in versions.items()],
            metadata=metadata,
            storage_options=self.storage_options or {},
        )
        return result.version
