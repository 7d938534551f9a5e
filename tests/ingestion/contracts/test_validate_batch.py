"""Vectorised decoding and validation: every reason code, every event type, reconciliation, garbage."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import pytest

from ingestion.contracts import (
    REASON_CODES,
    decode_json_records,
    get_contract,
    industries,
    tenants_frame,
    validate_batch,
    validate_payloads,
)
from shironzi.errors import InvalidInputError

NOW = datetime(2024, 6, 1, 12, 0, tzinfo=UTC)
TENANTS = tenants_frame(
    [
        ("shop", "ecommerce", "active"),
        ("clinic", "healthcare", "active"),
        ("school", "education", "active"),
        ("paused", "ecommerce", "suspended"),
        ("leaving", "ecommerce", "offboarding"),
        ("gone", "ecommerce", "deleted"),
    ]
)
SAMPLE = {"string": "x-1", "int": 3, "float": 2.5, "bool": True, "timestamp": "2024-01-02T03:04:05Z"}
INDUSTRY_TENANT = {"ecommerce": "shop", "healthcare": "clinic", "education": "school"}


def order(**changes: Any) -> dict[str, Any]:
    """A valid ecommerce order_placed record, with some fields changed (Ellipsis removes a field)."""
    record: dict[str, Any] = {
        "tenant_id": "shop",
        "event_id": "e-1",
        "customer_id": "c-1",
        "event_type": "order_placed",
        "event_time": "2024-05-01T10:00:00Z",
        "amount": 19.99,
        "currency": "EUR",
        "properties": {
            "order_id": "o-1",
            "item_count": 2,
            "payment_method": "card",
            "shipping_postcode": "AB1",
        },
    }
    record.update(changes)
    return {k: v for k, v in record.items() if v is not ...}


def run(records: list[Any]) -> Any:
    payloads = [r if isinstance(r, str) else json.dumps(r) for r in records]
    return validate_payloads(
        payloads, [f"test:{i}" for i in range(len(payloads))], tenants=TENANTS, now=NOW, source="test"
    )


def only_reason(record: Any) -> str | None:
    result = run([record])
    assert result.reconciles()
    codes = result.quarantined.column("reason_code").to_pylist()
    return codes[0] if codes else None


@pytest.mark.parametrize(
    ("record", "code"),
    [
        ('{"tenant_id": "shop", "event_id": ', "malformed_json"),
        ("[1, 2, 3]", "malformed_json"),
        (order(event_id=...), "missing_field"),
        (order(customer_id=""), "missing_field"),
        (order(event_time=None), "missing_field"),
        (order(customer_id=42), "wrong_type"),
        (order(event_time="next tuesday"), "wrong_type"),
        (order(event_time=True), "wrong_type"),
        (order(properties=[1, 2]), "wrong_type"),
        (order(properties="not json"), "wrong_type"),
        (order(tenant_id="nobody"), "unknown_tenant"),
        (order(tenant_id="paused"), "tenant_inactive"),
        (order(tenant_id="leaving"), "tenant_inactive"),
        (order(tenant_id="gone"), "tenant_inactive"),
        (order(event_type="teleported"), "unknown_event_type"),
        (
            order(properties={"order_id": "o-1", "payment_method": "card"}),
            "missing_property",
        ),
        (
            order(
                properties={
                    "order_id": "o-1",
                    "item_count": "2",
                    "payment_method": "card",
                    "shipping_postcode": "A",
                }
            ),
            "wrong_property_type",
        ),
        (order(event_time="2024-06-01T12:30:00Z"), "future_timestamp"),
        (order(amount=-5), "invalid_amount"),
        (order(amount=None), "invalid_amount"),
        (order(amount="19.99"), "invalid_amount"),
        (order(currency="euro"), "invalid_amount"),
        (
            order(event_type="session_started", properties={"session_id": "s", "device": "web"}),
            "invalid_amount",
        ),
    ],
)
def test_each_reason_code_triggers_on_a_hand_made_record(record: Any, code: str) -> None:
    assert only_reason(record) == code


def test_every_reason_code_is_covered_above() -> None:
    assert set(REASON_CODES) == {
        "malformed_json",
        "missing_field",
        "wrong_type",
        "unknown_tenant",
        "tenant_inactive",
        "unknown_event_type",
        "missing_property",
        "wrong_property_type",
        "future_timestamp",
        "invalid_amount",
    }


def valid_record(industry: str, event_type: str, n: int) -> dict[str, Any]:
    spec = get_contract(industry).event_type(event_type)
    record: dict[str, Any] = {
        "tenant_id": INDUSTRY_TENANT[industry],
        "event_id": f"{event_type}-{n}",
        "customer_id": "c-9",
        "event_type": event_type,
        "event_time": 1714557600000 + n,
        "properties": {p.name: SAMPLE[p.type] for p in spec.properties},
    }
    if spec.carries_amount:
        record.update(amount=10, currency="USD")
    return record


def test_valid_records_of_every_event_type_of_every_industry_pass() -> None:
    records = [
        valid_record(i, et, n) for i in industries() for n, et in enumerate(get_contract(i).event_type_names)
    ]
    result = run(records)
    assert result.quarantined.num_rows == 0, result.quarantined.column("reason").to_pylist()
    assert result.valid.num_rows == len(records) == 24
    valid = pl.from_arrow(result.valid)
    assert valid.get_column("event_date").unique().to_list() == [datetime(2024, 5, 1).date()]
    assert (valid.get_column("ingested_at") == NOW).all()
    assert valid.get_column("source").unique().to_list() == ["test"]
    assert json.loads(valid.get_column("properties")[0]) == records[0]["properties"]


def test_another_industrys_event_type_is_rejected() -> None:
    record = valid_record("education", "lesson_completed", 1) | {"tenant_id": "shop"}
    result = run([record])
    assert result.quarantined.column("reason_code").to_pylist() == ["unknown_event_type"]
    assert "ecommerce@v1" in result.quarantined.column("reason")[0].as_py()


def test_properties_as_json_string_and_epoch_millis_are_normalised() -> None:
    result = run([order(properties=json.dumps(order()["properties"]), event_time=1714557600000)])
    valid = pl.from_arrow(result.valid)
    assert valid.item(0, "event_time") == datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    assert json.loads(valid.item(0, "properties"))["order_id"] == "o-1"


def test_a_mixed_batch_reconciles_exactly_and_drops_in_batch_duplicates() -> None:
    records = [order(event_id=f"e-{i}") for i in range(10)] + [order(event_id="e-3"), order(event_id="e-4")]
    records += [
        order(tenant_id="nobody"),
        "{broken",
        order(amount=-1),
        order(event_id="e-3", tenant_id="gone"),
    ]
    result = run(records)
    assert result.reconciles()
    assert result.input_rows == len(records) == 16
    assert result.valid.num_rows == 10
    assert result.duplicates_in_batch == 2
    assert result.counts_by_reason == {
        "malformed_json": 1,
        "unknown_tenant": 1,
        "tenant_inactive": 1,
        "invalid_amount": 1,
    }
    assert result.quarantined.column("position").to_pylist() == ["test:13", "test:12", "test:14", "test:15"]
    assert result.quarantined.column("raw_payload")[0].as_py() == "{broken"
    assert result.quarantined.column("tenant_id").to_pylist() == [None, "nobody", "shop", "gone"]


def test_typed_frames_from_files_validate_like_json() -> None:
    frame = pl.DataFrame(
        {
            "tenant_id": ["shop", "shop", "shop"],
            "event_id": ["a", "b", "c"],
            "customer_id": ["c", "c", "c"],
            "event_type": ["order_placed", "order_placed", "session_started"],
            "event_time": [datetime(2024, 5, 1, tzinfo=UTC), datetime(2024, 5, 2, tzinfo=UTC), None],
            "amount": [1.5, None, None],
            "currency": ["EUR", "EUR", None],
            "properties": [json.dumps(order()["properties"])] * 2 + ['{"session_id": "s", "device": "web"}'],
        }
    )
    result = validate_batch(frame, tenants=TENANTS, now=NOW, source="batch:test")
    assert result.reconciles()
    assert result.valid.column("event_id").to_pylist() == ["a"]
    assert result.counts_by_reason == {"missing_field": 1, "invalid_amount": 1}
    assert json.loads(result.quarantined.column("raw_payload")[0].as_py())["event_id"] in {"b", "c"}


def test_contract_version_can_be_pinned_per_tenant() -> None:
    pinned = TENANTS.with_columns(pl.lit("ecommerce@v1").alias("contract"))
    decoded = decode_json_records([json.dumps(order())], ["p"], source="t")
    assert validate_batch(decoded, tenants=pinned, now=NOW, source="t").valid.num_rows == 1


def test_bad_arguments_are_clear_errors() -> None:
    with pytest.raises(InvalidInputError, match="positions"):
        decode_json_records([b"{}"], [], source="s")
    with pytest.raises(InvalidInputError, match="lacks column"):
        validate_batch(
            pl.DataFrame({"tenant_id": ["x"]}),
            tenants=pl.DataFrame({"tenant_id": ["x"]}),
            now=NOW,
            source="s",
        )
    with pytest.raises(InvalidInputError, match="more than once"):
        validate_batch(
            pl.DataFrame({"tenant_id": ["x"]}), tenants=pl.concat([TENANTS, TENANTS]), now=NOW, source="s"
        )


def test_non_utf8_and_empty_payloads_are_malformed() -> None:
    decoded = decode_json_records(
        [b"\xff\xfe", None, "", json.dumps(order()).encode()], ["a", "b", "c", "d"], source="s"
    )
    result = validate_batch(decoded, tenants=TENANTS, now=NOW, source="s")
    assert result.counts_by_reason == {"malformed_json": 3}
    assert result.valid.num_rows == 1 and result.reconciles()


def _garbage(rng: np.random.Generator, n: int) -> list[bytes]:
    """Random mutations of valid records: deleted fields, swapped types, truncation, random bytes."""
    values: list[Any] = [
        None,
        0,
        -1,
        1.5,
        True,
        "",
        "x",
        [],
        {},
        [1],
        {"a": 1},
        "2024-13-01",
        10**20,
        float("1e300"),
    ]
    out: list[bytes] = []
    for _ in range(n):
        record = order(
            event_id=f"g-{rng.integers(0, 5)}", tenant_id=str(rng.choice(["shop", "gone", "zzz", "school"]))
        )
        for key in rng.choice(list(record) + ["extra"], size=rng.integers(0, 4)):
            if rng.random() < 0.3:
                record.pop(str(key), None)
            else:
                record[str(key)] = values[rng.integers(0, len(values))]
        text = json.dumps(record).encode()
        roll = rng.random()
        if roll < 0.1:
            text = text[: rng.integers(0, len(text))]
        elif roll < 0.15:
            text = rng.bytes(int(rng.integers(0, 40)))
        out.append(text)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_random_garbage_never_crashes_and_always_reconciles(seed: int) -> None:
    rng = np.random.default_rng(seed)
    payloads = _garbage(rng, 300)
    result = validate_payloads(
        payloads,
        [str(i) for i in range(len(payloads))],
        tenants=TENANTS,
        now=NOW + timedelta(days=int(rng.integers(-400, 400))),
        source="fuzz",
    )
    assert result.reconciles()
    assert sum(result.counts_by_reason.values()) == result.quarantined.num_rows
    assert set(result.counts_by_reason) <= set(REASON_CODES)


def test_hypothesis_garbage_reconciles() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies
    scalar = st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
    )
    field_value = st.one_of(
        scalar, st.lists(scalar, max_size=2), st.dictionaries(st.text(max_size=4), scalar, max_size=2)
    )
    record = st.dictionaries(
        st.sampled_from(
            [
                "tenant_id",
                "event_id",
                "customer_id",
                "event_type",
                "event_time",
                "amount",
                "currency",
                "properties",
                "x",
            ]
        ),
        field_value,
    )
    payload = st.one_of(record.map(json.dumps), st.binary(max_size=30), st.text(max_size=30))

    @hypothesis.settings(max_examples=40, deadline=None)
    @hypothesis.given(st.lists(payload, max_size=20))
    def check(payloads: list[Any]) -> None:
        result = validate_payloads(
            payloads, [str(i) for i in range(len(payloads))], tenants=TENANTS, now=NOW, source="hyp"
        )
        assert result.reconciles()

    check()
