"""Simulated events and every wire format carry exactly the contracts' RECORD_FIELDS, in that order."""

from __future__ import annotations

from datetime import date

import polars as pl
import pytest

from ingestion.contracts import RECORD_FIELDS
from ingestion.synthetic import Simulation, simulate
from ingestion.synthetic.emit import wire_frame


@pytest.fixture(scope="module")
def small_sim() -> Simulation:
    return simulate([("t-a", "ecommerce"), ("t-b", "healthcare")], customers=40, days=5,
                    start=date(2024, 1, 1), seed=1, bad_share=0.05,
                    bad_kinds=["missing_field", "unknown_event_type", "duplicate"])


def test_simulated_events_hold_the_record_fields_then_seq(small_sim: Simulation) -> None:
    assert tuple(small_sim.events.columns) == (*RECORD_FIELDS, "seq")


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "payloads"])
def test_wire_frames_lead_with_the_record_fields(small_sim: Simulation, fmt: str) -> None:
    frame = wire_frame(small_sim, fmt=fmt)  # type: ignore[arg-type]
    assert tuple(frame.columns[: len(RECORD_FIELDS)]) == RECORD_FIELDS
    assert frame.schema["event_time"] == pl.String  # ISO-8601 text on the wire
