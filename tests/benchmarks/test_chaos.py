"""benchmarks/chaos.py with short outages: for each fault (broker cut off, Redis killed, object store cut off)
the platform recovers once the fault clears, loses no acknowledged event and lands none twice."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.chaos import FAULTS
from tests.ingestion.stream._fixtures import require_broker_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_fault_recovers_without_loss_or_duplicates(fault: str, tmp_path: Path) -> None:
    require_broker_binary()
    outcome = FAULTS[fault](tmp_path, down_s=3.0)
    assert outcome.recovered, outcome.line()
    assert outcome.lost == 0 and outcome.duplicates == 0, outcome.line()
    assert outcome.accepted > 0, outcome.line()  # the run did real work before and after the fault
    assert outcome.noticed > 0, outcome.line()  # ... and the fault really hit it (503s, degraded, backoffs)
