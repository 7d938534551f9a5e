"""The file connector on real files and Delta tables: formats, manifest idempotency, checksum changes,
a crash between the bronze commit and the manifest, and bad input reconciled exactly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from ingestion.batch import ingest_files, processed_files
from tests.ingestion._fixtures import bronze_uri, killed_cli, provision, quarantine_uri, read_all


@pytest.fixture
def sim_tenants(home: Path) -> list[tuple[str, str]]:
    tenants = provision([("shop-one", "ecommerce", "standard"), ("school-one", "education", "free")])
    return [(t.id, t.industry) for t in tenants]


def _simulate(tenants: list[tuple[str, str]], *, bad_share: float = 0.02, seed: int = 3):  # type: ignore[no-untyped-def]
    from ingestion.synthetic import simulate

    return simulate(tenants, customers=120, days=21, seed=seed, bad_share=bad_share)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_each_format_lands_every_valid_event_and_quarantines_every_bad_kind(
    fmt: str, sim_tenants: list[tuple[str, str]], tmp_path: Path
) -> None:
    from ingestion.synthetic import APPLICABLE_KINDS, write_landing_files

    sim = _simulate(sim_tenants)
    kinds = [k for k in APPLICABLE_KINDS[fmt]]
    from ingestion.synthetic import simulate

    sim = simulate(sim_tenants, customers=120, days=21, seed=3, bad_share=0.03, bad_kinds=kinds)
    manifest = write_landing_files(sim, tmp_path / "landing", fmt=fmt)  # type: ignore[arg-type]
    result = ingest_files(tmp_path / "landing", check_quality=False)
    totals = result.totals
    assert totals.balanced()
    assert totals.received == manifest.records_written
    assert totals.landed == sim.events.height == read_all(bronze_uri()).height
    expected = {r: n for k, n in manifest.bad_by_kind.items() if (r := manifest.expected_reason_by_kind[k])}
    assert totals.quarantined_by_reason == expected
    assert totals.duplicates == manifest.bad_by_kind.get("duplicate", 0)
    assert read_all(quarantine_uri()).height == totals.quarantined
    assert len(processed_files()) == len(manifest.files)


def test_rerun_lands_nothing_and_a_changed_file_is_relanded_by_checksum(
    sim_tenants: list[tuple[str, str]], tmp_path: Path
) -> None:
    from ingestion.synthetic import write_landing_files

    landing = tmp_path / "landing"
    manifest = write_landing_files(_simulate(sim_tenants, bad_share=0.0), landing, fmt="jsonl")
    first = ingest_files(landing, check_quality=False)
    rows = read_all(bronze_uri()).height
    again = ingest_files(landing, check_quality=False)
    assert again.files_landed == [] and len(again.files_skipped) == len(manifest.files)
    assert again.totals.received == 0 and read_all(bronze_uri()).height == rows
    changed = landing / manifest.files[0]
    lines = changed.read_text().splitlines()
    extra = lines[0].replace('"event_id":"', '"event_id":"new-', 1)
    changed.write_text("\n".join([*lines, extra]) + "\n")
    third = ingest_files(landing, check_quality=False)
    assert third.files_landed == [manifest.files[0]]
    assert (third.totals.landed, third.totals.duplicates_existing) == (1, len(lines))
    assert read_all(bronze_uri()).height == rows + 1 == first.totals.landed + 1


def test_crash_between_bronze_commit_and_manifest_never_lands_a_file_twice(
    sim_tenants: list[tuple[str, str]], tmp_path: Path, home: Path
) -> None:
    from ingestion.synthetic import write_landing_files

    landing = tmp_path / "landing"
    write_landing_files(_simulate(sim_tenants, bad_share=0.02), landing, fmt="jsonl")
    command = [*killed_cli("after_commit", 1), "ingest", "batch", str(landing), "--skip-quality"]
    crashed = subprocess.run(
        command, env={**os.environ, "SHIRONZI_HOME": str(home)}, capture_output=True, timeout=120
    )
    assert crashed.returncode == -9, crashed.stderr.decode()[-2000:]
    landed_before = read_all(bronze_uri()).height
    quarantined_before = read_all(quarantine_uri()).height
    assert landed_before > 0 and processed_files() == set()  # bronze committed, the manifest did not
    result = ingest_files(landing, check_quality=False)
    assert result.totals.recovered == landed_before + quarantined_before
    assert read_all(bronze_uri()).height == landed_before
    assert read_all(quarantine_uri()).height == quarantined_before
    assert result.totals.balanced()


def test_unreadable_file_is_a_clear_error_and_lands_nothing(
    sim_tenants: list[tuple[str, str]], tmp_path: Path
) -> None:
    from shironzi.errors import InvalidInputError

    bad = tmp_path / "landing" / "broken.parquet"
    bad.parent.mkdir()
    bad.write_bytes(b"this is not parquet")
    with pytest.raises(InvalidInputError, match="broken.parquet"):
        ingest_files(bad.parent, check_quality=False)
    assert read_all(bronze_uri()).is_empty() and processed_files() == set()
    from ingestion.bronze import read_run_log

    assert read_run_log().get_column("status").to_list() == ["failed"]
