"""The PII pass of landing: replace PII values in an Arrow batch by their tenant's tokens.

`pseudonymise_batch` replaces PII fields (top-level columns and keys inside the `properties` JSON) by a
keyed hash under the tenant's key and keeps the raw value of recoverable fields only in the PII table,
encrypted under that key. The common shape of `properties` is handled vectorised; every other text goes
through the row-by-row reference path, and both give the same documents, tokens and PII rows.
"""

from __future__ import annotations

import functools
import hmac
import json
import re
import threading
from collections.abc import Iterable, Mapping
from typing import Any

import polars as pl
import pyarrow as pa
import pyarrow.compute as pc

from shironzi.errors import InvalidInputError
from shironzi.privacy.pii_table import PendingPiiRows, store_pii_rows
from shironzi.privacy.tokens import TOKEN_PATTERN, TOKEN_PREFIX, pseudonym
from shironzi.tenancy.keystore import TenantKeystore, get_keystore


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def pseudonymise_batch(
    table: pa.Table,
    *,
    pii_fields: Iterable[str],
    recoverable_fields: Iterable[str] = (),
    keystore: TenantKeystore | None = None,
    properties_column: str = "properties",
    table_uri: str | None = None,
    pending: PendingPiiRows | None = None,
) -> pa.Table:
    """Replace PII (top-level columns and keys inside the `properties` JSON) by per-tenant keyed hashes.

    Hashes are computed once per distinct (tenant, value); raw values of `recoverable_fields` are stored
    encrypted under the tenant key in the PII table. Ingestion calls it with the contract's
    `pii_fields(industry)` / `recoverable_pii_fields(industry)`. Values already tokenised stay as they are.
    With `pending`, the PII table rows are collected there (the caller stores them once, before its commit).
    """
    pii = set(pii_fields)
    recoverable = set(recoverable_fields)
    if not recoverable <= pii:
        raise InvalidInputError(f"recoverable fields {sorted(recoverable - pii)} are not marked PII")
    if "tenant_id" not in table.column_names:
        raise InvalidInputError("pseudonymisation needs a tenant_id column (keys are per tenant)")
    if "tenant_id" in pii:
        raise InvalidInputError("tenant_id cannot be pseudonymised: it scopes every row")
    if table.num_rows == 0 or not pii:
        return table
    store = keystore or get_keystore()
    tenant_column = table.column("tenant_id")
    if tenant_column.null_count:
        raise InvalidInputError("rows without a tenant_id cannot be pseudonymised")
    keys = store.get_or_create_keys(pc.unique(tenant_column).to_pylist())  # new tenants: one keystore commit
    cache: dict[tuple[str, str], str] = {}
    customer_column = table.column("customer_id") if "customer_id" in table.column_names else None
    pii_rows: dict[tuple[str, str], dict[str, Any]] = {}

    def token_for(tenant: str, field: str, value: Any, *, row: int, customer: str | None) -> Any:
        if value is None or (isinstance(value, str) and TOKEN_PATTERN.match(value)):
            return value
        text = _value_text(value)
        token = cache.get((tenant, text))
        if token is None:
            token = cache[(tenant, text)] = pseudonym(keys[tenant], text)
        if field in recoverable:
            _pii_row(pii_rows, tenant, token, field, customer, value, row)
        return token

    out = table
    columns = sorted(pii & set(table.column_names))
    if columns:
        tenants = tenant_column.to_pylist()
        customers = customer_column.to_pylist() if customer_column is not None else [None] * table.num_rows
        for name in columns:
            values = table.column(name).to_pylist()
            replaced = [
                token_for(t, name, v, row=i, customer=customers[i])
                for i, (t, v) in enumerate(zip(tenants, values, strict=True))
            ]
            out = out.set_column(out.schema.get_field_index(name), name, pa.array(replaced, pa.string()))
    if properties_column in table.column_names:
        column = table.column(properties_column)
        # Only rows whose JSON text mentions a PII key are looked at (a vectorised pre-filter).
        pattern = "|".join(re.escape(json.dumps(f)) for f in sorted(pii))
        mentions = pc.fill_null(pc.match_substring_regex(column, pattern), False)
        if isinstance(mentions, pa.ChunkedArray):
            mentions = mentions.combine_chunks()
        rows = pc.indices_nonzero(mentions)
        if len(rows):
            texts = _tokenise_properties(
                pc.take(column, rows),
                rows,
                pc.take(tenant_column, rows),
                pc.take(customer_column, rows) if customer_column is not None else None,
                sorted(pii),
                recoverable,
                keys,
                token_for,
                pii_rows,
            )
            kind = table.schema.field(properties_column).type
            replaced_texts = pc.replace_with_mask(column.combine_chunks(), mentions, texts.cast(kind))
            out = out.set_column(
                out.schema.get_field_index(properties_column), table.schema.field(properties_column), replaced_texts
            )
    if pii_rows:
        entries = [{k: v for k, v in e.items() if k != "_row"} for e in pii_rows.values()]
        if pending is not None:
            pending.add(entries, keys, keystore=store)
        else:
            store_pii_rows(entries, keys, table_uri=table_uri, keystore=store)
    return out


