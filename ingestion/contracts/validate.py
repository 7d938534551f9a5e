"""Contract validation of a whole batch at once (Polars expressions, DuckDB for JSON and timestamp parsing).

The same function serves the batch path (CSV/Parquet/JSONL files) and the stream path (Kafka messages):

    decoded = decode_json_records(payloads, positions, source="kafka:events")
    result = validate_batch(decoded, tenants=tenants_frame, now=now, source="kafka:events")
    # land result.valid in bronze, result.quarantined in quarantine; nothing else exists:
    assert result.reconciles()

Each input row ends up in exactly one place: `valid`, `quarantined` (with the first broken rule, in the
precedence order of `REASON_CODES`) or the `duplicates_in_batch` count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import polars as pl
import pyarrow as pa

from ingestion.contracts import _duck
from ingestion.contracts.decode import DecodedBatch, decode_json_records
from ingestion.contracts.registry import event_type_table, latest_contract_refs
from ingestion.contracts.rules import (
    amount_is_bad,
    amount_problem,
    any_missing,
    is_wrong_type,
    missing_fields,
    property_problems,
    wrong_type_text,
)
from ingestion.contracts.schema import (
    CANONICAL_SCHEMA,
    FUTURE_TIMESTAMP,
    INVALID_AMOUNT,
    MALFORMED_JSON,
    MISSING_FIELD,
    MISSING_PROPERTY,
    POSITION,
    QUARANTINE_SCHEMA,
    RAW_PAYLOAD,
    REASON_CODES,
    RECORD_FIELDS,
    TENANT_INACTIVE,
    TYPE_ERROR_FIELD,
    UNKNOWN_EVENT_TYPE,
    UNKNOWN_TENANT,
    WRONG_PROPERTY_TYPE,
    WRONG_TYPE,
)
from shironzi.errors import InvalidInputError

ACTIVE_STATUS = "active"
_TEXT_FIELDS = ("tenant_id", "event_id", "customer_id", "event_type", "currency")
_UTC_US = pl.Datetime("us", "UTC")
_EPOCH_MILLIS = r"^\s*-?\d{1,15}\s*$"
_JSON_SPACE = " \t\n\r"  # JSON whitespace: valid JSON whose first other character is "{" is an object


@dataclass(frozen=True)
class ValidationResult:
    """The outcome of validating one batch.

    `valid`: rows in `CANONICAL_SCHEMA`, first occurrence of each (tenant_id, event_id), input order.
    `quarantined`: rows in `QUARANTINE_SCHEMA` (malformed payloads included when a `DecodedBatch` was given).
    `duplicates_in_batch`: valid rows dropped because an earlier row of the batch had the same key.
    `counts_by_reason`: reason_code -> quarantined rows (only codes that occurred).
    `input_rows`: rows handed in (records + malformed payloads).
    `valid_input_rows`: for each row of `valid`, its row number in the records frame that was validated
    (malformed payloads excluded); None when unknown (e.g. several results merged).
    """

    valid: pa.Table
    quarantined: pa.Table
    duplicates_in_batch: int
    counts_by_reason: dict[str, int]
    input_rows: int
    valid_input_rows: pa.Array | None = None

    def reconciles(self) -> bool:
        """True when every input row is accounted for exactly once."""
        return self.input_rows == self.valid.num_rows + self.quarantined.num_rows + self.duplicates_in_batch


def _as_utc(now: datetime) -> datetime:
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _normalise_tenants(tenants: pl.DataFrame) -> pl.DataFrame:
    """`tenant_id, _industry, _status, _contract` from the caller's tenant frame (contract: latest)."""
    missing = {"tenant_id", "industry", "status"} - set(tenants.columns)
    if missing:
        raise InvalidInputError(
            f"the tenants frame lacks column(s) {sorted(missing)}; "
            "expected tenant_id, industry, status[, contract]"
        )
    if tenants.get_column("tenant_id").is_duplicated().any():
        raise InvalidInputError("the tenants frame lists a tenant_id more than once")
    latest = latest_contract_refs()
    contract = (
        pl.col("contract").cast(pl.String)
        if "contract" in tenants.columns
        else pl.col("industry").cast(pl.String).replace_strict(latest, default=None, return_dtype=pl.String)
    )
    return tenants.select(
        pl.col("tenant_id").cast(pl.String),
        pl.col("industry").cast(pl.String).alias("_industry"),
        pl.col("status").cast(pl.String).alias("_status"),
        contract.alias("_contract"),
    )


