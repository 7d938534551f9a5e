"""The one list of record fields: the canonical schema's columns minus the ones ingestion derives."""

from __future__ import annotations

from ingestion.contracts import CANONICAL_SCHEMA, RECORD_FIELDS, REQUIRED_FIELDS

DERIVED_ON_INGESTION = ("event_date", "source", "ingested_at")


def test_record_fields_are_the_canonical_columns_a_producer_sends() -> None:
    assert tuple(n for n in CANONICAL_SCHEMA.names if n not in DERIVED_ON_INGESTION) == RECORD_FIELDS
    assert set(REQUIRED_FIELDS) <= set(RECORD_FIELDS)
    assert len(CANONICAL_SCHEMA.names) == len(RECORD_FIELDS) + len(DERIVED_ON_INGESTION)