def _tokenise_properties(
    texts: Any,
    rows: Any,
    tenants: Any,
    customers: Any,
    fields: list[str],
    recoverable: set[str],
    keys: Mapping[str, bytes],
    token_for: Any,
    pii_rows: dict[tuple[str, str], dict[str, Any]],
) -> pa.Array:
    """The tokenised texts of the candidate rows (Arrow arrays: texts, their row numbers, tenants, customers).

    The common shape is handled vectorised; the rest (nested or escaped text, duplicate keys, non-string
    values) is parsed row by row, the reference way."""
    frame = pl.DataFrame(
        {
            "_n": pl.int_range(0, len(rows), eager=True, dtype=pl.Int64),
            "_row": pl.Series(rows).cast(pl.Int64),
            "tenant_id": pl.Series(tenants).cast(pl.String),
            "customer_id": pl.Series(customers).cast(pl.String) if customers is not None
            else pl.Series([None] * len(rows), dtype=pl.String),
            "text": pl.Series(texts).cast(pl.String),
        }
    )
    done = _tokenise_flat_properties(frame, keys, fields, recoverable, pii_rows)
    merged = frame.join(done.rename({"text": "_new"}), on="_n", how="left", maintain_order="left")
    rest = merged.filter(pl.col("_new").is_null()).select("_n", "_row", "tenant_id", "customer_id", "text")
    pii = set(fields)
    fixed = [
        (
            n,
            _tokenise_document(
                text, pii, functools.partial(token_for, tenant, row=row, customer=customer)
            ),
        )
        for n, row, tenant, customer, text in rest.iter_rows()
    ]
    if fixed:
        merged = merged.join(
            pl.DataFrame(fixed, schema={"_n": pl.Int64, "_fixed": pl.String}, orient="row"),
            on="_n", how="left", maintain_order="left",
        ).with_columns(pl.coalesce("_new", "_fixed").alias("_new"))
    return merged.get_column("_new").to_arrow()


def _pii_row(
    pii_rows: dict[tuple[str, str], dict[str, Any]],
    tenant: str,
    token: str,
    field: str,
    customer: str | None,
    value: Any,
    row: int,
) -> None:
    """Record a recoverable value's PII table row; a token seen several times keeps its first row's."""
    known = pii_rows.get((tenant, token))
    if known is None or row < known["_row"]:
        pii_rows[(tenant, token)] = {
            "tenant_id": tenant,
            "token": token,
            "field": field,
            "customer_id": customer,
            "raw": json.dumps(value),
            "_row": row,
        }


def _tokenise_document(text: str | None, pii: set[str], tokenise: Any) -> str | None:
    """The reference path for one properties text: parse it, replace its top-level PII keys, re-serialise.

    Text that is not a JSON object is left as it is."""
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    if not isinstance(doc, dict):
        return text
    changed = False
    for name in sorted(pii & doc.keys()):
        new = tokenise(name, doc[name])
        changed = changed or new != doc[name]
        doc[name] = new
    return json.dumps(doc, separators=(",", ":")) if changed else text


_PLAIN_FIELD = re.compile(r"^[A-Za-z0-9_]+$")
_JSON_SPACE = " \t\n\r"
_duck_local = threading.local()


