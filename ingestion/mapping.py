"""Column mappings for importing a tenant's own history: a YAML file names, for each contract field, the
source column, SQL expression or constant it comes from, and how to read timestamps.

    mapping = load_mapping("mapping.yaml", contract=get_contract("ecommerce@v1"))  # checks it, reads no row
    records = mapping.apply(frame, tenant_id=tenant.id)   # a records frame for `validate_batch`

The shape (every key but `fields`/`events` optional; see the README, *Importing a history*)::

    timestamp: {format: "%m/%d/%Y %H:%M", timezone: Europe/London}
    event_type: order_placed            # a constant, {column: C, values: {raw: type}} or {expr: "CASE ..."}
    fields:                             # shared by every event type
      event_id: InvoiceNo               # a column name, {column: C}, {expr: "SQL"} or {const: V}
      customer_id: CustomerID
      event_time: InvoiceDate
      currency: {const: GBP}
    events:                             # per event type: its own fields (amount, ...) and properties
      order_placed:
        amount: {expr: "CAST(Quantity AS DOUBLE) * CAST(UnitPrice AS DOUBLE)"}
        properties: {order_id: InvoiceNo, item_count: Quantity}

`tenant_id` is never mapped: the import fills it from `--tenant`. Optional contract properties may be left
out; a required field or property without a source is an error raised here, before any row is read.
Expressions are SQL (`polars.sql_expr`), evaluated column-wise: no Python runs from a mapping.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import polars as pl

from ingestion.contracts.model import Contract, EventTypeSpec
from ingestion.contracts.schema import RAW_PAYLOAD
from shironzi.errors import InvalidInputError

TOP_LEVEL_KEYS = frozenset({"source", "timestamp", "event_type", "fields", "events"})
MAPPED_FIELDS = ("event_id", "customer_id", "event_time", "amount", "currency")
CORE_FIELDS = ("event_id", "customer_id", "event_time")  # every event type needs these
AMOUNT_FIELDS = ("amount", "currency")  # only, and always, for event types that carry an amount
UNPARSED_TIME = "unparsed timestamp: "  # prefix of a text timestamp the mapping's format did not read


@dataclass(frozen=True)
class Source:
    """Where one mapped value comes from: a column, a SQL expression or a constant."""

    kind: str  # "column" | "expr" | "const"
    value: Any
    expr: pl.Expr

    @property
    def columns(self) -> list[str]:
        """The source columns this value reads."""
        if self.kind == "column":
            return [str(self.value)]
        return self.expr.meta.root_names() if self.kind == "expr" else []


def _source(where: str, raw: Any) -> Source:
    """A source from its YAML form: `Column`, `{column: C}`, `{expr: "SQL"}` or `{const: V}`."""
    if isinstance(raw, str):
        raw = {"column": raw}
    if not isinstance(raw, Mapping) or len(raw) != 1 or next(iter(raw)) not in ("column", "expr", "const"):
        raise InvalidInputError(
            f"mapping: {where} must be a column name, {{column: C}}, {{expr: SQL}} or {{const: V}}, got {raw!r}"
        )
    kind, value = next(iter(raw.items()))
    if kind == "const":
        if isinstance(value, Mapping | list):
            raise InvalidInputError(f"mapping: {where} const must be a scalar, got {value!r}")
        return Source(kind, value, pl.lit(value))
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"mapping: {where} {kind} must be a non-empty string")
    if kind == "column":
        return Source(kind, value, pl.col(value))
    try:
        expr = pl.sql_expr(value)
    except Exception as exc:  # polars' SQL parser errors
        raise InvalidInputError(f"mapping: {where} expr {value!r} is not valid SQL: {exc}") from exc
    return Source(kind, value, expr)


@dataclass(frozen=True)
class EventMapping:
    """The sources of one event type: its fields and its contract properties."""

    spec: EventTypeSpec
    fields: dict[str, Source]
    properties: dict[str, Source]


@dataclass(frozen=True)
class TypeRule:
    """How a row's event type is found: a constant, a column (optionally recoded) or an expression."""

    source: Source
    values: dict[str, str] = field(default_factory=dict)

    def expr(self) -> pl.Expr:
        expr = self.source.expr.cast(pl.String)
        if self.values:
            expr = expr.replace(self.values)
        return expr


