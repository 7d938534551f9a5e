"""The dbt runner: bad input fails with a clear error before anything is written, the manifest helper,
the `shironzi transform` command (success output and the one-line failure), and a dbt failure."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from pathlib import Path

import pytest
from deltalake import DeltaTable

from shironzi.cli.main import run
from shironzi.errors import InvalidInputError, TableNotFoundError, TransformationError
from shironzi.settings import Settings
from tests.dbt_project._fixtures import START, TENANTS, event, sample_events, write_bronze
from transformations.dbt_runner import (
    PROJECT_DIR,
    bronze_events_uri,
    dbt_home,
    dbt_manifest,
    dedicated_build_targets,
    registry_snapshot_uri,
    run_dbt_build,
)
from transformations.dbt_state import record_build_state

REGION = "eu-west"


def _snapshot_exists(settings: Settings) -> bool:
    try:
        DeltaTable(registry_snapshot_uri(settings))
    except Exception:  # noqa: BLE001 - any "not a table" answer
        return False
    return True


def test_unknown_region_is_refused(settings: Settings) -> None:
    with pytest.raises(InvalidInputError, match="unknown region"):
        run_dbt_build(region="mars-1", tenants=TENANTS, settings=settings)


def test_missing_bronze_table_is_a_clear_not_found(settings: Settings) -> None:
    with pytest.raises(TableNotFoundError, match="no bronze events table"):
        run_dbt_build(region=REGION, tenants=TENANTS, settings=settings)
    assert not _snapshot_exists(settings)


@pytest.mark.parametrize(
    "tenants, message",
    [
        ([{"industry": "ecommerce"}], "has no tenant_id"),
        ([{"tenant_id": "t1", "industry": "retail"}], "unknown industry"),
        (
            [{"tenant_id": "t1", "industry": "ecommerce"}, {"tenant_id": "t1", "industry": "education"}],
            "twice",
        ),
    ],
)
def test_bad_tenant_snapshot_fails_before_anything_is_written(
    settings: Settings, tenants: list[dict[str, str]], message: str
) -> None:
    write_bronze(bronze_events_uri(settings, REGION), sample_events(days=10))
    with pytest.raises(InvalidInputError, match=message):
        run_dbt_build(region=REGION, tenants=tenants, settings=settings)
    assert not _snapshot_exists(settings)
    assert not (settings.home / "dbt").exists()


def test_transform_without_bronze_prints_one_error_line(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run(["transform", "--region", REGION])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: table_not_found: no bronze events table")


@pytest.mark.integration
def test_manifest_lists_models_and_their_dependencies(settings: Settings) -> None:
    manifest = dbt_manifest(region=REGION, settings=settings)
    assert manifest["fct_tenant_daily_kpis"] == ["int_customer_daily_activity"]
    assert manifest["int_customer_daily_activity"] == ["int_events__unified"]
    assert set(manifest["int_events__unified"]) == {
        "stg_events__ecommerce",
        "stg_events__education",
        "stg_events__healthcare",
        "stg_platform__tenants",
    }
    assert {"dim_customers", "fct_churn_labels", "fct_cohort_retention", "fct_tenant_usage"} <= set(manifest)


@pytest.mark.integration
def test_dbt_gets_locations_as_vars_and_the_environment_stays_untouched(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner hands every location to dbt through --vars: the environment dbt reads at the start of an
    invocation is the process's own, unchanged, and no SHIRONZI_DBT_* variable is ever set."""
    import dbt.cli.requires

    seen: list[dict[str, str]] = []
    real_get_env = dbt.cli.requires.get_env

    def recording_get_env() -> dict[str, str]:
        env = real_get_env()
        seen.append(dict(env))
        return env

    monkeypatch.setattr(dbt.cli.requires, "get_env", recording_get_env)
    before = dict(os.environ)
    dbt_manifest(region=REGION, settings=settings)
    assert seen, "dbt was not invoked"
    assert all(env == before for env in seen)
    assert dict(os.environ) == before
    manifest = json.loads((dbt_home(settings, REGION) / "target" / "manifest.json").read_text())
    assert manifest["sources"]["source.shironzi.bronze.events"]["meta"]["delta_table_path"] == bronze_events_uri(
        settings, REGION
    )


