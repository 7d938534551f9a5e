"""Point-in-time-correct training sets: each entity row gets the latest feature values at or before its
timestamp, within each view's TTL, through vectorised as-of joins over Arrow (no Python loops).

    training = get_training_set(labels, ["customer_activity", "customer_lifecycle:tenure_days"])

`entity_df` holds tenant_id, customer_id, event_timestamp and any label columns (kept as they are).
A date `event_timestamp` means "as of the end of that day". Feature rows newer than the entity row never
join (no leakage); a feature row older than the view's TTL comes back null.

How the join works (one pass per view, never per feature, views in parallel threads):

1. The entity keys are encoded once as dense integers (tenant and customer dictionaries built from
   `entity_df`); a view's rows are encoded against the same dictionaries, so rows of entities nobody asked
   for (and of other tenants) drop out before any sorting, and colliding customer ids of two tenants get
   different codes.
2. Timestamps become ranks among the view's distinct feature timestamps, so `(entity code, rank)` packs into
   one int64 whose order is the as-of order; the view is sorted once by it.
3. `searchsorted` finds, for every entity row, the last feature row of the same entity at or before its
   timestamp (an exact as-of join); a row from another entity, or older than the TTL, gives null.
4. Each feature column is gathered with one Arrow `take`, nulls where nothing matched.

Offline Delta reads take only the needed columns and only the entity df's tenants (files of other tenants
are skipped by their min/max statistics), with one registry look-up for all views.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from feature_store.definitions import FEATURE_TIMESTAMP, FeatureView
from feature_store.offline import read_feature_table
from feature_store.registry import get_feature_view, resolve_features
from shironzi.errors import InvalidInputError
from shironzi.lake.groups import lake_groups
from shironzi.observability import stage
from shironzi.settings import Settings

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa

ENTITY_TIMESTAMP = "event_timestamp"
OutputFormat = Literal["arrow", "polars"]
_PACKED_LIMIT = 2**62  # entity codes x timestamp ranks must fit an int64 sort key


def _as_arrow(entity_df: Any) -> pa.Table:
    import pyarrow as pa

    if isinstance(entity_df, pa.Table):
        return entity_df
    if hasattr(entity_df, "to_arrow"):  # polars
        return entity_df.to_arrow()
    try:
        return pa.Table.from_pandas(entity_df, preserve_index=False)
    except Exception as exc:
        raise InvalidInputError(f"entity_df must be a pyarrow Table, polars or pandas DataFrame: {exc}") from exc


def _normalise_entities(table: pa.Table, key_columns: Sequence[str]) -> pa.Table:
    """Check the columns and bring event_timestamp to timestamp[us, UTC] (a date: the end of that day)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    missing = [c for c in (*key_columns, ENTITY_TIMESTAMP) if c not in table.column_names]
    if missing:
        raise InvalidInputError(f"entity_df lacks columns {missing}", missing=missing)
    for column in (*key_columns, ENTITY_TIMESTAMP):
        if table.column(column).null_count:
            raise InvalidInputError(f"entity_df column {column!r} has nulls", column=column)
    stamp = table.column(ENTITY_TIMESTAMP)
    kind = stamp.type
    if pa.types.is_date(kind):
        day_end = pc.add(pc.cast(stamp, pa.timestamp("us")), pa.scalar(86_400_000_000 - 1, pa.duration("us")))
        stamp = pc.assume_timezone(day_end, "UTC")
    elif pa.types.is_timestamp(kind):
        if kind.tz is None:
            stamp = pc.assume_timezone(pc.cast(stamp, pa.timestamp("us")), "UTC")
        else:
            stamp = pc.cast(stamp, pa.timestamp("us", tz="UTC"))
    else:
        raise InvalidInputError(f"entity_df.event_timestamp must be a timestamp or date, not {kind}")
    for column in key_columns:
        if not pa.types.is_string(table.column(column).type) and not pa.types.is_large_string(
            table.column(column).type
        ):
            raise InvalidInputError(f"entity_df column {column!r} must be a string column")
    index = table.column_names.index(ENTITY_TIMESTAMP)
    return table.set_column(index, ENTITY_TIMESTAMP, stamp)