@dataclass(frozen=True)
class ColumnMapping:
    """A checked mapping for one contract: per event type, where each field and property comes from."""

    contract: Contract
    events: dict[str, EventMapping]
    type_rule: TypeRule
    time_format: str | None = None
    timezone: str = "UTC"
    source_options: dict[str, Any] = field(default_factory=dict)
    digest: str = ""  # identifies the mapping: part of an import's identity (a new mapping lands anew)

    @property
    def columns(self) -> list[str]:
        """Every source column the mapping reads."""
        sources = [self.type_rule.source]
        for event in self.events.values():
            sources += [*event.fields.values(), *event.properties.values()]
        return sorted({c for s in sources for c in s.columns})

    def check_columns(self, available: list[str], *, where: str) -> None:
        """Refuse a source that lacks a column the mapping reads (one line naming the first few)."""
        missing = [c for c in self.columns if c not in available]
        if missing:
            raise InvalidInputError(
                f"{where} has no column(s) {', '.join(map(repr, missing))} named by the mapping "
                f"(its columns: {', '.join(available[:20])})"
            )

    def apply(self, frame: pl.DataFrame, *, tenant_id: str) -> pl.DataFrame:
        """The records frame (`RECORD_FIELDS` + `raw_payload`) of a source frame, one row per source row.

        Values a cast cannot read are kept as text, so the contract check quarantines them with its reason
        (`wrong_type`, `wrong_property_type`, `invalid_amount`) instead of losing them."""
        source_columns = frame.columns
        frame = frame.with_columns(self.type_rule.expr().alias("_event_type"))
        event_type = pl.col("_event_type")

        def per_type(name: str, convert: Any = None) -> pl.Expr:
            out: Any = pl.lit(None, pl.String)
            for type_name, event in self.events.items():
                source = event.fields.get(name)
                if source is not None:
                    value = source.expr if convert is None else convert(source.expr)
                    out = pl.when(event_type == type_name).then(value.cast(pl.String)).otherwise(out)
            return out

        def text(expr: pl.Expr) -> pl.Expr:
            return expr.cast(pl.String).str.strip_chars()

        return frame.select(
            pl.lit(tenant_id, pl.String).alias("tenant_id"),
            per_type("event_id", text).alias("event_id"),
            per_type("customer_id", text).alias("customer_id"),
            event_type.alias("event_type"),
            self._event_time(frame, per_type).alias("event_time"),
            per_type("amount", text).alias("amount"),
            per_type("currency", text).alias("currency"),
            self._properties(event_type).alias("properties"),
            pl.struct(source_columns).struct.json_encode().alias(RAW_PAYLOAD),
        )

    def _event_time(self, frame: pl.DataFrame, per_type: Any) -> pl.Expr:
        """Event times as ISO-8601 UTC text; with a `format`, text the format cannot read is marked."""
        sources = {e.fields["event_time"].kind + str(e.fields["event_time"].value)
                   for e in self.events.values() if "event_time" in e.fields}
        probe = next(e.fields["event_time"].expr for e in self.events.values() if "event_time" in e.fields)
        dtype = frame.select(probe).to_series().dtype if len(sources) == 1 else pl.String
        raw = probe if len(sources) == 1 else per_type("event_time")
        if isinstance(dtype, pl.Datetime):
            local = raw if dtype.time_zone else raw.dt.replace_time_zone(self.timezone, ambiguous="earliest")
            return local.dt.convert_time_zone("UTC").dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ")
        if dtype == pl.Date:
            return raw.dt.strftime("%Y-%m-%dT00:00:00Z")
        if dtype.is_integer():
            return raw.cast(pl.String)  # epoch milliseconds, read by the contract check
        if self.time_format is None:
            return raw.cast(pl.String)  # ISO-8601 text (with an offset, or UTC)
        text = raw.cast(pl.String).str.strip_chars()
        parsed = (
            text.str.strptime(pl.Datetime("us"), self.time_format, strict=False)
            .dt.replace_time_zone(self.timezone, ambiguous="earliest", non_existent="null")
            .dt.convert_time_zone("UTC")
        )
        return (
            pl.when(parsed.is_not_null())
            .then(parsed.dt.strftime("%Y-%m-%dT%H:%M:%S%.fZ"))
            .when(text.is_not_null() & (text != ""))
            .then(pl.lit(UNPARSED_TIME) + text)
            .otherwise(pl.lit(None, pl.String))
        )

    def _properties(self, event_type: pl.Expr) -> pl.Expr:
        out: Any = pl.lit("{}")
        for type_name, event in self.events.items():
            if not event.properties:
                continue
            typed, raw, readable = [], [], []
            for name, source in event.properties.items():
                value = _typed(source.expr, event.spec.property(name).type)
                typed.append(value.alias(name))
                raw.append(source.expr.cast(pl.String).alias(name))
                readable.append(value.is_not_null() | source.expr.is_null())
            encoded = (
                pl.when(pl.all_horizontal(readable))
                .then(pl.struct(typed).struct.json_encode())
                .otherwise(pl.struct(raw).struct.json_encode())
            )
            out = pl.when(event_type == type_name).then(encoded).otherwise(out)
        return out


