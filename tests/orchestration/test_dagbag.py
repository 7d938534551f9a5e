"""DagBag integrity: every DAG file imports without errors, fast, and every DAG carries the operability basics."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from orchestration.airflow_env import DAGS_FOLDER, airflow_env

EXPECTED_DAGS = {
    "ingest_batch", "stream_supervisor", "dbt_build", "features_materialize", "train_models", "score_batch",
    "lake_maintenance", "gdpr_erasure", "audit_digest", "alerts_webhooks", "placement_policy",
}
MAX_PARSE_SECONDS = 2.0

# Runs in a fresh interpreter with the Airflow environment: airflow itself is imported first (the DAG
# processor has it loaded), then each file is parsed on its own with the project modules purged, so each
# file pays for its own imports.
PROBE = r"""
import json, sys, time
from airflow.dag_processing.dagbag import DagBag
from airflow.sdk import dag as _warm  # noqa: F401
out = {"files": {}, "errors": {}, "dags": {}}
for path in sorted(p for p in __import__("pathlib").Path(sys.argv[1]).glob("*.py") if not p.name.startswith("_")):
    for name in [m for m in sys.modules if m == "orchestration" or m.startswith(("orchestration.", "shironzi"))]:
        del sys.modules[name]
    started = time.perf_counter()
    bag = DagBag(dag_folder=str(path), include_examples=False, safe_mode=False)
    out["files"][path.name] = time.perf_counter() - started
    out["errors"].update({str(k): str(v) for k, v in bag.import_errors.items()})
    for dag_id, dag in bag.dags.items():
        out["dags"][dag_id] = {
            "file": path.name, "tags": sorted(dag.tags), "owner": dag.default_args.get("owner"),
            "retries": dag.default_args.get("retries"), "catchup": dag.catchup,
            "backoff": dag.default_args.get("retry_exponential_backoff"),
            "on_failure": bool(dag.default_args.get("on_failure_callback")),
            "deadline": len(dag.deadline or []), "tasks": sorted(t.task_id for t in dag.tasks),
            "task_retries": {t.task_id: t.retries for t in dag.tasks},
            "timetable": type(dag.timetable).__name__,
            "pools": {t.task_id: [t.pool, t.priority_weight] for t in dag.tasks},
            "mapped": {t.task_id: t.max_active_tis_per_dagrun for t in dag.tasks
                       if any(c.__name__ == "MappedOperator" for c in type(t).__mro__)},
        }
print("RESULT" + json.dumps(out))
"""


@pytest.fixture(scope="module")
def dagbag(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    import json

    from shironzi.settings import Settings

    home = tmp_path_factory.mktemp("airflow-home")
    env = airflow_env(Settings(home=home))
    outcome = subprocess.run(
        [sys.executable, "-c", PROBE, str(DAGS_FOLDER)], env=env, capture_output=True, text=True, timeout=180,
        check=False,
    )
    line = next((ln for ln in outcome.stdout.splitlines() if ln.startswith("RESULT")), None)
    assert line is not None, outcome.stderr[-3000:]
    return json.loads(line.removeprefix("RESULT"))


def test_zero_import_errors_and_every_dag_is_there(dagbag: dict[str, Any]) -> None:
    assert dagbag["errors"] == {}
    assert set(dagbag["dags"]) == EXPECTED_DAGS
    for dag_id, info in dagbag["dags"].items():
        assert info["file"] == f"{dag_id}.py"


def test_parse_time_per_file_is_under_two_seconds(dagbag: dict[str, Any]) -> None:
    assert len(dagbag["files"]) == len(EXPECTED_DAGS)
    slow = {name: round(s, 2) for name, s in dagbag["files"].items() if s > MAX_PARSE_SECONDS}
    assert not slow, f"DAG files parsing slower than {MAX_PARSE_SECONDS}s: {slow}"


def test_every_dag_has_tags_owner_retries_backoff_alerts(dagbag: dict[str, Any]) -> None:
    for dag_id, info in dagbag["dags"].items():
        assert "shironzi" in info["tags"] and len(info["tags"]) >= 2, dag_id
        assert info["owner"] == "shironzi-data-platform", dag_id
        assert info["retries"] >= 1 and info["backoff"] and info["backoff"] > 1, dag_id
        assert info["catchup"] is False, dag_id
        assert info["on_failure"], f"{dag_id} has no on-failure callback"
        assert info["deadline"] == 1, f"{dag_id} has no deadline alert"


def test_chain_is_data_aware_and_dbt_tasks_follow_the_manifest(dagbag: dict[str, Any]) -> None:
    from orchestration.pipeline import load_dbt_model_graph

    dags = dagbag["dags"]
    assert dags["dbt_build"]["timetable"] == "AssetTriggeredTimetable"
    assert dags["features_materialize"]["timetable"] == "AssetTriggeredTimetable"
    assert dags["score_batch"]["timetable"] == "AssetOrTimeSchedule"
    graph = load_dbt_model_graph()
    assert "fct_churn_labels" in graph and len(graph) >= 5
    assert set(graph) <= set(dags["dbt_build"]["tasks"])
    # dedicated tenants build in dynamically mapped batches, several at a time, not in one sequential task
    assert "dedicated_tenants" not in dags["dbt_build"]["tasks"]
    assert dags["dbt_build"]["mapped"] == {"dedicated_batch": 4}
    assert {"score_chunk_free", "score_chunk_standard", "score_chunk_enterprise"} <= set(dags["score_batch"]["mapped"])
    # A failed data-quality checkpoint must not be retried: it fails at once and stops the chain.
    assert dags["ingest_batch"]["task_retries"]["quality_checkpoint"] == 0


def test_tasks_reference_existing_pools_and_plan_weights(dagbag: dict[str, Any]) -> None:
    """Compute isolation: every pool a task names is in the pools file Airflow imports; each plan's scoring runs
    in its own pool with its weight, and the dedicated tenants' builds in the dedicated pool."""
    from orchestration.pools import DEDICATED_POOL, PLAN_POOLS, PLANS, PRIORITY_WEIGHTS, pool_definitions
    from shironzi.tenancy.catalog import PLANS as CATALOGUE_PLANS

    assert PLANS == CATALOGUE_PLANS
    defined = pool_definitions()
    assert set(defined) == {*PLAN_POOLS.values(), DEDICATED_POOL}
    assert all(p["slots"] >= 1 for p in defined.values())
    used = {pool for info in dagbag["dags"].values() for pool, _ in info["pools"].values()}
    assert used - {"default_pool"} <= set(defined) and used - {"default_pool"}, used
    scoring = dagbag["dags"]["score_batch"]["pools"]
    for plan in PLANS:
        assert scoring[f"score_chunk_{plan}"] == [PLAN_POOLS[plan], PRIORITY_WEIGHTS[plan]]
    assert PRIORITY_WEIGHTS["free"] < PRIORITY_WEIGHTS["standard"] < PRIORITY_WEIGHTS["enterprise"]
    assert dagbag["dags"]["dbt_build"]["pools"]["dedicated_batch"] == [DEDICATED_POOL, PRIORITY_WEIGHTS["dedicated"]]


