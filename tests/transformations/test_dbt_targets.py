"""The dbt targets: bad input (an unknown target, a Spark Connect URL that does not answer, a pyspark outside the pin)
fails before any table is touched; on the spark target (dbt-spark over Spark Connect against Sail) the model tables
survive a server restart, an incremental model merges, and one rebuilt in full instead fails the build loudly."""

from __future__ import annotations

import datetime as dt
import shutil
import socket
import time
from pathlib import Path

import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from orchestration.pipeline import plan_dbt_build
from shironzi.cli.main import run
from shironzi.errors import ConfigurationError, InvalidInputError, ServiceUnavailableError
from shironzi.lake import history, table_exists
from shironzi.lake.paths import table_uri
from shironzi.settings import Settings, get_settings
from tests.dbt_project._fixtures import INGESTED, START, TENANTS, event, sample_events, write_bronze
from transformations import dbt_targets
from transformations.dbt_runner import PROJECT_DIR, bronze_events_uri, registry_snapshot_uri, run_dbt_build
from transformations.spark import stop_spark

REGION = "eu-west"
SPARK_PROJECT = Path(__file__).parent / "spark_project"


def _spark_project(tmp_path: Path) -> Path:
    """A copy of the portable test project with the real profiles.yml beside it."""
    project = tmp_path / "spark_project"
    shutil.copytree(SPARK_PROJECT, project)
    shutil.copy(PROJECT_DIR / "profiles.yml", project / "profiles.yml")
    return project


def _nothing_written(settings: Settings) -> bool:
    return not table_exists(registry_snapshot_uri(settings)) and not (settings.home / "dbt").exists()


def test_unknown_target_is_refused_before_anything_is_written(settings: Settings) -> None:
    write_bronze(bronze_events_uri(settings, REGION), sample_events(days=5))
    with pytest.raises(InvalidInputError, match="unknown dbt target 'postgres'; expected one of duckdb, spark"):
        run_dbt_build(region=REGION, tenants=TENANTS, settings=settings, target="postgres")
    assert _nothing_written(settings)


def test_a_target_the_project_is_not_written_for_is_refused(settings: Settings, tmp_path: Path) -> None:
    """A project whose dbt_project.yml `targets` lists duckdb only is refused on spark up front."""
    assert dbt_targets.project_targets(PROJECT_DIR) == ["duckdb", "spark"]  # the curated project is portable
    project = dbt_targets.project_declaring(PROJECT_DIR, tmp_path / "dbt_project", ["duckdb"])
    write_bronze(bronze_events_uri(settings, REGION), sample_events(days=5))
    with pytest.raises(InvalidInputError, match="'dbt_project' is written for the duckdb target only, not 'spark'"):
        run_dbt_build(region=REGION, tenants=TENANTS, settings=settings, target="spark", project_dir=project)
    assert _nothing_written(settings)


