"""Raw JSON payloads (Kafka message values, JSONL lines) -> a frame of candidate records, in one pass.

The whole batch is parsed by DuckDB's JSON functions (vectorised, no per-row Python); payloads that are
not a JSON object are isolated into `DecodedBatch.malformed` instead of failing the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from ingestion.contracts import _duck
from ingestion.contracts.schema import MALFORMED_JSON, POSITION, RAW_PAYLOAD, RECORD_FIELDS, TYPE_ERROR_FIELD
from shironzi.errors import InvalidInputError

# JSON types each producer field may have (DuckDB `json_type` names); JSON null is always accepted here
# (a missing required field is reported by validation, not by decoding).
_NUMBER = ("UBIGINT", "BIGINT", "DOUBLE", "HUGEINT")
ACCEPTED_JSON_TYPES: dict[str, tuple[str, ...]] = {
    "tenant_id": ("VARCHAR",),
    "event_id": ("VARCHAR",),
    "customer_id": ("VARCHAR",),
    "event_type": ("VARCHAR",),
    "event_time": ("VARCHAR", "UBIGINT", "BIGINT"),  # ISO-8601 text or epoch milliseconds
    "amount": _NUMBER,
    "currency": ("VARCHAR",),
    "properties": ("OBJECT", "VARCHAR"),  # an object, or an object serialised as a JSON string
}

_OBJECT_START = r"^\s*\{"  # a JSON object, not a bare number, string, array or null

MALFORMED_COLUMNS: dict[str, type[pl.DataType]] = {
    RAW_PAYLOAD: pl.String,
    POSITION: pl.String,
    "reason_code": pl.String,
    "reason": pl.String,
}


@dataclass(frozen=True)
class DecodedBatch:
    """The outcome of decoding one batch of payloads.

    `records`: one row per payload that is a JSON object, in input order, with every field of
    `RECORD_FIELDS` as text (strings unquoted; numbers, booleans and objects as their JSON text; absent or
    null -> null), plus `raw_payload`, `position` and `type_error_field` (the first field whose JSON type
    is not accepted, else null). Pass it (or the whole `DecodedBatch`) to `validate_batch`.

    `malformed`: one row per payload that is not a JSON object: `raw_payload, position, reason_code
    (always "malformed_json"), reason`.
    """

    records: pl.DataFrame
    malformed: pl.DataFrame
    source: str

    @property
    def input_rows(self) -> int:
        return self.records.height + self.malformed.height


def _payload_texts(payloads: Sequence[bytes | str | None]) -> tuple[pl.Series, pl.Series]:
    """Payloads as one String series, plus a Boolean series marking the ones that were not UTF-8 text."""
    try:
        texts = pl.Series(RAW_PAYLOAD, payloads, dtype=pl.String)
        return texts, pl.Series("bad_text", [False] * len(payloads), dtype=pl.Boolean)
    except TypeError:
        pass
    try:
        texts = pl.Series(RAW_PAYLOAD, payloads, dtype=pl.Binary).cast(pl.String)
        return texts, pl.Series("bad_text", [False] * len(payloads), dtype=pl.Boolean)
    except (TypeError, pl.exceptions.ComputeError):
        pass
    # Slow path, only for batches mixing str/bytes or holding bytes that are not UTF-8.
    decoded: list[str] = []
    bad: list[bool] = []
    for value in payloads:
        if isinstance(value, str):
            decoded.append(value)
            bad.append(False)
        elif isinstance(value, bytes | bytearray | memoryview):
            raw = bytes(value)
            try:
                decoded.append(raw.decode("utf-8"))
                bad.append(False)
            except UnicodeDecodeError:
                decoded.append(raw.decode("utf-8", errors="replace"))
                bad.append(True)
        elif value is None:
            decoded.append("")
            bad.append(True)
        else:
            raise InvalidInputError(f"payloads must be bytes or str, got {type(value).__name__}")
    return pl.Series(RAW_PAYLOAD, decoded, dtype=pl.String), pl.Series("bad_text", bad, dtype=pl.Boolean)


def _decode_sql(*, check_valid: bool) -> str:
    """Split each object payload into its fields' JSON texts; `check_valid` skips text that is not JSON
    (without it the query is faster but raises on the first malformed payload)."""
    spec = "{" + ",".join(f'"{f}":"JSON"' for f in RECORD_FIELDS) + "}"
    valid = "json_valid(raw_payload) AND " if check_valid else ""
    return f"""
        SELECT _i, unnest(json_transform(raw_payload, {_duck.sql_string(spec)}))
        FROM batch
        WHERE NOT bad_text AND {valid}regexp_matches(raw_payload, {_duck.sql_string(_OBJECT_START)})
    """


def _json_type(text: pl.Expr) -> pl.Expr:
    """The JSON type (DuckDB names) of a column of JSON value texts, read from the first character."""
    first = text.str.slice(0, 1)
    return (
        pl.when(first == '"')
        .then(pl.lit("VARCHAR"))
        .when(first == "{")
        .then(pl.lit("OBJECT"))
        .when(first == "[")
        .then(pl.lit("ARRAY"))
        .when(first.is_in(["t", "f"]))
        .then(pl.lit("BOOLEAN"))
        .when(first == "n")
        .then(pl.lit("NULL"))
        .when(text.str.contains(r"[.eE]"))
        .then(pl.lit("DOUBLE"))
        .when(first == "-")
        .then(pl.lit("BIGINT"))
        .otherwise(pl.lit("UBIGINT"))
    )


def _json_value_text(text: pl.Expr) -> pl.Expr:
    """JSON value text -> plain text: strings unquoted (and unescaped), null -> null, others unchanged."""
    first = text.str.slice(0, 1)
    escaped = (first == '"') & text.str.contains("\\", literal=True)
    # Only escaped string literals go through the (slower, strict) JSON decoder; other rows are null there.
    unescaped = pl.when(escaped).then(text).otherwise(pl.lit(None, pl.String)).str.json_decode(pl.String)
    return (
        pl.when(escaped)
        .then(unescaped)
        .when(first == '"')
        .then(text.str.slice(1, text.str.len_bytes() - 2))
        .when(first == "n")
        .then(pl.lit(None, pl.String))
        .otherwise(text)
    )


def _split_fields(batch: pl.DataFrame) -> pl.DataFrame:
    """`_i`, every record field as plain text and `type_error_field`, for payloads that are JSON objects."""
    import duckdb

    try:
        parsed = _duck.run_query(_decode_sql(check_valid=False), batch=batch)
    except duckdb.Error:  # some payload is not JSON: pay for the validity check
        parsed = _duck.run_query(_decode_sql(check_valid=True), batch=batch)
    parsed = parsed.with_columns(pl.col(f).cast(pl.String) for f in RECORD_FIELDS)
    type_error = pl.lit(None, pl.String)
    for field in reversed(RECORD_FIELDS):
        accepted = (*ACCEPTED_JSON_TYPES[field], "NULL")
        broken = pl.col(field).is_not_null() & ~_json_type(pl.col(field)).is_in(accepted)
        type_error = pl.when(broken).then(pl.lit(field)).otherwise(type_error)
    return parsed.select(
        pl.col("_i").cast(pl.UInt32),
        *(_json_value_text(pl.col(f)).alias(f) for f in RECORD_FIELDS),
        type_error.alias(TYPE_ERROR_FIELD),
    ).sort("_i")


def decode_json_records(
    payloads: Sequence[bytes | str | None], positions: Sequence[str], *, source: str
) -> DecodedBatch:
    """Decode a batch of raw JSON payloads into candidate records and malformed ones (vectorised).

    `positions` name where each payload came from ("file.jsonl:17", "topic/2/1234"), one per payload.
    `source` is recorded for provenance (e.g. "kafka:events", "batch:landing").
    """
    if len(payloads) != len(positions):
        raise InvalidInputError(f"got {len(payloads)} payloads but {len(positions)} positions")
    if not source:
        raise InvalidInputError("decode_json_records needs a non-empty source")
    texts, bad_text = _payload_texts(payloads)
    batch = pl.DataFrame([texts, bad_text]).with_row_index("_i")
    positions_series = pl.Series(POSITION, positions, dtype=pl.String)

    parsed = _split_fields(batch)
    decoded_rows = parsed.get_column("_i")
    originals = pl.DataFrame([texts, positions_series])
    records = pl.concat([parsed.drop("_i"), originals[decoded_rows]], how="horizontal").select(
        *RECORD_FIELDS, RAW_PAYLOAD, POSITION, TYPE_ERROR_FIELD
    )
    not_decoded = np.ones(len(payloads), dtype=bool)
    not_decoded[decoded_rows.to_numpy()] = False
    malformed = (
        pl.DataFrame([texts, positions_series, bad_text])
        .filter(not_decoded)
        .select(
            RAW_PAYLOAD,
            POSITION,
            pl.lit(MALFORMED_JSON).alias("reason_code"),
            pl.when(pl.col("bad_text"))
            .then(pl.lit("payload is empty or not UTF-8 text"))
            .otherwise(pl.lit("payload is not a JSON object"))
            .alias("reason"),
        )
    )
    return DecodedBatch(records=records, malformed=malformed, source=source)