@pytest.mark.integration
@pytest.mark.slow
def test_transform_command_builds_and_prints_gold_versions(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command reads tenants from the registry (empty here): every model builds, marts are empty."""
    write_bronze(bronze_events_uri(settings, REGION), sample_events(days=20))
    run(["transform", "--region", REGION])
    out = capsys.readouterr().out
    assert "models built: 12" in out and "tests failed: 0" in out
    for table in (
        "dim_customers",
        "fct_churn_labels",
        "fct_cohort_retention",
        "fct_tenant_daily_kpis",
        "fct_tenant_usage",
    ):
        assert table in out
    assert DeltaTable(registry_snapshot_uri(settings)).to_pyarrow_table().num_rows == 0


@pytest.mark.integration
@pytest.mark.slow
def test_tenant_isolated_catches_a_join_that_forgets_tenant_id(settings: Settings, tmp_path: Path) -> None:
    """A model joining on customer_id alone (ids collide across tenants) must fail `tenant_isolated`."""
    project = tmp_path / "project"
    shutil.copytree(PROJECT_DIR, project, ignore=shutil.ignore_patterns("target", "logs", "plugins"))
    (project / "models" / "marts" / "bad_customer_days.sql").write_text(
        "select activity.tenant_id, activity.customer_id, activity.event_date, customers.lifetime_events\n"
        "from {{ ref('int_customer_daily_activity') }} as activity\n"
        "inner join {{ ref('dim_customers') }} as customers on activity.customer_id = customers.customer_id\n"
    )
    (project / "models" / "marts" / "bad_customer_days.yml").write_text(
        "version: 2\nmodels:\n  - name: bad_customer_days\n    description: A deliberately broken join.\n"
        "    config: {materialized: view}\n    data_tests:\n      - tenant_isolated:\n          arguments:\n"
        "            parent: ref('int_customer_daily_activity')\n"
        "            keys: [customer_id, event_date]\n"
        "            measure: count(*)\n            parent_measure: count(*)\n"
    )
    write_bronze(
        bronze_events_uri(settings, REGION),
        sample_events(days=20)
        + [event("t-clinic", "c9", "portal_login", START + dt.timedelta(2), event_id="x-1")],
    )
    result = run_dbt_build(
        region=REGION, tenants=TENANTS, settings=settings, project_dir=project, select="+bad_customer_days"
    )
    assert not result.success
    assert any("tenant_isolated_bad_customer_days" in line for line in result.failures), result.failures
    with pytest.raises(TransformationError, match="dbt build failed"):
        run_dbt_build(
            region=REGION,
            tenants=TENANTS,
            settings=settings,
            project_dir=project,
            select="bad_customer_days",
            raise_on_failure=True,
        )


@pytest.mark.integration
@pytest.mark.slow
def test_a_host_whose_dbt_state_another_host_outdated_rebuilds_in_full(settings: Settings) -> None:
    """dbt's work dir (DuckDB file, target/, state.json) is local to a host; the lake is shared. Host A builds,
    host B (its own SHIRONZI_HOME, the same lake) builds without t-clinic's analytics, then A builds with them on
    again: A's local state still matches the tenant set, but B rewrote the tables since, so A must rebuild in full
    (a merge would only add new partitions and leave t-clinic's history out of the marts)."""
    write_bronze(bronze_events_uri(settings, REGION), sample_events(days=10))
    lake = settings.resolved_lake_uri
    host_a = settings.model_copy(update={"lake_uri": lake})
    host_b = settings.model_copy(update={"home": settings.home.parent / "host-b", "lake_uri": lake})
    without_clinic = [
        {**t, "analytics_enabled": t["analytics_enabled"] and t["tenant_id"] != "t-clinic"} for t in TENANTS
    ]
    unified = f"{lake}/{REGION}/silver/int_events__unified"  # merged incrementally; analytics tenants only
    small = {"select": "+int_events__unified", "indirect_selection": "empty"}  # no marts, no tests: a quick build

    def tenants_in_silver() -> set[str]:
        return set(DeltaTable(unified).to_pyarrow_table(columns=["tenant_id"])["tenant_id"].to_pylist())

    assert run_dbt_build(region=REGION, tenants=TENANTS, settings=host_a, **small).success  # type: ignore[arg-type]
    assert run_dbt_build(region=REGION, tenants=without_clinic, settings=host_b, **small).success  # type: ignore[arg-type]
    assert "t-clinic" not in tenants_in_silver()
    again = run_dbt_build(region=REGION, tenants=TENANTS, settings=host_a, **small)  # type: ignore[arg-type]
    assert again.success, again.failures
    assert again.full_refresh
    assert "t-clinic" in tenants_in_silver()


def test_a_dedicated_tenant_built_on_another_host_is_rebuilt_when_its_analytics_go_off(settings: Settings) -> None:
    """Without a local build state, the build state in the lake says another host built the dedicated tenant:
    its build still runs (and empties its marts) after its analytics were switched off."""
    solo = {"tenant_id": "t-solo", "industry": "ecommerce", "placement": "dedicated", "region": REGION}
    rows = [event("t-solo", "c1", "order_placed", START, event_id="e1")]
    write_bronze(bronze_events_uri(settings, REGION, "t-solo"), rows)
    off = [{**solo, "analytics_enabled": False}]
    assert dedicated_build_targets(region=REGION, tenants=off, settings=settings) == []  # never built: nothing to empty
    # another host built it (each dedicated build records its state in the lake)
    record_build_state(settings, REGION, tenants=["t-solo"], bronze_version=None, tenant_id="t-solo")
    assert not (dbt_home(settings, REGION, "t-solo") / "state.json").exists()
    assert dedicated_build_targets(region=REGION, tenants=off, settings=settings) == ["t-solo"]