def _micros(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """A timestamp column as int64 microseconds since the epoch (UTC)."""
    import pyarrow as pa

    values = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    return values.to_numpy(zero_copy_only=False)


def _order_by(codes: np.ndarray, stamps: np.ndarray) -> np.ndarray:
    """The permutation sorting rows by (code, timestamp): one int64 sort when the pair packs into 63 bits."""
    import numpy as np

    if not len(codes):
        return np.zeros(0, np.int64)
    low = int(stamps.min())
    span = int(stamps.max()) - low + 1
    if (int(codes.max()) + 1) * span < _PACKED_LIMIT:
        return np.argsort(codes * span + (stamps - low))
    return np.lexsort((stamps, codes))


@dataclass(frozen=True)
class _EntityIndex:
    """One entity kind's keys of `entity_df`, encoded once and shared by every view of that kind."""

    join_keys: tuple[str, ...]
    dictionaries: tuple[pa.Array, ...]  # distinct values per key column (the encoding)
    radix: tuple[int, ...]  # code = sum(index_i * radix_i), before densifying
    distinct: pa.Array  # sorted distinct raw codes of the entity rows: dense code = position here
    order: np.ndarray  # entity rows sorted by (code, timestamp): the view lookups then walk memory forwards
    codes: np.ndarray  # dense code per entity row, in `order`
    stamps: np.ndarray  # event_timestamp in microseconds, in `order`

    @classmethod
    def build(cls, entities: pa.Table, join_keys: tuple[str, ...], stamps: np.ndarray) -> _EntityIndex:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        dictionaries = tuple(pc.unique(entities.column(k)) for k in join_keys)
        radix = tuple(int(np.prod([len(d) for d in dictionaries[i + 1:]], dtype=object)) for i in range(len(join_keys)))
        if len(dictionaries) and int(np.prod([len(d) for d in dictionaries], dtype=object)) >= _PACKED_LIMIT:
            raise InvalidInputError("entity_df has too many distinct keys for one training set; split it")
        raw = cls._raw_codes(entities, join_keys, dictionaries, radix)
        distinct = pc.unique(pa.array(raw)).sort()
        codes = pc.index_in(pa.array(raw), value_set=distinct).to_numpy(zero_copy_only=False).astype(np.int64)
        order = _order_by(codes, stamps)
        return cls(join_keys, dictionaries, radix, distinct, order, codes[order], stamps[order])

    @staticmethod
    def _raw_codes(table: pa.Table, join_keys: tuple[str, ...], dictionaries: tuple[pa.Array, ...],
                   radix: tuple[int, ...]) -> np.ndarray:
        """Packed key codes of `table`'s rows; -1 where a key is not in the entity dictionaries (or null)."""
        import numpy as np
        import pyarrow.compute as pc

        raw = np.zeros(table.num_rows, np.int64)
        absent = np.zeros(table.num_rows, bool)
        for key, dictionary, weight in zip(join_keys, dictionaries, radix, strict=True):
            index = pc.index_in(table.column(key), value_set=dictionary)
            if index.null_count:
                absent |= index.is_null().to_numpy(zero_copy_only=False)
                index = index.fill_null(0)
            raw += index.to_numpy(zero_copy_only=False).astype(np.int64) * weight
        raw[absent] = -1
        return raw

    def encode(self, rows: pa.Table) -> np.ndarray:
        """Dense entity codes of a view's rows; -1 for rows of entities not in `entity_df`."""
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        raw = self._raw_codes(rows, self.join_keys, self.dictionaries, self.radix)
        dense = pc.index_in(pa.array(raw), value_set=self.distinct)
        return dense.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


def _asof_indices(index: _EntityIndex, rows: pa.Table, ttl_us: int) -> pa.Array:
    """For each entity row, the index of its view row (latest at or before its timestamp, within the TTL),
    or null."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    codes = index.encode(rows)
    stamps = rows.column(FEATURE_TIMESTAMP)
    usable = codes >= 0
    if stamps.null_count:
        usable &= stamps.is_valid().to_numpy(zero_copy_only=False)
        stamps = stamps.fill_null(0)
    times = _micros(stamps)
    positions = np.flatnonzero(usable)
    if not len(positions):
        return pa.nulls(len(index.codes), pa.int64())
    codes, times = codes[positions], times[positions]
    distinct_times = np.sort(pc.unique(pa.array(times)).to_numpy(zero_copy_only=False))
    width = len(distinct_times) + 1
    if len(index.distinct) * width >= _PACKED_LIMIT:
        raise InvalidInputError("entity_df and feature history are too large for one training set; split it")
    # A feature row's rank is 1..U among the distinct feature timestamps; an entity row's is the count of
    # them at or before its timestamp (0..U): the row is visible exactly when its rank <= that count.
    packed = codes * width + np.searchsorted(distinct_times, times, "right")
    by_key = np.argsort(packed)
    packed = packed[by_key]
    entity_codes, entity_times = index.codes, index.stamps
    wanted = entity_codes * width + np.searchsorted(distinct_times, entity_times, "right")
    found = np.searchsorted(packed, wanted, "right") - 1
    clipped = np.maximum(found, 0)
    row = by_key[clipped]
    hit = (found >= 0) & (codes[row] == entity_codes) & (times[row] >= entity_times - ttl_us)
    take = np.empty_like(row)
    take[index.order] = positions[row]
    valid = np.empty_like(hit)
    valid[index.order] = hit
    return pa.array(take, mask=~valid)


def get_training_set(
    entity_df: Any,
    features: Sequence[str],
    *,
    full_feature_names: bool = False,
    output: OutputFormat = "arrow",
    settings: Settings | None = None,
    feature_tables: dict[str, pa.Table] | None = None,
) -> Any:
    """Join every entity row to the latest values at or before its timestamp (nulls beyond each TTL).

    Returns the entity columns (in their order, rows in their order) plus one column per feature, named
    by feature (`view__feature` with `full_feature_names`), as a pyarrow Table or a polars DataFrame.
    `feature_tables` (view name -> rows) replaces the offline Delta reads, e.g. for benchmarks.
    """

    if output not in ("arrow", "polars"):
        raise InvalidInputError(f"output must be 'arrow' or 'polars', got {output!r}")
    chosen = resolve_features(features)
    views = [get_feature_view(name) for name in chosen]
    entity_keys = ("tenant_id", "customer_id") if any(v.entity.name == "customer" for v in views) else ("tenant_id",)
    entities = _normalise_entities(_as_arrow(entity_df), entity_keys)
    labels = {view.name: [f"{view.name}__{n}" if full_feature_names else n for n in chosen[view.name]]
              for view in views}
    taken = set(entities.column_names)
    for label in (label for view in views for label in labels[view.name]):
        if label in taken:
            raise InvalidInputError(f"entity_df already has a column named {label!r}", column=label)
        taken.add(label)

    with stage("features:training_set", views=len(views), features=sum(map(len, labels.values()))) as summary:
        stamps = _micros(entities.column(ENTITY_TIMESTAMP))
        tenant_ids = entities.column("tenant_id").unique().to_pylist()
        supplied = feature_tables or {}
        groups = lake_groups(tenant_ids, settings) if any(v.name not in supplied for v in views) else []
        indexes: dict[tuple[str, ...], _EntityIndex] = {}
        for view in views:
            if view.join_keys not in indexes:
                indexes[view.join_keys] = _EntityIndex.build(entities, view.join_keys, stamps)

        def join(view: FeatureView) -> pa.Table:
            names = chosen[view.name]
            rows = supplied.get(view.name)
            if rows is None:
                rows = read_feature_table(view, tenant_ids, features=names, settings=settings, snapshot_date=False,
                                          groups=groups)
            indices = _asof_indices(indexes[view.join_keys], rows, int(view.ttl.total_seconds() * 1_000_000))
            return rows.select(names).take(indices).rename_columns(labels[view.name])

        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        workers = max(1, min(len(views), cores))
        if workers == 1:
            joined = [join(view) for view in views]
        else:  # numpy sorts/searches and Arrow kernels release the GIL
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="shironzi-pit") as pool:
                joined = list(pool.map(join, views))
        result = entities
        for part in joined:
            for label, column in zip(part.column_names, part.columns, strict=True):
                result = result.append_column(label, column)
        summary.rows = result.num_rows
        summary.extra["tenants"] = len(tenant_ids)
    if output == "polars":
        import polars as pl

        return pl.from_arrow(result)
    return result
