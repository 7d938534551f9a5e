"""Crash test: SIGKILL the stream ingestor at random points of random flushes, restart it each time,
and check bronze ends with exactly the produced events: no loss, no duplicate."""

from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from ingestion.bronze import LANDING_POINTS, read_run_log, reconcile_run_log
from tests.ingestion._fixtures import bronze_uri, killed_cli, provision, read_all
from tests.ingestion.stream._fixtures import produce

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 200_000
KILLS = 12


def _ingest(
    home: Path, bootstrap: str, topic: str, crash: tuple[str, int] | None = None
) -> subprocess.CompletedProcess[bytes]:
    cli = [sys.executable, "-c", "from shironzi.cli.main import run; run()"] if crash is None else killed_cli(*crash)
    command = [
        *cli,
        "ingest",
        "stream",
        "--topic",
        topic,
        "--bootstrap",
        bootstrap,
        "--max-batch",
        "8000",
        "--max-wait-ms",
        "300",
        "--until-caught-up",
    ]
    return subprocess.run(
        command, env={**os.environ, "SHIRONZI_HOME": str(home)}, capture_output=True, timeout=300
    )


def test_sigkill_at_random_points_loses_and_duplicates_nothing(
    broker_bootstrap: str, topic_name: str, home: Path
) -> None:
    from ingestion.synthetic import simulate

    tenants = provision(
        [
            ("shop-one", "ecommerce", "standard"),
            ("clinic-one", "healthcare", "enterprise"),
            ("school-one", "education", "free"),
        ]
    )
    sim = simulate([(t.id, t.industry) for t in tenants], target_events=EVENTS, days=90, seed=11)
    # The window ends today, so weekly and yearly seasonality make the count only roughly the target.
    assert abs(sim.events.height - EVENTS) < EVENTS * 0.25
    produce(broker_bootstrap, topic_name, sim, partitions=4)
    rng = random.Random(20250301)
    points = [LANDING_POINTS[i % len(LANDING_POINTS)] for i in range(KILLS)]
    rng.shuffle(points)
    killed = 0
    outcomes: list[str] = []
    for point in points:
        crashed = _ingest(home, broker_bootstrap, topic_name, crash=(point, rng.randint(1, 3)))
        if crashed.returncode == -9:
            killed += 1
        else:  # caught up before reaching the crash flush
            assert crashed.returncode == 0, crashed.stderr.decode()[-3000:]
            outcomes.append(crashed.stdout.decode()[-600:])
    assert killed >= 10, outcomes
    final = _ingest(home, broker_bootstrap, topic_name)
    assert final.returncode == 0, final.stderr.decode()[-3000:]
    landed = read_all(bronze_uri()).vstack(read_all(bronze_uri(tenant_id=tenants[1].id)))
    assert landed.height == sim.events.height
    assert landed.select("tenant_id", "event_id").n_unique() == sim.events.height
    expected = sim.events.select("tenant_id", "event_id").sort("tenant_id", "event_id")
    assert landed.select("tenant_id", "event_id").sort("tenant_id", "event_id").equals(expected)
    totals = reconcile_run_log(read_run_log())  # committed flushes only: each offset exactly once
    assert totals.received == sim.events.height and totals.balanced()
