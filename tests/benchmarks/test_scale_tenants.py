"""benchmarks/scale_tenants.py scaled down: 5,000 Zipf-sized tenants, 200,000 events. The stage invariants hold:
exact counts after the full build, the build after onboarding 1 % new tenants is incremental, builds exactly
their landed events and rewrites no other tenant's files, and erasing one subject physically removes only the files
its delete rewrote (nothing else is vacuumed)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from deltalake import DeltaTable

from benchmarks.scale_tenants import (
    Run,
    stage_dbt_full,
    stage_dbt_onboard,
    stage_erasure,
    stage_land,
    stage_provision,
    zipf_counts,
)
from shironzi.settings import get_settings
from transformations.dbt_runner import layer_root

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TENANTS, EVENTS, DAYS = 5_000, 200_000, 30


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    monkeypatch.setenv("SHIRONZI_HOME", str(tmp_path))
    for name in ("SHIRONZI_DATABASE_URL", "SHIRONZI_LAKE_URI", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    yield Run(tmp_path, TENANTS, EVENTS, DAYS)
    get_settings.cache_clear()


def test_zipf_sizes_keep_the_total_and_a_long_tail() -> None:
    counts = zipf_counts(TENANTS, EVENTS, np.random.default_rng(1))
    assert counts.sum() == EVENTS and counts.min() >= 1
    assert counts[0] > 100 * np.median(counts)  # a few large tenants, a long tail of tiny ones


def test_scaled_down_benchmark_keeps_the_stage_invariants(run: Run) -> None:
    assert stage_provision(run)["tenants"] == TENANTS
    assert stage_land(run)["rows"] == EVENTS
    full = stage_dbt_full(run)  # raises unless silver holds exactly the landed events
    assert full["rows"] == EVENTS

    silver = f"{layer_root(run.settings, run.region, 'silver')}/int_events__unified"
    before = DeltaTable(silver).version()
    onboard = stage_dbt_onboard(run)  # raises on a full refresh or when the new tenants' rows are not exact
    assert onboard["tenants"] == TENANTS // 100 and onboard["full_refresh"] is False
    assert onboard["rows"] == TENANTS // 100 * (EVENTS // TENANTS)
    commits = [c for c in DeltaTable(silver).history() if c["version"] > before]
    assert [c.get("shironzi.operation") for c in commits] == ["tenants_added"]
    assert commits[0]["operationMetrics"]["num_removed_files"] == 0
    assert run.silver_rows() == run.ids()["landed"] == EVENTS + onboard["rows"]

    # one subject of the largest tenant erased: only files its delete rewrote (those that held the subject) leave the
    # disk; no other file is vacuumed, so the older versions keep every other file (time travel kept)
    bronze = run.bronze()
    before = DeltaTable(bronze)
    version, files_before = before.version(), set(before.file_uris())
    assert stage_erasure(run)["tables"] >= 1
    commits = [c for c in DeltaTable(bronze).history() if c["version"] > version]
    assert {c.get("shironzi_erased_tenant") for c in commits} == {run.ids()["largest"]}
    log = Path(bronze, "_delta_log", f"{version + 1:020d}.json").read_text().splitlines()
    removed = {Path(bronze, json.loads(line)["remove"]["path"]).as_posix() for line in log if '"remove"' in line}
    paths = {Path(f.removeprefix("file://")).as_posix() for f in files_before}
    assert removed and removed <= paths
    left = {p for p in paths if not Path(p).exists()}
    assert left and left <= removed
    kept = DeltaTable(bronze, version=version).to_pyarrow_dataset()  # the old version's kept files still read
    gone = {Path(r).name for r in left}
    assert sum(f.count_rows() for f in kept.get_fragments() if Path(f.path).name not in gone) > 0
