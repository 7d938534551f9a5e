"""The disaster-recovery drill at small scale: real brokers, ingestors, APIs and replicator in separate processes;
region A is SIGKILLed mid-ingest, fails over to B and back, and nothing is lost, duplicated or misplaced."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ingestion.stream._fixtures import require_broker_binary

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_drill_loses_nothing_and_keeps_residency(tmp_path: Path, home: Path) -> None:
    require_broker_binary()
    from ingestion.dr_drill import DrillConfig, run_drill

    report = run_drill(DrillConfig(tmp_path / "drill", events_per_second=600, steady_seconds=4, outage_seconds=5,
                                   after_seconds=3))
    facts = report.as_dict()
    assert report.produced > 3_000, facts
    assert (report.lost, report.duplicated, report.landed) == (0, 0, report.produced), facts
    assert report.replica_served and report.rto_seconds is not None, facts
    assert report.api_after_failover and set(report.api_after_failover) == {200}, facts
    assert report.api_after_failback == 200, facts
    assert report.residency_violations == 0, facts
    assert report.lag_seconds, facts  # lag was sampled while both regions replicated
    assert (tmp_path / "drill" / "lake-us-east" / "_replica" / "eu-west" / "eu-west" / "bronze" / "events").is_dir()
    assert not (tmp_path / "drill" / "lake-us-east" / "_replica" / "eu-west" / "eu-west" / "tenants").exists()