def _conform(records: pl.DataFrame) -> pl.DataFrame:
    """Bring any records frame (decoded JSON, CSV text, typed Parquet) to one working shape.

    Output columns: `_i`, the text fields, `_time_text`, `_time_native`, `_amount`, `_amount_text_bad`,
    `_props_text`, `_type_error`, `raw_payload`, `position`.
    """
    frame = records.with_row_index("_i")
    cols = set(frame.columns)
    null_text = pl.lit(None, pl.String)
    type_errors: dict[str, pl.Expr] = {}
    exprs: list[pl.Expr] = [pl.col("_i")]

    for name in _TEXT_FIELDS:
        if name not in cols:
            exprs.append(null_text.alias(name))
            continue
        dtype = frame.schema[name]
        if dtype == pl.String or dtype == pl.Null or isinstance(dtype, pl.Categorical | pl.Enum):
            exprs.append(pl.col(name).cast(pl.String))
        elif dtype.is_nested():
            exprs.append(pl.when(pl.col(name).is_not_null()).then(pl.lit("<nested value>")).alias(name))
            type_errors[name] = pl.col(name).is_not_null()
        else:
            exprs.append(pl.col(name).cast(pl.String, strict=False))
            type_errors[name] = pl.col(name).is_not_null()

    time_text, time_native = null_text, pl.lit(None, _UTC_US)
    if "event_time" in cols:
        dtype = frame.schema["event_time"]
        col = pl.col("event_time")
        if dtype == pl.String:
            time_text = col
        elif isinstance(dtype, pl.Datetime):
            local = (
                col.dt.replace_time_zone("UTC")
                if dtype.time_zone is None
                else col.dt.convert_time_zone("UTC")
            )
            time_native = local.dt.cast_time_unit("us")
        elif dtype == pl.Date:
            time_native = col.cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        elif dtype.is_integer():
            time_native = pl.from_epoch(col.cast(pl.Int64), time_unit="ms").dt.replace_time_zone("UTC")
        elif dtype != pl.Null:
            type_errors["event_time"] = col.is_not_null()
    exprs += [time_text.alias("_time_text"), time_native.alias("_time_native")]

    amount, amount_text_bad = pl.lit(None, pl.Float64), pl.lit(False)
    if "amount" in cols:
        dtype = frame.schema["amount"]
        col = pl.col("amount")
        if dtype.is_numeric():
            amount = col.cast(pl.Float64)
        elif dtype == pl.String:
            text = col.str.strip_chars()
            amount = pl.when(text == "").then(None).otherwise(text).cast(pl.Float64, strict=False)
            amount_text_bad = (text != "") & amount.is_null()
        elif dtype != pl.Null:
            type_errors["amount"] = col.is_not_null()
    exprs += [amount.alias("_amount"), amount_text_bad.fill_null(False).alias("_amount_text_bad")]

    props = null_text
    if "properties" in cols:
        dtype = frame.schema["properties"]
        if dtype == pl.String:
            props = pl.col("properties")
        elif isinstance(dtype, pl.Struct):
            props = pl.col("properties").struct.json_encode()
        elif dtype != pl.Null:
            type_errors["properties"] = pl.col("properties").is_not_null()
    exprs.append(props.alias("_props_text"))

    type_error = pl.col(TYPE_ERROR_FIELD).cast(pl.String) if TYPE_ERROR_FIELD in cols else null_text
    for name in reversed(RECORD_FIELDS):  # the first broken field in RECORD_FIELDS order wins
        if name in type_errors:
            type_error = pl.when(type_errors[name]).then(pl.lit(name)).otherwise(type_error)
    exprs.append(type_error.alias("_type_error"))

    if RAW_PAYLOAD in cols:  # otherwise `_raw_payloads` encodes the rejected rows only, at the end
        exprs.append(pl.col(RAW_PAYLOAD).cast(pl.String).fill_null("").alias(RAW_PAYLOAD))
    position = pl.col(POSITION).cast(pl.String) if POSITION in cols else pl.col("_i").cast(pl.String)
    exprs.append(position.fill_null("").alias(POSITION))
    return frame.select(exprs)


