"""The contract rules of one batch as expressions: the property checks (one DuckDB query over the JSON
signatures of each event type) and the field checks (missing fields, wrong types, amounts and currencies)."""

from __future__ import annotations

import polars as pl

from ingestion.contracts import _duck
from ingestion.contracts.registry import get_contract
from ingestion.contracts.schema import (
    REQUIRED_FIELDS,
)

_ISO_CURRENCY = r"^[A-Z]{3}$"


_ABSENT = "-"  # signature entry of a property that is missing or JSON null
_BAD_TIMESTAMP = "VARCHAR!"  # signature entry of a text that does not parse as a timestamp
_TYPES_OK: dict[str, frozenset[str]] = {  # the JSON types (`json_type`) each property type accepts
    "string": frozenset({"VARCHAR"}),
    "int": frozenset({"BIGINT", "UBIGINT"}),
    "float": frozenset({"BIGINT", "UBIGINT", "DOUBLE"}),
    "bool": frozenset({"BOOLEAN"}),
    "timestamp": frozenset({"BIGINT", "UBIGINT", "VARCHAR"}),  # text only when it parses (else VARCHAR!)
}


def _signature_query(groups: list[tuple[int, str, str]]) -> str | None:
    """SQL giving `_i, _k, _signature` for the candidates of the numbered event types `(k, contract, type)`.

    The signature lists, per contract property, its JSON type (`json_type`), `-` when absent or null, and
    `VARCHAR!` for a text timestamp that does not parse. The JSON paths are constants, so DuckDB parses
    each document once (event types with timestamp properties: once more for the texts)."""
    absent = f"'{_ABSENT}'"
    plain, timed, texts, timed_signatures = [], [], [], []
    for k, contract, event_type in groups:
        specs = get_contract(contract).event_type(event_type).properties
        if not specs:
            continue
        paths = "[" + ", ".join(_duck.sql_string(f"$.{p.name}") for p in specs) + "]"
        branch = f"WHEN {k} THEN json_type(_properties, {paths})"
        if not any(p.type == "timestamp" for p in specs):
            plain.append((k, branch))
            continue
        timed.append((k, branch))
        texts.append(f"WHEN {k} THEN json_extract_string(_properties, {paths})")
        entries = []
        for n, prop in enumerate(specs, start=1):
            entry = f"CASE WHEN jt[{n}] IS NULL OR jt[{n}] = 'NULL' THEN {absent} ELSE jt[{n}] END"
            if prop.type == "timestamp":
                entry = (
                    f"CASE WHEN jt[{n}] = 'VARCHAR' AND try_cast(v[{n}] AS TIMESTAMPTZ) IS NULL "
                    f"THEN '{_BAD_TIMESTAMP}' ELSE {entry} END"
                )
            entries.append(entry)
        timed_signatures.append(f"WHEN {k} THEN concat_ws(',', {', '.join(entries)})")
    selects = []
    if plain:
        types = "CASE _k " + " ".join(b for _, b in plain) + " END"
        selects.append(
            f"""SELECT _i, _k, array_to_string(list_transform({types},
                    lambda t: CASE WHEN t IS NULL OR t = 'NULL' THEN {absent} ELSE t END), ',') AS _signature
                FROM candidates WHERE _k IN ({", ".join(str(k) for k, _ in plain)})"""
        )
    if timed:
        # MATERIALIZED: otherwise DuckDB inlines `jt`/`v` into every reference and re-parses each time.
        selects.append(
            f"""WITH parsed AS MATERIALIZED (
                    SELECT _i, _k, CASE _k {" ".join(b for _, b in timed)} END AS jt,
                        CASE _k {" ".join(texts)} END AS v
                    FROM candidates WHERE _k IN ({", ".join(str(k) for k, _ in timed)})
                )
                SELECT _i, _k, CASE _k {" ".join(timed_signatures)} END AS _signature FROM parsed"""
        )
    return " UNION ALL ".join(f"({sql})" for sql in selects) or None


def _signature_problems(contract: str, event_type: str, signature: str) -> tuple[str | None, str | None, str | None]:
    """The first missing required property, the first mistyped property and its type, for a signature."""
    specs = get_contract(contract).event_type(event_type).properties
    kinds = signature.split(",")
    missing = next((p.name for p, t in zip(specs, kinds, strict=True) if p.required and t == _ABSENT), None)
    wrong = next((p for p, t in zip(specs, kinds, strict=True) if t != _ABSENT and t not in _TYPES_OK[p.type]), None)
    return missing, wrong.name if wrong else None, wrong.type if wrong else None


