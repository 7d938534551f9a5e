"""The event intake that ingestion plugs into the kernel's seam (`shironzi.intake`): found through the
installed entry point, and checking payloads with the real industry contracts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from ingestion.intake import ContractIntake
from shironzi.intake import EventIntake, Rejection, event_intake


def _payload(event_id: str, **extra: object) -> bytes:
    event = {"tenant_id": "t-1", "event_id": event_id, "customer_id": "c-1", "event_type": "session_started",
             "event_time": "2026-01-05T10:00:00Z", "properties": {"session_id": "s1", "device": "ios"}, **extra}
    return json.dumps(event).encode()


def test_the_entry_point_provides_the_contract_intake() -> None:
    intake = event_intake()
    assert isinstance(intake, ContractIntake) and isinstance(intake, EventIntake)
    assert event_intake() is intake  # loaded once


def test_rejections_name_the_refused_payloads_by_position() -> None:
    payloads = [
        _payload("ok-1"),
        _payload("health-1", event_type="appointment_booked", properties={"appointment_id": "a"}),
        b'{"event_id": "broken"',
        _payload("ok-2"),
    ]
    rejections = event_intake().rejections(
        payloads, tenant_id="t-1", industry="ecommerce", status="active",
        now=datetime(2026, 1, 6, tzinfo=UTC), source="api:t-1",
    )
    assert all(isinstance(r, Rejection) and r.reason for r in rejections)
    assert sorted((r.position, r.reason_code) for r in rejections) == [(1, "unknown_event_type"), (2, "malformed_json")]


def test_an_inactive_tenant_has_every_payload_refused() -> None:
    rejections = ContractIntake().rejections(
        [_payload("a"), _payload("b")], tenant_id="t-1", industry="ecommerce", status="suspended",
        now=datetime(2026, 1, 6, tzinfo=UTC), source="api:t-1",
    )
    assert sorted(r.position for r in rejections) == [0, 1]
    assert ContractIntake().rejections([], tenant_id="t-1", industry="ecommerce", status="active",
                                       now=datetime(2026, 1, 6, tzinfo=UTC), source="api:t-1") == []
