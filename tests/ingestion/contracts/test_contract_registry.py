"""The shipped contracts: versions, event types, PII markings and the declarative loader's checks."""

from __future__ import annotations

import pytest

from ingestion.contracts import (
    CANONICAL_SCHEMA,
    QUARANTINE_SCHEMA,
    contract_from_dict,
    get_contract,
    industries,
    pii_fields,
    recoverable_pii_fields,
)
from shironzi.errors import ConfigurationError, InvalidInputError

EXPECTED_TYPES = {
    "ecommerce": {
        "customer_signed_up",
        "session_started",
        "product_viewed",
        "cart_updated",
        "order_placed",
        "order_refunded",
        "subscription_changed",
        "support_ticket_opened",
        "account_closed",
    },
    "healthcare": {
        "patient_registered",
        "appointment_booked",
        "appointment_attended",
        "appointment_missed",
        "prescription_filled",
        "portal_login",
        "claim_submitted",
        "patient_disenrolled",
    },
    "education": {
        "student_enrolled",
        "course_started",
        "lesson_completed",
        "assessment_submitted",
        "payment_made",
        "forum_post",
        "student_withdrew",
    },
}


def test_every_industry_has_a_versioned_contract_with_its_event_types() -> None:
    assert industries() == sorted(EXPECTED_TYPES)
    for industry, names in EXPECTED_TYPES.items():
        contract = get_contract(industry)
        assert contract.ref == f"{industry}@v1"
        assert set(contract.event_type_names) == names
        assert get_contract(f"{industry}@v1") is contract


def test_money_events_carry_amounts_and_others_do_not() -> None:
    carrying = {
        et.name for c in map(get_contract, EXPECTED_TYPES) for et in c.event_types if et.carries_amount
    }
    assert carrying == {
        "order_placed",
        "order_refunded",
        "prescription_filled",
        "claim_submitted",
        "payment_made",
    }


def test_pii_fields_are_listed_with_recoverability() -> None:
    assert pii_fields("ecommerce") == ["email", "full_name", "shipping_postcode"]
    assert recoverable_pii_fields("ecommerce") == ["email", "full_name"]
    assert "medication_code" in pii_fields("healthcare")
    assert "medication_code" not in recoverable_pii_fields("healthcare")
    assert set(pii_fields("education")) == {"email", "full_name"}


def test_unknown_contracts_are_clear_errors() -> None:
    with pytest.raises(InvalidInputError, match="no contract for industry 'retail'"):
        get_contract("retail")
    with pytest.raises(InvalidInputError, match="unknown contract 'ecommerce@v9'"):
        get_contract("ecommerce@v9")


def test_declarative_loader_refuses_bad_definitions() -> None:
    good = {
        "industry": "x",
        "version": 1,
        "signup_event": "a",
        "terminal_event": "a",
        "event_types": {"a": {"properties": {"p": "string"}}},
    }
    assert contract_from_dict(good).event_type("a").property("p").type == "string"
    with pytest.raises(ConfigurationError, match="type 'text'"):
        contract_from_dict({**good, "event_types": {"a": {"properties": {"p": "text"}}}})
    with pytest.raises(ConfigurationError, match="recoverable but not marked pii"):
        contract_from_dict(
            {**good, "event_types": {"a": {"properties": {"p": {"type": "string", "recoverable": True}}}}}
        )
    with pytest.raises(ConfigurationError, match="'b' is not one of its event types"):
        contract_from_dict({**good, "terminal_event": "b"})
    with pytest.raises(ConfigurationError, match="unknown keys"):
        contract_from_dict({**good, "event_types": {"a": {"amont": True}}})


def test_schemas_have_the_canonical_columns() -> None:
    assert CANONICAL_SCHEMA.names == [
        "tenant_id",
        "event_id",
        "customer_id",
        "event_type",
        "event_time",
        "event_date",
        "source",
        "ingested_at",
        "amount",
        "currency",
        "properties",
    ]
    assert str(CANONICAL_SCHEMA.field("event_time").type) == "timestamp[us, tz=UTC]"
    assert CANONICAL_SCHEMA.field("amount").nullable and not CANONICAL_SCHEMA.field("tenant_id").nullable
    assert QUARANTINE_SCHEMA.names == [
        "quarantined_at",
        "tenant_id",
        "reason_code",
        "reason",
        "raw_payload",
        "source",
        "position",
        "event_date",
    ]
    assert QUARANTINE_SCHEMA.field("tenant_id").nullable
