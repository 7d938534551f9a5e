"""The daily chain under real Airflow 3: `airflow dags test` subprocesses on the embedded defaults run
ingest_batch -> dbt_build -> features_materialize -> score_batch over a small simulated dataset (train_models
first, so scoring has a champion). Then: predictions exist for exactly the churn_prediction tenants, a re-run
of the same logical date changes no table's row count, and a failing data-quality checkpoint stops the chain
and is recorded as an audit event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestration.cli import dags_test, task_states
from shironzi.settings import Settings, get_settings

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.integration]

RUN_DATE = datetime.now(UTC).date()
CHAIN = ("ingest_batch", "dbt_build", "features_materialize", "score_batch")
TENANTS = (  # slug, industry, plan, churn_prediction on?
    ("alpha-shop", "ecommerce", "standard", True),
    ("beta-clinic", "healthcare", "free", False),  # free plan: no churn_prediction
    ("gamma-school", "education", "enterprise", True),
    ("delta-mart", "ecommerce", "standard", False),  # standard plan, module switched off
)


@dataclass
class ChainRun:
    settings: Settings
    tenant_ids: dict[str, str]
    exit_codes: dict[str, int] = field(default_factory=dict)
    states: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    logs: dict[str, Path] = field(default_factory=dict)


def _run(run: ChainRun, dag_id: str, *, skip: str | None = None) -> int:
    code, log = dags_test(dag_id, logical_date=RUN_DATE, mark_success_pattern=skip, settings=run.settings)
    run.exit_codes[dag_id], run.logs[dag_id] = code, log
    run.states[dag_id] = task_states(dag_id, settings=run.settings)
    return code


def _trend_skip() -> str | None:
    """The trend model lands after the churn path: until `models.trend.train_trend` and
    `models.scoring.write_forecasts` exist, their tasks are marked successful instead of run."""
    import importlib

    try:
        ready = hasattr(importlib.import_module("models.trend"), "train_trend") and hasattr(
            importlib.import_module("models.scoring"), "write_forecasts"
        )
    except ImportError:
        ready = False
    return None if ready else "trend|forecasts"


def _row_counts(settings: Settings) -> dict[str, int]:
    """Rows of every data table of the lake (platform tables such as run logs and the audit trail are
    append-only records of each run by design and are left out)."""
    from deltalake import DeltaTable

    from shironzi.lake.discovery import discover_tables

    return {
        t.uri: DeltaTable(t.uri).to_pyarrow_dataset().count_rows()
        for t in discover_tables(settings.resolved_lake_uri, include_platform=False)
    }


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChainRun]:
    from ingestion.synthetic import simulate, write_landing_files
    from shironzi.tenancy import TenantContext, get_registry

    root = tmp_path_factory.mktemp("airflow-e2e")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SHIRONZI_HOME", str(root / "home"))
        for var in ("SHIRONZI_DATABASE_URL", "SHIRONZI_LAKE_URI", "SHIRONZI_KAFKA_BOOTSTRAP", "SHIRONZI_SPARK_REMOTE",
                    "SHIRONZI_ONLINE_STORE_URL", "SHIRONZI_REDIS_URL", "SHIRONZI_SECRETS_URL", "MLFLOW_TRACKING_URI",
                    "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "SHIRONZI_LANDING_DIR", "SHIRONZI_SQL_SOURCES"):
            mp.delenv(var, raising=False)
        # Each `airflow dags test` is a fresh interpreter: share compiled bytecode between them.
        mp.delenv("PYTHONDONTWRITEBYTECODE", raising=False)
        mp.setenv("PYTHONPYCACHEPREFIX", str(tmp_path_factory.getbasetemp() / "pycache"))
        get_settings.cache_clear()
        settings = get_settings()
        settings.ensure_home()

        registry = get_registry(settings)
        ctx = TenantContext.admin(actor="test", purpose="airflow e2e")
        ids = {}
        for slug, industry, plan, _ in TENANTS:
            tenant, _key = registry.provision_tenant(
                ctx, slug=slug, name=slug, industry=industry, region="eu-west", plan=plan
            )
            ids[slug] = tenant.id
        registry.disable_module(ctx, ids["delta-mart"], "churn_prediction")
        sim = simulate([(ids[s], i) for s, i, _, _ in TENANTS], customers=300, days=180, seed=5, bad_share=0.002)
        write_landing_files(sim, settings.resolved_landing_dir, fmt="jsonl", file_per="day")

        run = ChainRun(settings=settings, tenant_ids=ids)
        skip = _trend_skip()
        for dag_id in CHAIN[:3]:
            assert _run(run, dag_id) == 0, f"{dag_id} failed, see {run.logs[dag_id]}"
        assert _run(run, "train_models", skip=skip) == 0, f"train_models failed, see {run.logs['train_models']}"
        assert _run(run, "score_batch", skip=skip) == 0, f"score_batch failed, see {run.logs['score_batch']}"
        yield run
    get_settings.cache_clear()


def test_daily_chain_scores_exactly_the_tenants_with_churn_prediction(chain: ChainRun) -> None:
    from shironzi.lake import read_polars
    from shironzi.lake.paths import table_uri

    for dag_id in (*CHAIN, "train_models"):
        states = {(r["task_id"], r["map_index"]): r["state"] for r in chain.states[dag_id]}
        assert states and set(states.values()) <= {"success", "skipped"}, (dag_id, states)
    # dbt ran one task per model, and score_batch mapped its tenants into chunks.
    dbt_tasks = {r["task_id"] for r in chain.states["dbt_build"]}
    assert {"fct_churn_labels", "fct_tenant_daily_kpis", "stg_platform__tenants"} <= dbt_tasks
    assert any(r["task_id"].startswith("score_chunk_") and r["map_index"] >= 0 for r in chain.states["score_batch"])

    scores = table_uri(chain.settings.resolved_lake_uri, layer="predictions", table="churn_scores", region="eu-west")
    frame = read_polars(scores, columns=["tenant_id", "score_date", "churn_probability"])
    expected = {chain.tenant_ids[slug] for slug, _, _, on in TENANTS if on}
    assert set(frame.get_column("tenant_id").unique().to_list()) == expected
    assert frame.get_column("score_date").unique().to_list() == [RUN_DATE]
    assert frame.height > 0 and frame.get_column("churn_probability").is_between(0, 1).all()


def test_rerunning_the_same_logical_date_changes_no_row_count(chain: ChainRun) -> None:
    before = _row_counts(chain.settings)
    assert any("/predictions/" in uri for uri in before) and any("/gold/" in uri for uri in before)
    for dag_id in CHAIN:
        assert _run(chain, dag_id, skip=_trend_skip() if dag_id == "score_batch" else None) == 0, dag_id
    assert _row_counts(chain.settings) == before
    # Nothing new landed, so the re-run did not publish bronze (and would not have triggered dbt_build).
    states = {r["task_id"]: r["state"] for r in chain.states["ingest_batch"]}
    assert states["anything_landed"] == "success" and states["publish_bronze"] == "skipped"


def test_gdpr_erasure_dag_erases_a_subject_and_verifies_the_receipt(chain: ChainRun) -> None:
    import polars as pl

    from shironzi.lake import read_polars
    from shironzi.lake.paths import table_uri

    tenant = chain.tenant_ids["alpha-shop"]
    bronze = table_uri(chain.settings.resolved_lake_uri, layer="bronze", table="events", region="eu-west")
    subject = read_polars(bronze, columns=["customer_id"], tenant_id=tenant).get_column("customer_id").min()
    code, log = dags_test("gdpr_erasure", conf={"tenant_id": tenant, "subject_id": subject}, settings=chain.settings)
    states = {r["task_id"]: r["state"] for r in task_states("gdpr_erasure", settings=chain.settings)}
    assert code == 0 and states == {"erase_subject": "success", "verify_receipt": "success"}, log
    remaining = read_polars(bronze, columns=["customer_id"], tenant_id=tenant).filter(pl.col("customer_id") == subject)
    assert remaining.is_empty()
    # Without its params the DAG fails at once with a clear error (no retries for bad input).
    assert dags_test("gdpr_erasure", settings=chain.settings)[0] != 0
    failed = [r for r in task_states("gdpr_erasure", settings=chain.settings) if r["task_id"] == "erase_subject"]
    assert failed[0]["state"] == "failed" and failed[0]["try_number"] == 1


def test_lake_maintenance_and_stream_supervisor_dags_run(chain: ChainRun) -> None:
    before = _row_counts(chain.settings)
    kpis = next(uri for uri in before if uri.endswith("/gold/fct_tenant_daily_kpis"))
    assert not list((Path(kpis) / "_delta_log").glob("*.checkpoint.parquet"))  # the chain wrote none
    assert _run(chain, "lake_maintenance") == 0, chain.logs["lake_maintenance"]
    assert list((Path(kpis) / "_delta_log").glob("*.checkpoint.parquet")), "maintenance wrote no checkpoint"
    mapped = [r for r in chain.states["lake_maintenance"] if r["task_id"] == "maintain"]
    assert mapped and all(r["state"] == "success" and r["map_index"] >= 0 for r in mapped)
    assert [r["state"] for r in chain.states["lake_maintenance"] if r["task_id"] == "expire_exports"] == ["success"]
    assert _row_counts(chain.settings) == before  # optimize/vacuum rewrite files, never rows
    # No supervised stream ingestors on the embedded defaults: the supervisor finds nothing to restart.
    assert _run(chain, "stream_supervisor") == 0, chain.logs["stream_supervisor"]


def test_failing_quality_checkpoint_stops_downstream_and_is_audited(chain: ChainRun) -> None:
    from ingestion.synthetic import simulate, write_landing_files
    from shironzi.audit.log import read_audit_events

    settings = chain.settings
    gold_before = {uri: n for uri, n in _row_counts(settings).items() if "/gold/" in uri}
    # Valid events, but two years old: the checkpoint's freshness expectation fails on them.
    stale = simulate([(chain.tenant_ids["alpha-shop"], "ecommerce")], customers=20, days=3, seed=9,
                     start=RUN_DATE - timedelta(days=730))
    write_landing_files(stale, settings.resolved_landing_dir / "late-delivery", fmt="jsonl", file_per="day")

    assert _run(chain, "ingest_batch") != 0
    states = {r["task_id"]: r["state"] for r in chain.states["ingest_batch"]}
    assert states["land_files"] == "success"
    assert states["quality_checkpoint"] == "failed"
    assert states["publish_bronze"] == "upstream_failed"  # the bronze asset is not updated: dbt_build never runs
    assert {r["try_number"] for r in chain.states["ingest_batch"] if r["task_id"] == "quality_checkpoint"} == {1}

    events = read_audit_events(filters=[("action", "=", "pipeline.task_failed")]).to_pylist()
    failed = [e for e in events if json.loads(e["details"] or "{}").get("task_id") == "quality_checkpoint"]
    assert len(failed) == 1
    details = json.loads(failed[0]["details"])
    assert failed[0]["outcome"] == "failure" and details["dag_id"] == "ingest_batch"
    assert "data_quality_failed" in details["error"]
    assert {uri: n for uri, n in _row_counts(settings).items() if "/gold/" in uri} == gold_before