def _typed(expr: pl.Expr, kind: str) -> pl.Expr:
    """A source value cast to a contract property type (null where it cannot be read)."""
    if kind == "int":
        as_float = expr.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
        return pl.when(as_float == as_float.floor()).then(as_float.cast(pl.Int64, strict=False))
    if kind == "float":
        return expr.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
    if kind == "bool":
        text = expr.cast(pl.String).str.strip_chars().str.to_lowercase()
        return (pl.when(text.is_in(["true", "1", "yes", "y", "t"])).then(True)
                .when(text.is_in(["false", "0", "no", "n", "f"])).then(False)
                .otherwise(pl.lit(None, pl.Boolean)))
    return expr.cast(pl.String)  # string; timestamp text is read by the contract check


def _type_rule(raw: Any, events: Mapping[str, Any]) -> tuple[TypeRule, list[str]]:
    """The event-type rule and the event types rows may get (checked against the contract)."""
    if raw is None:
        if len(events) != 1:
            raise InvalidInputError(
                "mapping: give `event_type` (a constant, {column: C} or {expr: SQL}) when `events` names "
                "more than one event type"
            )
        raw = {"const": next(iter(events))}
    if isinstance(raw, str):
        raw = {"const": raw}
    if not isinstance(raw, Mapping):
        raise InvalidInputError(f"mapping: event_type must be a name or a mapping, got {raw!r}")
    values = raw.get("values")
    rest = {k: v for k, v in raw.items() if k != "values"}
    source = _source("event_type", rest)
    if values is not None:
        if source.kind != "column" or not isinstance(values, Mapping) or not values:
            raise InvalidInputError("mapping: event_type `values` recodes a column: {column: C, values: {raw: type}}")
        recode = {str(k): str(v) for k, v in values.items()}
        return TypeRule(source, recode), sorted(set(recode.values()))
    if source.kind == "const":
        return TypeRule(source), [str(source.value)]
    if not events:
        raise InvalidInputError("mapping: with event_type from a column or an expr, `events` must name its types")
    return TypeRule(source), sorted(events)


