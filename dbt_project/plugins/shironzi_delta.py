"""dbt-duckdb plugin that writes models as Delta tables through `deltalake` (delta-rs).

The `delta` materialization (macros/materializations/delta.sql) builds a model into a staged DuckDB
table and calls `adapter.store_relation("shironzi_delta", ...)`, which lands in `Plugin.store`:

* `overwrite`: the staged rows replace the Delta table in one commit (full refresh);
* `merge`: the staged rows are upserted on the model's unique key into the partitions they touch, in
  one commit that rewrites only those partitions' files (a replace-where of the merged partitions).

After the commit the plugin registers the table's Arrow dataset (a consistent Delta snapshot read by
delta-rs; DuckDB needs no `delta` extension) and points a DuckDB view with the model's name at it,
so downstream `ref()`s read the Delta table. A small catalog table in the DuckDB file remembers the
views, so later runs re-register them when a cursor opens. A second one (main.shironzi_delta_scope)
records the partitions each model's latest commit wrote, which scopes the data tests of an incremental
build (macros/test_scope.sql). `Plugin.load` reads Delta sources (cached per Delta version).

This module imports only dbt-duckdb, duckdb, deltalake and pyarrow: the dbt project does not depend
on the `shironzi` package.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc
from dbt.adapters.duckdb.plugins import BasePlugin
from dbt.adapters.duckdb.utils import SourceConfig, TargetConfig
from deltalake import CommitProperties, DeltaTable, write_deltalake
from deltalake.exceptions import TableNotFoundError

try:  # inside Shironzi every writer holds the table's shared lease, so an erasure's vacuum waits for it
    from shironzi.lake.leases import table_lease as _table_lease
except ImportError:  # pragma: no cover - the project used on its own, without the platform
    _table_lease = None
try:  # Arrow's own filesystems for the lake (local files, S3 from the storage options)
    from shironzi.lake.discovery import table_filesystem as _table_filesystem
except ImportError:  # pragma: no cover - the project used on its own: local tables only
    _table_filesystem = None

WriteMode = Literal["overwrite", "merge"]
CATALOG_TABLE = "main.shironzi_delta_catalog"
# What each model's latest commit wrote: the partitions (`scope_column` NULL = the whole table, an overwrite) and
# the tenants it replaced whole (`scope_tenants`, analytics on since the last build). `tested` is set once a build
# whose every test ran has passed (transformations/dbt_runner.py), so a model its next build leaves alone is not
# tested again. Data tests on an incremental build read it (macros/test_scope.sql) to check only what was rewritten.
SCOPE_TABLE = "main.shironzi_delta_scope"
Scope = tuple[str | None, list[str], list[str]]  # (partition column or None = whole table, its values, tenants)
_BATCH_ROWS = 256_000
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Building a pyarrow dataset lists every file of the snapshot (~0.5 s for a thousand files) and a build
# asks for the same snapshots many times (each source() compile, each run's start). A Delta version is
# immutable, so datasets are cached per process by (location, table id, version, kind); the table id
# changes when a table is deleted and created again at the same location.
_DATASET_CACHE: OrderedDict[tuple[str, str, int, str], Any] = OrderedDict()
_DATASET_CACHE_SIZE = 64
_DATASET_CACHE_LOCK = threading.Lock()


def _native_filesystem(location: str, storage_options: dict[str, str]) -> Any:
    """Arrow's own filesystem rooted at the table, never delta-rs's Python one: DuckDB scans a registered dataset
    holding the GIL, and Arrow I/O threads that need the GIL to open files deadlock it (seen twice in CI). Why,
    in full: `shironzi.lake.discovery.table_filesystem`. None: a store Arrow cannot open (delta-rs's handler)."""
    if _table_filesystem is not None:
        return _table_filesystem(location, storage_options=storage_options)
    if "://" in location and not location.startswith("file://"):
        return None
    import pyarrow.fs as pafs

    return pafs.SubTreeFileSystem(str(Path(location.removeprefix("file://")).resolve()), pafs.LocalFileSystem())


def _dataset(table: DeltaTable, location: str, storage_options: dict[str, str], **kwargs: Any) -> Any:
    return table.to_pyarrow_dataset(filesystem=_native_filesystem(location, storage_options), **kwargs)


def _cached_dataset(table: DeltaTable, location: str, kind: str, build: Any) -> Any:
    key = (location, str(table.metadata().id), table.version(), kind)
    with _DATASET_CACHE_LOCK:
        if key in _DATASET_CACHE:
            _DATASET_CACHE.move_to_end(key)
            return _DATASET_CACHE[key]
    dataset = build()
    with _DATASET_CACHE_LOCK:
        _DATASET_CACHE[key] = dataset
        while len(_DATASET_CACHE) > _DATASET_CACHE_SIZE:
            _DATASET_CACHE.popitem(last=False)
    return dataset


class DeltaWriteError(Exception):
    """A Delta write the plugin refuses (bad config, schema drift on an incremental merge)."""


def _parse_storage_options(raw: Any) -> dict[str, str]:
    if not raw:
        return {}
    if isinstance(raw, str):
        raw = json.loads(raw)
    if not isinstance(raw, dict):
        raise DeltaWriteError("storage_options must be a JSON object")
    return {str(key): str(value) for key, value in raw.items()}


def _ident(name: str) -> str:
    if not _IDENT.match(name):
        raise DeltaWriteError(f"invalid column name {name!r} for a Delta merge")
    return name


def sql_literal(value: Any) -> str:
    """A delta-rs (DataFusion) SQL literal for one partition value."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dt.datetime):
        return f"'{value.isoformat()}'"
    if isinstance(value, dt.date):
        return f"'{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


def _delta_friendly(schema: pa.Schema) -> pa.Schema:
    """DuckDB's Arrow export -> types every Delta reader (Spark, Polars, DuckDB) agrees on."""
    fields = []
    for field in schema:
        kind = field.type
        if pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
            kind = pa.string()
        elif pa.types.is_decimal(kind) and kind.precision == 38 and kind.scale == 0:
            kind = pa.int64()  # DuckDB HUGEINT (sum of integers)
        elif pa.types.is_timestamp(kind) and kind.tz is not None:
            kind = pa.timestamp("us", tz="UTC")
        elif pa.types.is_timestamp(kind):
            kind = pa.timestamp("us")
        fields.append(pa.field(field.name, kind, nullable=True))
    return pa.schema(fields)


def _conform(reader: pa.RecordBatchReader) -> pa.RecordBatchReader:
    schema = _delta_friendly(reader.schema)
    if schema == reader.schema:
        return reader
    return pa.RecordBatchReader.from_batches(schema, (batch.cast(schema) for batch in reader))


class Plugin(BasePlugin):
    """Writes dbt models to Delta tables and exposes them back to DuckDB as views."""

    def initialize(self, plugin_config: dict[str, Any]) -> None:
        self._storage_options = _parse_storage_options(plugin_config.get("storage_options"))
        self._lock = threading.RLock()
        self._conn: Any = None
        self._datasets: dict[str, Any] = {}  # registered name -> Arrow dataset of a Delta snapshot
        self._cursors: list[Any] = []

    # -- connection set-up ------------------------------------------------------------------------
    def configure_connection(self, conn: Any) -> None:
        """Re-register the Delta-backed views a previous run created; drop those whose table is gone."""
        self._conn = conn
        conn.execute(
            f"create table if not exists {CATALOG_TABLE} "
            "(view_name varchar primary key, df_name varchar, location varchar)"
        )
        conn.execute(
            f"create table if not exists {SCOPE_TABLE} "
            "(view_name varchar primary key, scope_column varchar, scope_values varchar, written_at timestamptz)"
        )
        for column, kind in (("scope_tenants", "varchar"), ("tested", "boolean default false")):
            conn.execute(f"alter table {SCOPE_TABLE} add column if not exists {column} {kind}")
        entries = conn.execute(f"select view_name, df_name, location from {CATALOG_TABLE}").fetchall()
        for view_name, df_name, location in entries:
            dataset = self._load_dataset(location)
            if dataset is None:
                conn.execute(f"drop view if exists {view_name}")
                conn.execute(f"delete from {CATALOG_TABLE} where view_name = ?", [view_name])
            else:
                self._datasets[df_name] = dataset

    def configure_cursor(self, cursor: Any) -> None:
        with self._lock:
            for df_name, dataset in self._datasets.items():
                cursor.register(df_name, dataset)
            self._cursors.append(cursor)

    # -- the write --------------------------------------------------------------------------------
    def store(self, target_config: TargetConfig) -> None:
        """Write the staged relation to Delta (overwrite or partition-scoped merge), then publish it."""
        options: dict[str, Any] = dict(target_config.config or {})
        location = target_config.location.path if target_config.location else None
        if not location:
            raise DeltaWriteError("the delta materialization needs a location")
        mode: WriteMode = options.get("mode", "overwrite")
        partition_by = list(options.get("partition_by") or [])
        unique_key = list(options.get("unique_key") or [])
        staged = target_config.relation.render()
        view_name = options["view"]
        if self._conn is None:
            raise DeltaWriteError("the shironzi_delta plugin has no DuckDB connection")
        cursor = self._conn.cursor()
        lease = _table_lease(location) if _table_lease is not None else contextlib.nullcontext()
        try:
            with lease:
                scope = self._write(cursor, staged, location=location, mode=mode, options=options,
                                    partition_by=partition_by, unique_key=unique_key)
            self._publish(cursor, view_name=view_name, location=location)
            if scope is not None:
                self._record_scope(cursor, view_name=view_name, scope=scope)
        finally:
            cursor.close()

    def _write(self, cursor: Any, staged: str, *, location: str, mode: WriteMode, options: dict[str, Any],
               partition_by: list[str], unique_key: list[str]) -> Scope | None:
        """One Delta commit of the staged rows: a full overwrite or a partition-scoped merge. Returns what
        the commit rewrote: (None, [], []) for the whole table; for a merge of a one-column partitioning, the
        partition column, the literal values it rewrote and the literal tenants it replaced whole; None when
        nothing was committed."""
        reader = _conform(cursor.sql(f"select * from {staged}").to_arrow_reader(_BATCH_ROWS))
        if mode == "overwrite":
            write_deltalake(
                location,
                reader,
                mode="overwrite",
                partition_by=partition_by or None,
                schema_mode="overwrite",
                storage_options=self._storage_options or None,
                configuration={"delta.checkpointInterval": "100"},
            )
            return None, [], []
        if mode == "merge":
            return self._merge(
                location,
                reader.read_all(),
                unique_key=unique_key,
                partition_by=partition_by,
                delete_stale=bool(options.get("delete_stale_in_scope", False)),
                added_tenants=[str(t) for t in options.get("added_tenants") or []],
            )
        raise DeltaWriteError(f"unknown delta write mode {mode!r}")

    def _merge(
        self,
        location: str,
        rows: pa.Table,
        *,
        unique_key: list[str],
        partition_by: list[str],
        delete_stale: bool,
        added_tenants: list[str] | None = None,
    ) -> Scope | None:
        """Upsert `rows` on `unique_key` into the partitions they touch, in one commit that rewrites only
        those partitions: the partitions' current rows whose key is not in `rows` are kept (dropped when
        `delete_stale`), the rest come from `rows`. Written with write_deltalake's replace-where rather
        than DeltaTable.merge, whose rewritten files carry `string_view` columns that pyarrow cannot
        filter (delta-rs #4579), which breaks DuckDB's filter pushdown on the next read.

        The rows of `added_tenants` (analytics on since the last build: the model staged all of their rows) go in
        with a second commit that replaces exactly those tenants' rows (`tenant_id IN (...)`): files without
        them are left alone, where a partition merge would rewrite every partition a new tenant touches. The scope
        then lists the partitions of the other rows and those tenants, so the tests check the added tenants' rows,
        not every partition they touch."""
        if not unique_key:
            raise DeltaWriteError("an incremental delta model needs a unique_key")
        if not partition_by:
            raise DeltaWriteError(
                "an incremental delta model needs partition_by: merges are partition-scoped"
            )
        if rows.num_rows == 0:
            return None  # nothing changed upstream: no commit, the table version stays
        if added_tenants and "tenant_id" in rows.schema.names:
            tenants = sorted(set(added_tenants))
            is_added = pc.is_in(rows.column("tenant_id"), value_set=pa.array(tenants, pa.string()))
            added_rows = rows.filter(is_added)
            rows = rows.filter(pc.invert(is_added))
            column, values, _ = self._scope_of(rows, partition_by)
            if rows.num_rows:
                self._merge(location, rows, unique_key=unique_key, partition_by=partition_by, delete_stale=delete_stale)
            if added_rows.num_rows:
                self._replace_tenants(location, added_rows, tenants, partition_by=partition_by)
            return column, values, [sql_literal(t) for t in tenants] if column is not None else []
        scope = self._scope_of(rows, partition_by)
        table = self._open(location)
        if table is None:  # the table vanished since the view was made: create it
            write_deltalake(
                location,
                rows,
                mode="overwrite",
                partition_by=partition_by,
                storage_options=self._storage_options or None,
            )
            return None, [], []
        self._check_schema(table, rows.schema, location)
        for key in unique_key:
            _ident(key)
        scope_sql, scope_filter = self._partition_scope(rows, partition_by)
        merged = rows
        if not delete_stale:
            current = self._load_dataset(location).to_table(filter=scope_filter)
            kept = current.join(rows.select(unique_key), keys=unique_key, join_type="left anti")
            merged = pa.concat_tables([kept.select(rows.schema.names).cast(rows.schema), rows])
        write_deltalake(
            location,
            merged,
            mode="overwrite",
            predicate=scope_sql,
            partition_by=partition_by,
            storage_options=self._storage_options or None,
            commit_properties=CommitProperties(
                custom_metadata={
                    "shironzi.operation": "partition_merge",
                    "shironzi.unique_key": ",".join(unique_key),
                    "shironzi.source_rows": str(rows.num_rows),
                }
            ),
        )
        return scope

    @staticmethod
    def _scope_of(rows: pa.Table, partition_by: list[str]) -> Scope:
        """What a merge of `rows` rewrites, for the test scope: the partitions they touch."""
        if len(partition_by) != 1:
            return None, [], []
        column = partition_by[0]
        values = pc.unique(rows.column(column)).to_pylist()
        if any(value is None for value in values):
            return None, [], []
        return column, [sql_literal(value) for value in sorted(values)], []

    def _replace_tenants(self, location: str, rows: pa.Table, tenants: list[str], *, partition_by: list[str]) -> None:
        """One commit replacing every row of `tenants` with `rows` (all of theirs)."""
        table = self._open(location)
        predicate = None
        if table is not None:
            self._check_schema(table, rows.schema, location)
            predicate = "tenant_id IN (" + ", ".join(sql_literal(t) for t in tenants) + ")"
        write_deltalake(
            location,
            rows,
            mode="overwrite" if table is not None else "append",
            predicate=predicate,
            partition_by=partition_by,
            storage_options=self._storage_options or None,
            commit_properties=CommitProperties(
                custom_metadata={
                    "shironzi.operation": "tenants_added",
                    "shironzi.tenants": str(len(tenants)),
                    "shironzi.source_rows": str(rows.num_rows),
                }
            ),
        )

    @staticmethod
    def _record_scope(cursor: Any, *, view_name: str, scope: Scope) -> None:
        column, values, tenants = scope
        cursor.execute(
            f"insert or replace into {SCOPE_TABLE} (view_name, scope_column, scope_values, written_at, "
            "scope_tenants, tested) values (?, ?, ?, now(), ?, false)",
            [view_name, column, ", ".join(values) if column else None, ", ".join(tenants) if column else None],
        )

    @staticmethod
    def _partition_scope(rows: pa.Table, partition_by: list[str]) -> tuple[str, Any]:
        """The partitions the staged rows touch, as a delta-rs predicate and a pyarrow filter."""
        clauses, filters = [], None
        for column in partition_by:
            values = sorted(
                {v for v in rows.column(_ident(column)).to_pylist()}, key=lambda v: (v is None, str(v))
            )
            non_null = [v for v in values if v is not None]
            parts = [f"{column} IN ({', '.join(sql_literal(v) for v in non_null)})"] if non_null else []
            expression = pc.field(column).isin(pa.array(non_null, type=rows.schema.field(column).type))
            if None in values:
                parts.append(f"{column} IS NULL")
                expression = expression | pc.field(column).is_null()
            clauses.append("(" + " OR ".join(parts) + ")")
            filters = expression if filters is None else filters & expression
        return " AND ".join(clauses), filters

    @staticmethod
    def _check_schema(table: DeltaTable, incoming: pa.Schema, location: str) -> None:
        current = {field.name for field in table.schema().to_arrow()}  # type: ignore[union-attr]
        names = set(incoming.names)
        if current != names:
            added, removed = sorted(names - current), sorted(current - names)
            raise DeltaWriteError(
                f"the columns of {location} changed (added {added}, removed {removed}); "
                "an incremental merge cannot change the schema: rebuild with --full-refresh"
            )

    # -- publishing -------------------------------------------------------------------------------
    def _open(self, location: str) -> DeltaTable | None:
        try:
            return DeltaTable(location, storage_options=self._storage_options or None)
        except TableNotFoundError:
            return None

    def _load_dataset(self, location: str) -> Any:
        """The table's current snapshot as an Arrow dataset, read with plain string types: files written
        by a delta-rs merge carry `string_view`, which pyarrow cannot filter when DuckDB pushes a filter."""
        table = self._open(location)
        if table is None:
            return None

        def build() -> Any:
            arrow_schema = pa.schema(table.schema().to_arrow())  # type: ignore[arg-type]
            return _dataset(table, location, self._storage_options, schema=_delta_friendly(arrow_schema))

        return _cached_dataset(table, location, "model", build)

    # -- reading sources ---------------------------------------------------------------------------
    def load(self, source_config: SourceConfig) -> Any:
        """A Delta source (meta `delta_table_path`, optional `storage_options`) as the Arrow dataset of its
        current snapshot, like dbt-duckdb's `delta` plugin, but cached per Delta version."""
        if "delta_table_path" not in source_config:
            raise DeltaWriteError("a shironzi_delta source needs meta delta_table_path")
        location = str(source_config["delta_table_path"])
        options = _parse_storage_options(source_config.get("storage_options")) or self._storage_options
        table = DeltaTable(location, storage_options=options or None)
        return _cached_dataset(table, location, "source", lambda: _dataset(table, location, options))

    def _publish(self, cursor: Any, *, view_name: str, location: str) -> None:
        dataset = self._load_dataset(location)
        if dataset is None:
            raise DeltaWriteError(f"no Delta table at {location} after the write")
        df_name = "delta__" + re.sub(r"[^A-Za-z0-9_]", "_", view_name.replace('"', ""))
        with self._lock:
            self._datasets[df_name] = dataset
            live = []
            for other in [*self._cursors, cursor]:
                try:
                    other.register(df_name, dataset)
                except Exception:  # noqa: BLE001 - a closed cursor: forget it
                    continue
                if other is not cursor:
                    live.append(other)
            self._cursors = live
        cursor.execute(f"create or replace view {view_name} as select * from {df_name}")
        cursor.execute(
            f"insert or replace into {CATALOG_TABLE} values (?, ?, ?)", [view_name, df_name, location]
        )

    def default_materialization(self) -> str:
        return "view"