def property_problems(candidates: pl.DataFrame) -> pl.DataFrame:
    """Per record with a known event type: the first missing required property and the first mistyped one.

    One DuckDB pass parses each properties document once (the JSON paths of its event type are constants)
    and reduces it to a type signature ("VARCHAR,-,DOUBLE"); the few distinct (event type, signature)
    pairs are then judged against the contract in Python and joined back."""
    schema = {
        "_i": pl.UInt32,
        "_missing_property": pl.String,
        "_wrong_property": pl.String,
        "_wrong_property_type": pl.String,
    }
    groups = (
        candidates.select("_contract", "event_type").unique().sort("_contract", "event_type")
        .with_row_index("_k").with_columns(pl.col("_k").cast(pl.Int64))
    )
    query = _signature_query(groups.rows())
    if query is None:
        return pl.DataFrame(schema=schema)
    keyed = candidates.join(groups, on=["_contract", "event_type"], how="left").select("_i", "_k", "_properties")
    found = _duck.run_query(query, candidates=keyed).with_columns(pl.col("_k").cast(pl.Int64))
    verdicts = found.select("_k", "_signature").unique().join(groups, on="_k", how="left")
    rows = [(k, sig, *_signature_problems(contract, event_type, sig))
            for k, sig, contract, event_type in verdicts.select("_k", "_signature", "_contract", "event_type").rows()]
    judged = pl.DataFrame(
        rows, schema={"_k": pl.Int64, "_signature": pl.String, **{n: pl.String for n in list(schema)[1:]}},
        orient="row",
    ).filter(pl.col("_missing_property").is_not_null() | pl.col("_wrong_property").is_not_null())
    problems = found.join(judged, on=["_k", "_signature"], how="inner")
    return problems.select(pl.col(name).cast(dtype) for name, dtype in schema.items())


def _blank(name: str) -> pl.Expr:
    return pl.col(name).is_null() | (pl.col(name).str.strip_chars() == "")


def _time_missing() -> pl.Expr:
    return (
        pl.col("_time_native").is_null()
        & (pl.col("_time_text").is_null() | (pl.col("_time_text").str.strip_chars() == ""))
        & pl.col("_type_error").ne_missing("event_time")
    )


def any_missing() -> pl.Expr:
    return pl.any_horizontal([_blank(f) for f in REQUIRED_FIELDS if f != "event_time"] + [_time_missing()])


def wrong_type_text() -> pl.Expr:
    return (
        pl.when(pl.col("_type_error").is_not_null() & ~pl.col("_type_error").is_in(["amount", "currency"]))
        .then(pl.format("field {} has the wrong type", pl.col("_type_error")))
        .when(pl.col("_event_time").is_null())
        .then(pl.lit("event_time is neither ISO-8601 text nor epoch millis"))
        .when(pl.col("_properties").is_null())
        .then(pl.lit("properties is not a JSON object"))
        .otherwise(pl.lit(None, pl.String))
    )


def is_wrong_type() -> pl.Expr:
    return (
        (pl.col("_type_error").is_not_null() & ~pl.col("_type_error").is_in(["amount", "currency"]))
        | pl.col("_event_time").is_null()
        | pl.col("_properties").is_null()
    )


def amount_is_bad() -> pl.Expr:
    """True exactly when `amount_problem()` has a text (same conditions, no strings built)."""
    carries = pl.col("_carries_amount")
    amount, currency = pl.col("_amount"), pl.col("currency")
    return (
        pl.col("_type_error").is_in(["amount", "currency"]).fill_null(False)
        | pl.col("_amount_text_bad")
        | (amount.is_nan() | amount.is_infinite() | (amount < 0)).fill_null(False)
        | (carries & amount.is_null()).fill_null(False)
        | (carries & ~currency.fill_null("").str.contains(_ISO_CURRENCY)).fill_null(False)
        | (~carries & (amount.is_not_null() | currency.is_not_null())).fill_null(False)
    )


def missing_fields() -> pl.Expr:
    names = [
        pl.when(pl.col(f).is_null() | (pl.col(f).str.strip_chars() == "")).then(pl.lit(f)).otherwise(None)
        for f in REQUIRED_FIELDS
        if f != "event_time"
    ]
    names.append(pl.when(_time_missing()).then(pl.lit("event_time")).otherwise(None))
    return pl.concat_list(names).list.drop_nulls().list.join(", ")


def amount_problem() -> pl.Expr:
    """Human text of what is wrong with amount/currency, null when nothing is."""
    carries = pl.col("_carries_amount")
    amount, currency = pl.col("_amount"), pl.col("currency")
    return (
        pl.when(pl.col("_type_error") == "amount")
        .then(pl.lit("amount must be a JSON number"))
        .when(pl.col("_type_error") == "currency")
        .then(pl.lit("currency must be a string"))
        .when(pl.col("_amount_text_bad"))
        .then(pl.lit("amount is not a number"))
        .when(amount.is_nan() | amount.is_infinite() | (amount < 0))
        .then(pl.lit("amount must be a finite number >= 0"))
        .when(carries & amount.is_null())
        .then(pl.format("event type {} requires an amount", pl.col("event_type")))
        .when(carries & ~currency.fill_null("").str.contains(_ISO_CURRENCY))
        .then(pl.lit("currency must be a 3-letter ISO 4217 code"))
        .when(~carries & (amount.is_not_null() | currency.is_not_null()))
        .then(pl.format("event type {} carries no amount or currency", pl.col("event_type")))
        .otherwise(pl.lit(None, pl.String))
    )