def test_unknown_target_from_the_settings_is_one_error_line(
    home: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SHIRONZI_DBT_TARGET", "oracle")
    get_settings.cache_clear()
    with pytest.raises(SystemExit) as exit_info:
        run(["transform", "--region", REGION])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown dbt target 'oracle'" in err[0], err


def test_the_airflow_plan_carries_the_target_and_refuses_an_unknown_one(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """dbt_build's plan task decides the target once per run, so every model task of the run uses the same."""
    assert plan_dbt_build(settings=get_settings())["target"] == "duckdb"
    monkeypatch.setenv("SHIRONZI_DBT_TARGET", "bogus")
    get_settings.cache_clear()
    with pytest.raises(InvalidInputError, match="unknown dbt target 'bogus'"):
        plan_dbt_build(settings=get_settings())


def test_spark_url_that_does_not_answer_is_refused_at_once(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SHIRONZI_SPARK_REMOTE", f"sc://127.0.0.1:{port}")
    get_settings.cache_clear()
    settings = get_settings()
    write_bronze(bronze_events_uri(settings, REGION), sample_events(days=5))
    started = time.monotonic()
    with pytest.raises(ServiceUnavailableError, match=f"sc://127.0.0.1:{port} does not answer"):
        run_dbt_build(
            region=REGION, tenants=TENANTS, settings=settings, target="spark", project_dir=_spark_project(tmp_path)
        )
    assert time.monotonic() - started < 10
    assert _nothing_written(settings)


def test_pyspark_outside_the_pinned_range_is_refused(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert dbt_targets.check_pyspark_version(dbt_targets.installed_pyspark_version()).startswith("4.2.")
    write_bronze(bronze_events_uri(settings, REGION), sample_events(days=5))
    monkeypatch.setattr(dbt_targets, "installed_pyspark_version", lambda: "4.3.0")
    with pytest.raises(ConfigurationError, match="pyspark 4.3.0 is outside the pinned range 4.2.x"):
        run_dbt_build(
            region=REGION, tenants=TENANTS, settings=settings, target="spark", project_dir=_spark_project(tmp_path)
        )
    assert _nothing_written(settings)


@pytest.mark.integration
@pytest.mark.slow
def test_spark_target_survives_a_sail_restart_and_an_unmerged_incremental_fails_loudly(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project = _spark_project(tmp_path)
    bronze = bronze_events_uri(settings, REGION)
    rows = sample_events(days=10)
    write_bronze(bronze, rows)
    merged = table_uri(settings.resolved_lake_uri, layer="gold", table="events_merged", region=REGION)
    build = {"region": REGION, "tenants": TENANTS, "settings": settings, "project_dir": project, "target": "spark"}
    try:
        first = run_dbt_build(**build)
        assert first.success, first.failures
        assert sorted(first.models_built) == ["daily_events", "events_merged"] and first.tests_passed == 3
        assert set(first.gold_versions) == {"daily_events", "events_merged"}

        stop_spark()  # Sail's catalog lives in memory: the next build talks to a new server that knows no table
        later = INGESTED + dt.timedelta(days=1)
        write_bronze(bronze, [
            event("t-shop", "c1", "session_started", START + dt.timedelta(10), event_id="new-day", ingested_at=later),
            event("t-shop", "c2", "session_started", START + dt.timedelta(2), event_id="late", ingested_at=later),
        ])
        second = run_dbt_build(**build)
        assert second.success, second.failures
        assert history(merged)[0]["operation"] == "MERGE"
        assert DeltaTable(merged).to_pyarrow_table().num_rows == len(rows) + 2

        stop_spark()
        monkeypatch.setattr(dbt_targets, "register_delta_tables", lambda tables, settings: [])  # the catalog forgets
        write_bronze(bronze, [event("t-shop", "c3", "session_started", START + dt.timedelta(11), event_id="x",
                                    ingested_at=later + dt.timedelta(days=1))])
        third = run_dbt_build(**build)
        assert not third.success
        assert any("events_merged: the incremental model was rebuilt in full" in f for f in third.failures), (
            third.failures
        )
    finally:
        stop_spark()


@pytest.mark.integration
@pytest.mark.slow
def test_spark_target_survives_a_restart_of_the_remote_server(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SHIRONZI_SPARK_REMOTE names a server that restarts on the same address between two builds (as a cluster
    does) and forgets its catalog: the tables are registered again on the new server, so the second build merges."""
    from pysail.spark import SparkConnectServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("SHIRONZI_SPARK_REMOTE", f"sc://127.0.0.1:{port}")
    get_settings.cache_clear()
    settings = get_settings()
    bronze = bronze_events_uri(settings, REGION)
    rows = sample_events(days=8)
    write_bronze(bronze, rows)
    merged = table_uri(settings.resolved_lake_uri, layer="gold", table="events_merged", region=REGION)
    build = {"region": REGION, "tenants": TENANTS, "settings": settings, "project_dir": _spark_project(tmp_path),
             "target": "spark"}
    server = SparkConnectServer(ip="127.0.0.1", port=port)
    server.start(background=True)
    try:
        assert run_dbt_build(**build).success
        server.stop()
        server = SparkConnectServer(ip="127.0.0.1", port=port)
        server.start(background=True)
        write_bronze(bronze, [event("t-shop", "c1", "session_started", START + dt.timedelta(8), event_id="after",
                                    ingested_at=INGESTED + dt.timedelta(days=1))])
        second = run_dbt_build(**build)
        assert second.success, second.failures
        assert history(merged)[0]["operation"] == "MERGE"
        assert DeltaTable(merged).to_pyarrow_table().num_rows == len(rows) + 1
    finally:
        stop_spark()
        server.stop()


@pytest.mark.integration
def test_model_tables_are_pointed_at_this_builds_locations(settings: Settings, tmp_path: Path) -> None:
    """One Sail server serves the pooled build and then a dedicated tenant's, under the same table names: each
    build's registration points every name at its own location (and at nothing where it has no table yet), and
    dropping the other build's registration keeps that build's files."""
    from transformations.spark import get_spark

    pooled, dedicated = str(tmp_path / "pooled" / "t"), str(tmp_path / "dedicated" / "t")
    spark = get_spark(settings)
    try:
        spark.sql("create schema if not exists gold")
        spark.sql(f"create or replace table gold.t using delta location '{pooled}' as select 1 as x")
        write_deltalake(dedicated, pa.table({"x": [2]}))
        tables = [dbt_targets.ModelTable("t", "gold", dedicated, True)]
        assert dbt_targets.register_delta_tables(tables, settings) == ["gold.t"]
        assert [r.x for r in spark.sql("select x from gold.t").collect()] == [2]
        assert DeltaTable(pooled).to_pyarrow_table().column("x").to_pylist() == [1]  # the pooled table is intact
        first_build = [dbt_targets.ModelTable("t", "gold", str(tmp_path / "new" / "t"), True)]
        assert dbt_targets.register_delta_tables(first_build, settings) == []
        assert "t" not in [r.tableName for r in spark.sql("show tables in gold").collect()]
    finally:
        stop_spark()