def _json_valid(texts: Any) -> Any:
    """`json_valid` of a polars String Series, evaluated by DuckDB over the whole column at once."""
    con = getattr(_duck_local, "con", None)
    if con is None:
        import duckdb

        con = _duck_local.con = duckdb.connect(":memory:")
    con.register("_pii_texts", pl.DataFrame({"text": texts}).to_arrow())
    try:
        return con.sql("SELECT coalesce(json_valid(text), false) AS ok FROM _pii_texts").pl().get_column("ok")
    finally:
        con.unregister("_pii_texts")


def _tokenise_flat_properties(
    frame: Any,
    keys: Mapping[str, bytes],
    fields: list[str],
    recoverable: set[str],
    pii_rows: dict[tuple[str, str], dict[str, Any]],
) -> Any:
    """Vectorised tokenisation of the common case: `_n, text` (tokenised) of the rows of `frame`
    (`_n, _row, tenant_id, customer_id, text`) it handled.

    Handled: valid JSON objects holding no other object (a single `{`), no backslash, and each PII key at
    most once, written `"key":"value"` or `"key":null`. There a string's raw text is its value and every key
    is top level, so values are swapped for tokens in the text itself with literal splits (the rest of the
    document is kept byte for byte). Everything else is left to the row-by-row reference path."""
    none = pl.DataFrame(schema={"_n": pl.Int64, "text": pl.String})
    if frame.is_empty() or not all(_PLAIN_FIELD.match(f) for f in fields):
        return none
    text = pl.col("text")
    plain = [
        text.is_not_null(),
        ~text.str.contains("\\", literal=True),
        text.str.strip_chars_start(_JSON_SPACE).str.starts_with("{"),
        text.str.count_matches("{", literal=True) == 1,
    ]
    for f in fields:
        key = json.dumps(f)
        plain.append(
            (text.str.count_matches(key, literal=True) == 0)
            | (
                (text.str.count_matches(key, literal=True) == 1)
                & (text.str.contains(f"{key}:\"", literal=True) | text.str.contains(f"{key}:null", literal=True))
            )
        )
    simple = frame.filter(pl.all_horizontal(plain).fill_null(False))
    if simple.is_empty():
        return none
    simple = simple.filter(_json_valid(simple.get_column("text")))
    if simple.is_empty():
        return none
    # Every PII string value, split out of its text: prefix + '"key":"' + value + '"' + suffix.
    found = []
    for f in fields:
        opener = f"{json.dumps(f)}:\""
        rest = text.str.splitn(opener, 2).struct.field("field_1")
        found.append(
            simple.filter(text.str.contains(opener, literal=True)).select(
                "_n", "_row", "tenant_id", "customer_id", pl.lit(f).alias("field"),
                rest.str.splitn('"', 2).struct.field("field_0").alias("value"),
            )
        )
    values = pl.concat(found)
    distinct = values.select("tenant_id", "value").unique()
    distinct = distinct.with_columns(
        pl.Series(
            "token",
            [
                v if TOKEN_PATTERN.match(v) else TOKEN_PREFIX + hmac.digest(keys[t], v.encode(), "sha256").hex()[:32]
                for t, v in distinct.iter_rows()
            ],
            dtype=pl.String,
        )
    )
    values = values.join(distinct, on=["tenant_id", "value"], how="left")
    for tenant, token, name, customer, value, row in (
        values.filter(pl.col("field").is_in(sorted(recoverable)) & (pl.col("token") != pl.col("value")))
        .sort("_row", "field")
        .unique(subset=["tenant_id", "token"], keep="first", maintain_order=True)
        .select("tenant_id", "token", "field", "customer_id", "value", "_row")
        .iter_rows()
    ):
        _pii_row(pii_rows, tenant, token, name, customer, value, row)
    out = simple.select("_n", "text")
    for f in fields:
        opener = f"{json.dumps(f)}:\""
        tokens = values.filter(pl.col("field") == f).select("_n", pl.col("token").alias("_token"))
        if tokens.is_empty():
            continue
        parts = text.str.splitn(opener, 2)
        head, rest = parts.struct.field("field_0"), parts.struct.field("field_1")
        tail = rest.str.splitn('"', 2).struct.field("field_1")
        out = (
            out.join(tokens, on="_n", how="left", maintain_order="left")
            .with_columns(
                pl.when(pl.col("_token").is_not_null())
                .then(pl.concat_str(head, pl.lit(opener), pl.col("_token"), pl.lit('"'), tail))
                .otherwise(text)
                .alias("text")
            )
            .drop("_token")
        )
    return out
