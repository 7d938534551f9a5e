"""Point-in-time-correct training sets: each entity row gets the latest feature values at or before its
timestamp, within each view's TTL, through DuckDB ASOF joins over Arrow (no Python loops).

    training = get_training_set(labels, ["customer_activity", "customer_lifecycle:tenure_days"])

`entity_df` holds tenant_id, customer_id, event_timestamp and any label columns (kept as they are).
A date `event_timestamp` means "as of the end of that day". Feature rows newer than the entity row never
join (no leakage); a feature row older than the view's TTL comes back null.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

from feature_store.definitions import FEATURE_TIMESTAMP
from feature_store.offline import read_feature_table
from feature_store.registry import get_feature_view, resolve_features
from shironzi.errors import InvalidInputError
from shironzi.settings import Settings

if TYPE_CHECKING:
    import pyarrow as pa

ENTITY_TIMESTAMP = "event_timestamp"
_ROW = "__shironzi_row__"
OutputFormat = Literal["arrow", "polars"]


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
    if _ROW in table.column_names:
        raise InvalidInputError(f"entity_df may not have a column named {_ROW}")
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
    table = table.set_column(index, ENTITY_TIMESTAMP, stamp)
    return table.append_column(_ROW, pa.array(range(table.num_rows), pa.int64()))


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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
    import duckdb

    if output not in ("arrow", "polars"):
        raise InvalidInputError(f"output must be 'arrow' or 'polars', got {output!r}")
    chosen = resolve_features(features)
    views = [get_feature_view(name) for name in chosen]
    entity_keys = ("tenant_id", "customer_id") if any(v.entity.name == "customer" for v in views) else ("tenant_id",)
    entities = _normalise_entities(_as_arrow(entity_df), entity_keys)
    tenant_ids = entities.column("tenant_id").unique().to_pylist()

    # One narrow ASOF join per view (entity keys + timestamp only), each returned in entity order, then the
    # feature columns are placed beside the entity columns: no wide rows are carried through repeated sorts.
    result = entities.drop([_ROW])
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("entities", entities.select([*entity_keys, ENTITY_TIMESTAMP, _ROW]))
        for number, view in enumerate(views):
            names = chosen[view.name]
            rows = (feature_tables or {}).get(view.name)
            if rows is None:
                rows = read_feature_table(view, tenant_ids, features=names, settings=settings)
            else:
                rows = rows.select([*view.join_keys, FEATURE_TIMESTAMP, *names])
            if rows.schema.field(FEATURE_TIMESTAMP).type != entities.schema.field(ENTITY_TIMESTAMP).type:
                import pyarrow as pa

                rows = rows.set_column(rows.column_names.index(FEATURE_TIMESTAMP), FEATURE_TIMESTAMP,
                                       rows.column(FEATURE_TIMESTAMP).cast(pa.timestamp("us", tz="UTC")))
            con.register(f"view_{number}", rows)
            ttl_us = int(view.ttl.total_seconds() * 1_000_000)
            fresh = f"f.{FEATURE_TIMESTAMP} >= e.{ENTITY_TIMESTAMP} - to_microseconds({ttl_us})"
            labels = [f"{view.name}__{name}" if full_feature_names else name for name in names]
            selects = [f"CASE WHEN {fresh} THEN f.{_quote(name)} END AS {_quote(label)}"
                       for name, label in zip(names, labels, strict=True)]
            on = " AND ".join(f"e.{_quote(k)} = f.{_quote(k)}" for k in view.join_keys)
            relation = con.sql(
                f"SELECT {', '.join(selects)} FROM entities e ASOF LEFT JOIN view_{number} f ON {on} "
                f"AND e.{ENTITY_TIMESTAMP} >= f.{FEATURE_TIMESTAMP} ORDER BY e.{_ROW}"
            )
            joined = relation.to_arrow_table() if hasattr(relation, "to_arrow_table") else relation.arrow()
            for label in labels:
                if label in result.column_names:
                    raise InvalidInputError(f"entity_df already has a column named {label!r}", column=label)
                result = result.append_column(label, joined.column(label))
            con.unregister(f"view_{number}")
    finally:
        con.close()
    if output == "polars":
        import polars as pl

        return pl.from_arrow(result)
    return result