def _raw_payloads(records: pl.DataFrame, rows: pl.Series) -> pl.DataFrame:
    """`_i, raw_payload` for the given row indices: the record's own fields as a JSON object."""
    present = [c for c in RECORD_FIELDS if c in records.columns]
    raw = pl.struct(present).struct.json_encode() if present else pl.lit("{}")
    return (
        records.with_row_index("_i")
        .filter(pl.col("_i").is_in(rows.implode()))
        .select("_i", raw.fill_null("").alias(RAW_PAYLOAD))
    )


def _parse_time_and_properties(frame: pl.DataFrame) -> pl.DataFrame:
    """`_event_time` (UTC; null if unparseable), `_properties` (JSON object text; null if not an object)."""
    sql = f"""
        SELECT
            CASE
                WHEN _time_text IS NULL THEN NULL
                WHEN regexp_matches(_time_text, {_duck.sql_string(_EPOCH_MILLIS)})
                    THEN epoch_ms(CAST(trim(_time_text) AS BIGINT))::TIMESTAMPTZ
                ELSE try_cast(_time_text AS TIMESTAMPTZ)
            END AS _parsed_time,
            CASE
                WHEN _props_text IS NULL THEN '{{}}'
                WHEN starts_with(ltrim(_props_text, {_duck.sql_string(_JSON_SPACE)}), '{{')
                    AND json_valid(_props_text) THEN _props_text
            END AS _properties
        FROM recs ORDER BY _i
    """
    parsed = _duck.run_query(sql, recs=frame.select("_i", "_time_text", "_props_text"))
    parsed_time = parsed.get_column("_parsed_time").cast(_UTC_US)
    return frame.with_columns(
        pl.coalesce(pl.col("_time_native"), parsed_time).alias("_event_time"),
        parsed.get_column("_properties").cast(pl.String),
    )