@pytest.mark.integration
@pytest.mark.slow
def test_airflow_setup_creates_the_pools_the_dags_use(tmp_path: Path) -> None:
    """`ensure_airflow_db` (what `shironzi airflow dags-test` and the DAG tests run) imports the pools."""
    import sqlalchemy as sa

    from orchestration.cli import ensure_airflow_db
    from orchestration.pools import pool_definitions
    from shironzi.settings import Settings

    settings = Settings(home=tmp_path / "home")
    ensure_airflow_db(settings)
    engine = sa.create_engine(settings.resolved_airflow_sql_alchemy_conn)
    try:
        with engine.connect() as conn:
            pools = dict(conn.execute(sa.text("SELECT pool, slots FROM slot_pool")).all())
    finally:
        engine.dispose()
    assert {name: p["slots"] for name, p in pool_definitions().items()}.items() <= pools.items()


@pytest.mark.integration
@pytest.mark.slow
def test_checked_in_dbt_graph_matches_the_dbt_manifest(home: Path) -> None:
    from orchestration.pipeline import load_dbt_model_graph
    from transformations.dbt_runner import dbt_manifest

    assert load_dbt_model_graph() == dbt_manifest(), "run `shironzi airflow dbt-manifest` and commit the file"


def test_no_secrets_in_dag_files() -> None:
    for path in DAGS_FOLDER.glob("*.py"):
        text = path.read_text().lower()
        for needle in ("password", "secret", "postgresql://", "token=", "api_key"):
            assert needle not in text, f"{path.name} mentions {needle!r}"


def test_airflow_env_lives_under_shironzi_home(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shironzi.settings import get_settings

    env = airflow_env(get_settings())
    assert env["AIRFLOW_HOME"] == str(home.resolve() / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(DAGS_FOLDER)
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] == f"sqlite:///{home.resolve() / 'airflow' / 'airflow.db'}"
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg://u:pw@db:5432/airflow")
    get_settings.cache_clear()
    assert airflow_env(get_settings())["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg://")


def test_cli_env_hides_the_password_and_rejects_unknown_dags(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from typer.testing import CliRunner

    from orchestration.cli import airflow_app, dags_test
    from shironzi.errors import InvalidInputError
    from shironzi.settings import get_settings

    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "postgresql+psycopg://u:hunter2@db:5432/airflow")
    get_settings.cache_clear()
    result = CliRunner().invoke(airflow_app, ["env", "--json"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert "hunter2" not in result.output and shown["AIRFLOW_HOME"].endswith("/airflow")
    # Unknown DAG: a clear error before anything runs (the metadata database is not even created).
    monkeypatch.delenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
    get_settings.cache_clear()
    with pytest.raises(InvalidInputError, match="unknown DAG 'nope'"):
        dags_test("nope", settings=get_settings())
    assert not (home / "airflow").exists()


def test_deadline_alert_writes_a_durable_audit_event(home: Path) -> None:
    import asyncio
    import json
    from datetime import timedelta

    from orchestration.dags._common import deadline, on_deadline_missed
    from shironzi.audit.log import read_audit_events

    alert = deadline("score_batch", timedelta(hours=3))
    assert alert.callback.path == "orchestration.dags._common.on_deadline_missed"
    asyncio.run(on_deadline_missed(**alert.callback.kwargs, context={"dag_run": None}))
    events = read_audit_events(filters=[("action", "=", "pipeline.deadline_missed")], flush=False).to_pylist()
    assert len(events) == 1 and events[0]["outcome"] == "failure"
    assert json.loads(events[0]["details"]) == {"dag_id": "score_batch", "deadline": "3:00:00"}