def _event_mapping(contract: Contract, name: str, shared: Mapping[str, Source], body: Any) -> EventMapping:
    where = f"event type {name}"
    try:
        spec = contract.event_type(name)
    except KeyError:
        raise InvalidInputError(
            f"mapping: {where} is not in contract {contract.ref} (its types: {', '.join(contract.event_type_names)})"
        ) from None
    body = dict(body or {})
    raw_properties = body.pop("properties", None) or {}
    unknown = set(body) - set(MAPPED_FIELDS)
    if "tenant_id" in body:
        raise InvalidInputError("mapping: tenant_id is filled by the import from --tenant; remove it")
    if unknown:
        raise InvalidInputError(f"mapping: {where} has unknown key(s) {sorted(unknown)}")
    fields = {**shared, **{k: _source(f"{where}: {k}", v) for k, v in body.items()}}
    wanted = CORE_FIELDS + (AMOUNT_FIELDS if spec.carries_amount else ())
    for needed in wanted:
        if needed not in fields:
            raise InvalidInputError(
                f"mapping: {where}: required field {needed!r} has no source (give a column, an expr or a const)"
            )
    if not spec.carries_amount:
        fields = {k: v for k, v in fields.items() if k not in AMOUNT_FIELDS}
    if not isinstance(raw_properties, Mapping):
        raise InvalidInputError(f"mapping: {where}: properties must be a mapping of property -> source")
    known = {p.name for p in spec.properties}
    extra = sorted(set(raw_properties) - known)
    if extra:
        raise InvalidInputError(
            f"mapping: {where}: {', '.join(extra)} not in contract {contract.ref} (known: {', '.join(sorted(known))})"
        )
    properties = {p: _source(f"{where}: property {p}", raw_properties[p]) for p in known & set(raw_properties)}
    for prop in spec.properties:
        if prop.required and prop.name not in properties:
            raise InvalidInputError(
                f"mapping: {where}: required property {prop.name!r} has no source "
                "(give a column, an expr or a const)"
            )
    ordered = {p.name: properties[p.name] for p in spec.properties if p.name in properties}
    return EventMapping(spec, fields, ordered)


def parse_mapping(data: Any, *, contract: Contract) -> ColumnMapping:
    """Check a mapping (already parsed YAML) against a contract; reads no data."""
    if not isinstance(data, Mapping):
        raise InvalidInputError("mapping: the file must hold a YAML mapping (timestamp, event_type, fields, events)")
    unknown = set(data) - TOP_LEVEL_KEYS
    if unknown:
        known = ", ".join(sorted(TOP_LEVEL_KEYS))
        raise InvalidInputError(f"mapping: unknown key(s) {sorted(unknown)}; known: {known}")
    raw_fields = data.get("fields") or {}
    raw_events = data.get("events") or {}
    if not isinstance(raw_fields, Mapping) or not isinstance(raw_events, Mapping):
        raise InvalidInputError("mapping: `fields` and `events` must be mappings")
    if "tenant_id" in raw_fields:
        raise InvalidInputError("mapping: tenant_id is filled by the import from --tenant; remove it")
    bad = set(raw_fields) - set(MAPPED_FIELDS)
    if bad:
        raise InvalidInputError(f"mapping: fields has unknown key(s) {sorted(bad)}; known: {', '.join(MAPPED_FIELDS)}")
    stamp = data.get("timestamp") or {}
    if not isinstance(stamp, Mapping) or set(stamp) - {"format", "timezone"}:
        raise InvalidInputError("mapping: timestamp takes `format` (strptime) and `timezone` (IANA name)")
    timezone = str(stamp.get("timezone") or "UTC")
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(
            f"mapping: unknown time zone {timezone!r} (use an IANA name, e.g. Europe/London)"
        ) from None
    source = data.get("source") or {}
    if not isinstance(source, Mapping) or set(source) - {"format", "sql"}:
        raise InvalidInputError("mapping: source takes `format` (csv, jsonl, parquet) and `sql` (a query)")
    shared = {k: _source(k, v) for k, v in raw_fields.items()}
    rule, types = _type_rule(data.get("event_type"), raw_events)
    events = {name: _event_mapping(contract, name, shared, raw_events.get(name)) for name in types}
    digest = hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
    return ColumnMapping(contract, events, rule, stamp.get("format"), timezone, dict(source), digest)


def load_mapping(path: str | Path, *, contract: Contract) -> ColumnMapping:
    """Read and check a mapping YAML file (see the module docstring)."""
    import yaml  # type: ignore[import-untyped]

    file = Path(path).expanduser()
    if not file.is_file():
        raise InvalidInputError(f"mapping file {str(file)!r} does not exist")
    try:
        data = yaml.safe_load(file.read_text())
    except yaml.YAMLError as exc:
        raise InvalidInputError(f"mapping {file.name}: not valid YAML: {' '.join(str(exc).split())}") from exc
    try:
        return parse_mapping(data, contract=contract)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{file.name}: {exc.message}") from None