def validate_batch(
    records: pl.DataFrame | DecodedBatch,
    *,
    tenants: pl.DataFrame,
    now: datetime,
    source: str,
    max_future_skew: timedelta = timedelta(minutes=5),
) -> ValidationResult:
    """Validate a batch of records against the tenant registry and each tenant's industry contract.

    `records`: a `DecodedBatch` (its malformed payloads are quarantined too) or a frame holding any of
    `RECORD_FIELDS` (text columns, or typed: event_time as Datetime/epoch-millis integers, amount numeric,
    properties as JSON text or a Struct), optionally `raw_payload` and `position`.
    `tenants`: `tenant_id, industry, status[, contract]` built from the tenant registry; only `active`
    tenants' events are accepted; `contract` ("ecommerce@v1") defaults to the industry's latest version.
    `now`: the ingestion time (stamped as `ingested_at`; events later than `now + max_future_skew` are
    quarantined). `source`: provenance written to every output row.
    """
    if not source:
        raise InvalidInputError("validate_batch needs a non-empty source")
    now = _as_utc(now)
    malformed = None
    if isinstance(records, DecodedBatch):
        malformed, records = records.malformed, records.records
    if not isinstance(records, pl.DataFrame):
        raise InvalidInputError(
            f"records must be a polars DataFrame or a DecodedBatch, got {type(records).__name__}"
        )
    input_rows = records.height + (malformed.height if malformed is not None else 0)

    frame = _parse_time_and_properties(_conform(records))
    frame = frame.join(_normalise_tenants(tenants), on="tenant_id", how="left", maintain_order="left")
    known_types = event_type_table().select(
        pl.col("contract").alias("_contract"), "event_type", pl.col("carries_amount").alias("_carries_amount")
    )
    frame = frame.join(known_types, on=["_contract", "event_type"], how="left", maintain_order="left")

    # Codes come from cheap boolean tests over every row; reason texts are built for rejected rows only.
    early_code = (
        pl.when(any_missing())
        .then(pl.lit(MISSING_FIELD))
        .when(is_wrong_type())
        .then(pl.lit(WRONG_TYPE))
        .when(pl.col("_industry").is_null())
        .then(pl.lit(UNKNOWN_TENANT))
        .when(pl.col("_status") != ACTIVE_STATUS)
        .then(pl.lit(TENANT_INACTIVE))
        .when(pl.col("_carries_amount").is_null())
        .then(pl.lit(UNKNOWN_EVENT_TYPE))
        .otherwise(pl.lit(None, pl.String))
    )
    frame = frame.with_columns(early_code.alias("_early_code"))
    candidates = frame.select("_i", "_contract", "event_type", "_properties", "_early_code").filter(
        pl.col("_early_code").is_null()
    ).drop("_early_code")
    problems = property_problems(candidates)
    if problems.is_empty():  # the usual case: no join (it would copy every column of the frame)
        frame = frame.with_columns(pl.lit(None, dtype).alias(name) for name, dtype in problems.schema.items()
                                   if name != "_i")
    else:
        frame = frame.join(problems, on="_i", how="left", maintain_order="left")

    latest_allowed = now + max_future_skew
    code = (
        pl.when(pl.col("_early_code").is_not_null())
        .then(pl.col("_early_code"))
        .when(pl.col("_missing_property").is_not_null())
        .then(pl.lit(MISSING_PROPERTY))
        .when(pl.col("_wrong_property").is_not_null())
        .then(pl.lit(WRONG_PROPERTY_TYPE))
        .when(pl.col("_event_time") > pl.lit(latest_allowed).cast(_UTC_US))
        .then(pl.lit(FUTURE_TIMESTAMP))
        .when(amount_is_bad())
        .then(pl.lit(INVALID_AMOUNT))
        .otherwise(pl.lit(None, pl.String))
    )
    frame = frame.with_columns(code.alias("_code"))
    rejected = frame.filter(pl.col("_code").is_not_null()).with_columns(
        missing_fields().alias("_missing"),
        wrong_type_text().alias("_wrong_type"),
        amount_problem().alias("amount_problem"),
    )
    if RAW_PAYLOAD not in rejected.columns:
        rejected = rejected.join(_raw_payloads(records, rejected.get_column("_i")), on="_i", how="left",
                                 maintain_order="left")
    reason = (
        pl.when(pl.col("_code") == MISSING_FIELD)
        .then(pl.format("missing field(s): {}", pl.col("_missing")))
        .when(pl.col("_code") == WRONG_TYPE)
        .then(pl.col("_wrong_type"))
        .when(pl.col("_code") == UNKNOWN_TENANT)
        .then(pl.format("tenant {} is not registered", pl.col("tenant_id")))
        .when(pl.col("_code") == TENANT_INACTIVE)
        .then(pl.format("tenant {} is {}", pl.col("tenant_id"), pl.col("_status")))
        .when(pl.col("_code") == UNKNOWN_EVENT_TYPE)
        .then(
            pl.format(
                "event type {} is not in contract {}",
                pl.col("event_type"),
                pl.col("_contract").fill_null(pl.format("(none for industry {})", pl.col("_industry"))),
            )
        )
        .when(pl.col("_code") == MISSING_PROPERTY)
        .then(
            pl.format("event type {} requires property {}", pl.col("event_type"), pl.col("_missing_property"))
        )
        .when(pl.col("_code") == WRONG_PROPERTY_TYPE)
        .then(pl.format("property {} must be {}", pl.col("_wrong_property"), pl.col("_wrong_property_type")))
        .when(pl.col("_code") == FUTURE_TIMESTAMP)
        .then(
            pl.format(
                "event_time {} is later than {}",
                pl.col("_event_time").dt.to_string("%Y-%m-%dT%H:%M:%SZ"),
                pl.lit(latest_allowed.strftime("%Y-%m-%dT%H:%M:%SZ")),
            )
        )
        .when(pl.col("_code") == INVALID_AMOUNT)
        .then(pl.col("amount_problem"))
        .otherwise(pl.lit(None, pl.String))
    )
    # Accepted rows, first of each (tenant_id, event_id): rejected rows map to a null key, never equal to an
    # accepted row's key (accepted rows have both fields), so one filter picks them.
    is_accepted = pl.col("_code").is_null()
    first_seen = pl.when(is_accepted).then(pl.struct("tenant_id", "event_id")).is_first_distinct()
    accepted_rows = frame.height - rejected.height
    accepted = frame.select(
        "_i", "tenant_id", "event_id", "customer_id", "event_type", "_event_time", "_amount", "currency",
        "_properties", "_code",
    ).filter(is_accepted & first_seen)
    duplicates = int(accepted_rows - accepted.height)

    valid = _to_arrow(
        accepted.select(
            "tenant_id",
            "event_id",
            "customer_id",
            "event_type",
            pl.col("_event_time").alias("event_time"),
            pl.col("_event_time").dt.date().alias("event_date"),
            pl.lit(source).alias("source"),
            pl.lit(now).cast(_UTC_US).alias("ingested_at"),
            pl.col("_amount").alias("amount"),
            "currency",
            pl.col("_properties").alias("properties"),
        ),
        CANONICAL_SCHEMA,
    )

    rejected = rejected.select(
        "tenant_id",
        pl.col("_code").alias("reason_code"),
        reason.alias("reason"),
        RAW_PAYLOAD,
        POSITION,
    )
    if malformed is not None and malformed.height:
        rejected = pl.concat(
            [
                malformed.select(
                    pl.lit(None, pl.String).alias("tenant_id"),
                    pl.lit(MALFORMED_JSON).alias("reason_code"),
                    pl.col("reason").cast(pl.String),
                    RAW_PAYLOAD,
                    POSITION,
                ),
                rejected,
            ]
        )
    quarantined = _to_arrow(
        rejected.select(
            pl.lit(now).cast(_UTC_US).alias("quarantined_at"),
            "tenant_id",
            "reason_code",
            "reason",
            RAW_PAYLOAD,
            pl.lit(source).alias("source"),
            POSITION,
            pl.lit(now.date()).alias("event_date"),
        ),
        QUARANTINE_SCHEMA,
    )

    counts = rejected.get_column("reason_code").value_counts()
    by_reason = dict(
        zip(counts.get_column("reason_code").to_list(), counts.get_column("count").to_list(), strict=True)
    )
    ordered = {code: int(by_reason[code]) for code in REASON_CODES if code in by_reason}
    return ValidationResult(
        valid=valid,
        quarantined=quarantined,
        duplicates_in_batch=duplicates,
        counts_by_reason=ordered,
        input_rows=input_rows,
        valid_input_rows=accepted.get_column("_i").to_arrow(),
    )


def _to_arrow(frame: pl.DataFrame, schema: pa.Schema) -> pa.Table:
    table = frame.to_arrow(compat_level=pl.CompatLevel.newest())
    return pa.Table.from_arrays([table.column(f.name).cast(f.type) for f in schema], schema=schema)


def validate_payloads(
    payloads: list[bytes | str] | list[bytes] | list[str],
    positions: list[str],
    *,
    tenants: pl.DataFrame,
    now: datetime,
    source: str,
    max_future_skew: timedelta = timedelta(minutes=5),
) -> ValidationResult:
    """Decode and validate raw JSON payloads in one call (the stream path)."""
    decoded = decode_json_records(payloads, positions, source=source)
    return validate_batch(decoded, tenants=tenants, now=now, source=source, max_future_skew=max_future_skew)
