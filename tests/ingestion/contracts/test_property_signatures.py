"""Property checks over a whole mixed batch: every event type of every contract, every property made absent,
null or of each wrong JSON type, judged in one validation call and compared with a plain-Python reading of
the contract (first missing required property wins, else the first mistyped property)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import polars as pl

from ingestion.contracts import get_contract, industries, tenants_frame, validate_payloads
from ingestion.contracts.model import PropertySpec

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
TENANT = {"ecommerce": "shop", "healthcare": "clinic", "education": "school"}
TENANTS = tenants_frame([(tenant, industry, "active") for industry, tenant in TENANT.items()])
GOOD = {"string": "x-1", "int": 3, "float": 2.5, "bool": True, "timestamp": "2024-01-02T03:04:05Z"}
ABSENT = object()
# JSON values to try in a property's place, whatever its type.
TRIALS: list[Any] = [ABSENT, None, "text", "next tuesday", "2024-01-02T03:04:05Z", 7, -2, 1.5, False, [1], {"a": 1}]


def accepts(prop: PropertySpec, value: Any) -> bool:
    """The contract's type rule for a present, non-null JSON value."""
    if prop.type == "string":
        return isinstance(value, str)
    if prop.type == "bool":
        return isinstance(value, bool)
    if prop.type == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if prop.type == "float":
        return isinstance(value, int | float) and not isinstance(value, bool)
    assert prop.type == "timestamp"
    if isinstance(value, str):
        return value == "2024-01-02T03:04:05Z"  # the only parseable text among TRIALS
    return isinstance(value, int) and not isinstance(value, bool)


def expected_reason(event_type: str, specs: tuple[PropertySpec, ...], props: dict[str, Any]) -> str | None:
    for prop in specs:
        if prop.required and props.get(prop.name) is None:
            return f"event type {event_type} requires property {prop.name}"
    for prop in specs:
        value = props.get(prop.name)
        if value is not None and not accepts(prop, value):
            return f"property {prop.name} must be {prop.type}"
    return None


def test_every_property_of_every_event_type_is_judged_like_the_contract_says() -> None:
    records: list[dict[str, Any]] = []
    expected: dict[str, str | None] = {}
    for industry in industries():
        for event_type in get_contract(industry).event_type_names:
            spec = get_contract(industry).event_type(event_type)
            for target in spec.properties:
                for n, trial in enumerate(TRIALS):
                    props = {p.name: GOOD[p.type] for p in spec.properties}
                    if trial is ABSENT:
                        props.pop(target.name)
                    else:
                        props[target.name] = trial
                    if n % 3 == 0 and len(spec.properties) > 1:  # a second property goes wrong too
                        other = spec.properties[-1] if spec.properties[-1] is not target else spec.properties[0]
                        props[other.name] = {"nested": True}
                    event_id = f"{event_type}-{target.name}-{n}"
                    record = {
                        "tenant_id": TENANT[industry], "event_id": event_id, "customer_id": "c-1",
                        "event_type": event_type, "event_time": "2024-05-01T10:00:00Z", "properties": props,
                    }
                    if spec.carries_amount:
                        record.update(amount=10, currency="USD")
                    records.append(record)
                    expected[event_id] = expected_reason(event_type, spec.properties, props)
    payloads = [json.dumps(r) for r in records]
    result = validate_payloads(payloads, [f"p:{i}" for i in range(len(payloads))], tenants=TENANTS, now=NOW,
                               source="test")
    assert result.reconciles()
    positions = {f"p:{i}": r["event_id"] for i, r in enumerate(records)}
    got: dict[str, str | None] = dict.fromkeys(expected)
    quarantined = pl.from_arrow(result.quarantined.select(["position", "reason_code", "reason"]))
    assert isinstance(quarantined, pl.DataFrame)
    for position, code, reason in quarantined.iter_rows():
        assert code in ("missing_property", "wrong_property_type"), (code, reason)
        got[positions[position]] = reason
    assert got == expected
    assert 0 < sum(v is None for v in expected.values()) < len(expected) // 2  # both outcomes are exercised
    assert result.valid.num_rows == sum(v is None for v in expected.values())
