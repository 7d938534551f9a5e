"""The Great Expectations checkpoint: passes on good landed data, fails (and fails the run) on a bad one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.ingestion._fixtures import bronze_uri, provision


@pytest.fixture
def landed(home: Path, tmp_path: Path) -> Path:
    from ingestion.synthetic import simulate, write_landing_files

    (tenant,) = provision([("shop-one", "ecommerce", "standard")])
    sim = simulate(
        [(tenant.id, tenant.industry)],
        customers=60,
        days=7,
        seed=2,
        start=(datetime.now(UTC) - timedelta(days=7)).date(),
    )
    write_landing_files(sim, tmp_path / "landing", fmt="parquet")
    return tmp_path / "landing"


def test_a_clean_batch_run_passes_the_checkpoint(landed: Path) -> None:
    from ingestion.batch import ingest_files

    result = ingest_files(landed)
    assert result.status == "succeeded" and result.quality.success
    assert all(info["rows_checked"] > 0 for info in result.quality.tables.values())


def test_a_violating_partition_fails_the_checkpoint_and_the_run(landed: Path) -> None:
    import polars as pl
    import pyarrow as pa

    from ingestion.batch import ingest_files
    from ingestion.bronze import read_run_log
    from ingestion.contracts import CANONICAL_SCHEMA
    from ingestion.quality import check_bronze
    from shironzi.errors import DataQualityError
    from shironzi.lake import append, read_arrow

    ingest_files(landed, check_quality=False)
    landed_rows = pl.from_arrow(read_arrow(bronze_uri()))
    good = landed_rows.unique("event_date", keep="first").to_dicts()  # one row in every partition
    day = good[0]["event_date"]
    for row in good:  # bypass the contract: an event type no contract knows
        row["event_type"], row["event_id"] = "teleported", row["event_id"] + "-x"
    append(bronze_uri(), pa.Table.from_pylist(good, schema=CANONICAL_SCHEMA), partition_by="event_date")
    report = check_bronze(on_date=day)
    assert not report.success and any(
        "ExpectColumnValuesToBeInSet" in f or "in_set" in f for f in report.failed
    )

    extra = landed / "late.parquet"

    first = sorted(landed.rglob("*.parquet"))[0]
    pl.read_parquet(first).with_columns(pl.col("event_id") + "-late").write_parquet(extra)
    with pytest.raises(DataQualityError):
        ingest_files(landed)  # lands late.parquet into the bad partition's table: the checkpoint fails
    assert read_run_log().get_column("status").to_list()[-1] == "failed"


@pytest.fixture
def old_history(home: Path, tmp_path: Path) -> Path:
    """A landing file whose newest event is two years old (a history, not a live feed)."""
    from ingestion.synthetic import simulate, write_landing_files

    (tenant,) = provision([("shop-old", "ecommerce", "standard")])
    start = (datetime.now(UTC) - timedelta(days=730)).date()
    sim = simulate([(tenant.id, tenant.industry)], customers=30, days=5, seed=4, start=start)
    write_landing_files(sim, tmp_path / "history", fmt="parquet")
    return tmp_path / "history"


def test_a_failing_checkpoint_commits_nothing_and_a_rerun_checks_again(old_history: Path) -> None:
    from ingestion.batch import ingest_files, processed_files
    from ingestion.bronze import read_run_log
    from shironzi.errors import DataQualityError
    from shironzi.lake import table_exists

    for _attempt in range(2):  # the rerun is checked again: the file was never recorded as processed
        with pytest.raises(DataQualityError, match="expect_column_max_to_be_between"):
            ingest_files(old_history)
        assert processed_files() == set() and not table_exists(bronze_uri())
    assert read_run_log().get_column("status").to_list() == ["failed", "failed"]


def test_an_imported_history_passes_freshness_against_its_own_time_range(old_history: Path) -> None:
    from ingestion.batch import ingest_files, processed_files

    result = ingest_files(old_history, backfill=True)  # no --skip-quality
    assert result.status == "succeeded" and result.quality.success and result.totals.landed > 0
    assert len(processed_files()) == len(list(old_history.rglob("*.parquet")))
