"""The steps the Airflow DAGs run, each a thin call into a public function of the platform that returns a small
JSON-able summary (the task's XCom). DAG files hold no logic: they wire these steps, so every step also runs
from Python, a test or a notebook without Airflow.

Every function reads the Shironzi settings (`get_settings()`): connections and secrets come from the
environment, never from a DAG file.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from shironzi.errors import IntegrityCheckError, InvalidInputError
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings

PIPELINE_ACTOR = "airflow"
DBT_MODEL_GRAPH = Path(__file__).resolve().parent / "dags" / "dbt_models.json"

Partitions = dict[str, list[str]]  # bronze table URI -> ISO event_date partitions


def _iso_partitions(partitions: Mapping[str, Sequence[date]]) -> Partitions:
    return {uri: sorted({d.isoformat() for d in dates}) for uri, dates in partitions.items()}


def _merge(*parts: Mapping[str, Sequence[str]]) -> Partitions:
    merged: dict[str, set[str]] = {}
    for part in parts:
        for uri, dates in (part or {}).items():
            merged.setdefault(uri, set()).update(dates)
    return {uri: sorted(dates) for uri, dates in sorted(merged.items())}


# --- ingest_batch ----------------------------------------------------------------------------------------
def land_new_files(*, settings: Settings | None = None) -> dict[str, Any]:
    """Land the new or changed files of the landing directory (exactly once; the checkpoint runs after)."""
    from ingestion.batch import ingest_files

    settings = settings or get_settings()
    landing = settings.resolved_landing_dir
    if not landing.exists():
        return {"landed": 0, "files": 0, "partitions": {}, "note": f"no landing directory {landing}"}
    result = ingest_files(landing, settings=settings, check_quality=False)
    return {
        "run_id": result.run_id,
        "landed": result.totals.landed,
        "quarantined": result.totals.quarantined,
        "files": len(result.files_landed),
        "skipped_files": len(result.files_skipped),
        "partitions": _iso_partitions(result.partitions),
    }


def land_sql_increments(*, settings: Settings | None = None) -> dict[str, Any]:
    """Load the rows above each configured SQL source's watermark (`SHIRONZI_SQL_SOURCES`)."""
    from ingestion.batch import ingest_sql

    settings = settings or get_settings()
    landed, partitions, sources = 0, {}, []
    for source in settings.sql_sources:
        result = ingest_sql(
            source.url,
            table=source.table,
            query=source.query,
            watermark=source.watermark,
            source_name=source.name,
            settings=settings,
            check_quality=False,
        )
        landed += result.totals.landed
        partitions = _merge(partitions, _iso_partitions(result.partitions))
        sources.append({"source": source.name, "landed": result.totals.landed, "run_id": result.run_id})
    return {"landed": landed, "sources": sources, "partitions": partitions}


def quality_checkpoint(*landings: Mapping[str, Any], settings: Settings | None = None) -> dict[str, Any]:
    """The Great Expectations checkpoint on every partition these landings wrote; raises DataQualityError
    when it fails, so the bronze asset is not updated and nothing downstream runs."""
    from ingestion.quality import check_or_raise, run_checkpoint

    settings = settings or get_settings()
    partitions = _merge(*(landing.get("partitions", {}) for landing in landings))
    if not partitions:
        return {"checked_tables": 0, "success": True, "note": "nothing landed"}
    report = run_checkpoint(
        {uri: [date.fromisoformat(d) for d in dates] for uri, dates in partitions.items()}, settings=settings
    )
    check_or_raise(report)
    return {"checked_tables": len(report.tables), "success": report.success, "partitions": partitions}


# --- stream_supervisor -----------------------------------------------------------------------------------
def supervise_streams(*, settings: Settings | None = None) -> dict[str, Any]:
    """Restart every dead supervised stream ingestor and measure each one's lag."""
    from ingestion.stream.supervision import supervise_ingestors

    return supervise_ingestors(settings=settings or get_settings()).as_dict()


def check_stream_health(report: Mapping[str, Any]) -> dict[str, Any]:
    """Raise StreamLagError when an ingestor is still dead or lags more than the threshold."""
    from shironzi.errors import StreamLagError

    dead = [i["name"] for i in report.get("ingestors", []) if not i["alive"]]
    lagging = list(report.get("lagging", []))
    if dead or lagging:
        raise StreamLagError(
            f"stream ingestors unhealthy: dead {dead or '-'}, lagging > {report.get('max_lag')} records "
            f"{lagging or '-'}",
            dead=dead,
            lagging=lagging,
        )
    return {"healthy": len(report.get("ingestors", [])), "restarted": report.get("restarted", [])}


# --- dbt_build -------------------------------------------------------------------------------------------
def load_dbt_model_graph(path: Path = DBT_MODEL_GRAPH) -> dict[str, list[str]]:
    """dbt model -> the models it depends on, from the checked-in graph (cheap: DAG files parse it)."""
    return json.loads(path.read_text()) if path.exists() else {}


def write_dbt_model_graph(path: Path = DBT_MODEL_GRAPH) -> tuple[Path, dict[str, list[str]]]:
    """Regenerate the graph from `dbt parse` (run after changing dbt models; a test checks it is current)."""
    from transformations.dbt_runner import dbt_manifest

    graph = dbt_manifest()
    path.write_text(json.dumps(graph, indent=2, sort_keys=True) + "\n")
    return path, graph


def plan_dbt_build(*, settings: Settings | None = None) -> dict[str, Any]:
    """Which regions have pooled bronze data, and for each what the run does (decided once, before the per-model
    tasks): a full rebuild, or which tenants it adds and removes (the removed tenants' rows are deleted here,
    `transformations.dbt_plan.plan_build`); each region's dedicated tenants to build (`dedicated_build_targets`);
    and the dbt target every task of the run uses. `finish_dbt_build` records the new build state at the end."""
    from shironzi.lake import table_exists
    from transformations.dbt_plan import plan_build
    from transformations.dbt_runner import PROJECT_DIR, bronze_events_uri, dedicated_build_targets
    from transformations.dbt_targets import resolve_target

    settings = settings or get_settings()
    target = resolve_target(None, settings, PROJECT_DIR)  # SHIRONZI_DBT_TARGET, refused here when unknown
    regions = [r for r in settings.regions if table_exists(bronze_events_uri(settings, r))]
    dedicated = {r: dedicated_build_targets(region=r, settings=settings) for r in settings.regions}
    builds = {r: plan_build(region=r, settings=settings) for r in regions}
    return {
        "target": target,
        "regions": regions,
        "full_refresh": {r: b["full_refresh"] for r, b in builds.items()},
        "changes": {r: b["changes"] for r, b in builds.items()},
        "bronze_versions": {r: b["bronze_version"] for r, b in builds.items()},
        "dedicated": {r: ids for r, ids in dedicated.items() if ids},
    }


def finish_dbt_build(plan: Mapping[str, Any], *, settings: Settings | None = None) -> dict[str, Any]:
    """Record each planned region's new build state, once every model task succeeded."""
    from transformations.dbt_plan import finish_build

    settings = settings or get_settings()
    for region in plan.get("regions", []):
        finish_build(
            {
                "full_refresh": plan.get("full_refresh", {}).get(region, False),
                "changes": plan.get("changes", {}).get(region, {"recorded": False}),
                "bronze_version": plan.get("bronze_versions", {}).get(region),
            },
            region=region,
            settings=settings,
        )
    return {"regions": list(plan.get("regions", []))}


def dedicated_batches(
    plan: Mapping[str, Any], *, batch_size: int | None = None, settings: Settings | None = None
) -> list[list[list[str]]]:
    """The planned dedicated tenants as [region, tenant_id] pairs, in batches of `SHIRONZI_DBT_DEDICATED_BATCH_TENANTS`:
    one mapped task each, so 1,000 dedicated tenants build in 40 parallel tasks, not one long sequential one."""
    settings = settings or get_settings()
    size = batch_size or settings.dbt_dedicated_batch_tenants
    if size < 1:
        raise InvalidInputError("batch_size must be >= 1")
    pairs = [[region, tenant_id] for region, ids in sorted(plan.get("dedicated", {}).items()) for tenant_id in ids]
    return [pairs[i : i + size] for i in range(0, len(pairs), size)]


def build_dedicated_batch(
    batch: Sequence[Sequence[str]], target: str | None = None, *, settings: Settings | None = None
) -> dict[str, Any]:
    """One whole `dbt build` (models and tests) per dedicated tenant of the batch, into its own silver and gold
    (one after the other: dbt runs one build per process); raises on a failure after every tenant was built."""
    from shironzi.errors import TransformationError
    from transformations.dbt_runner import run_dbt_build

    settings = settings or get_settings()
    out: dict[str, Any] = {}
    failures: list[str] = []
    with stage("dbt_dedicated_batch", tenants=len(batch)) as summary:
        for region, tenant_id in batch:
            result = run_dbt_build(region=region, tenant_id=tenant_id, settings=settings, target=target)
            out[f"{region}/tenants/{tenant_id}"] = {"built": result.models_built, "tests_passed": result.tests_passed}
            failures += [f"{region}/tenants/{tenant_id}: {f}" for f in result.failures]
        summary.rows = len(out)
        summary.extra.update(failed=len(failures))
    if failures:
        from shironzi.webhooks.notify import notify_pipeline_failure

        failed = [t for r, t in batch if any(f.startswith(f"{r}/tenants/{t}: ") for f in failures)]
        notify_pipeline_failure("dbt_build", failed, settings=settings)
        more = f" (+{len(failures) - 1} more)" if len(failures) > 1 else ""
        raise TransformationError(f"dbt build failed: {failures[0]}{more}", failures=failures)
    return out


def build_dedicated_tenants(plan: Mapping[str, Any], *, settings: Settings | None = None) -> dict[str, Any]:
    """Every planned dedicated tenant's build, batch after batch (the CLI and tests; the DAG maps the batches)."""
    out: dict[str, Any] = {}
    for batch in dedicated_batches(plan, settings=settings):
        out.update(build_dedicated_batch(batch, plan.get("target"), settings=settings))
    return out


DBT_SEEDS = "resource_type:seed"


def build_dbt_model(model: str, plan: Mapping[str, Any], *, settings: Settings | None = None) -> dict[str, Any]:
    """`dbt build --select model` (the model and its tests) in every planned region; raises on a failure.

    Tests are selected "buildable": a test on several models (a relationship) runs with the last of them to
    be built, never before its other parent exists. The model's upstream staging views are selected with it:
    they read bronze through a source the dbt-duckdb plugin registers per invocation only. `model` may be
    `DBT_SEEDS` for the seeds."""
    from transformations.dbt_runner import run_dbt_build
    from transformations.dbt_state import TenantChanges

    settings = settings or get_settings()
    out: dict[str, Any] = {}
    for region in plan.get("regions", []):
        result = run_dbt_build(
            region=region,
            select=model if model == DBT_SEEDS else f"{model} +{model},config.materialized:view",
            indirect_selection="buildable",
            target=plan.get("target"),
            full_refresh=bool(plan.get("full_refresh", {}).get(region, False)),
            changes=TenantChanges.from_dict(plan["changes"][region]) if region in plan.get("changes", {}) else None,
            settings=settings,
            raise_on_failure=True,
        )
        out[region] = {"built": result.models_built, "tests_passed": result.tests_passed}
    return out


# --- features_materialize --------------------------------------------------------------------------------
def build_offline_features(*, settings: Settings | None = None) -> dict[str, Any]:
    """The offline feature pipelines on Spark (only missing snapshots, only gated tenants)."""
    from feature_store.offline import build_features

    built = build_features(cadence="weekly", settings=settings or get_settings())
    return {"rows": built.total_rows, "tenants": len(built.tenants), "versions": dict(built.versions)}


def materialize_online(*, settings: Settings | None = None) -> dict[str, Any]:
    """The latest offline feature values to the online store."""
    from feature_store.materialize import materialize

    pushed = materialize(settings=settings or get_settings())
    return {"rows": pushed.total_rows, "tenants": len(pushed.tenants)}


# --- train_models ----------------------------------------------------------------------------------------
def train_challenger(kind: str, *, seed: int = 0, settings: Settings | None = None) -> dict[str, Any]:
    """Train and register a challenger (`churn` or `trend`)."""
    settings = settings or get_settings()
    if kind == "churn":
        from models.churn import train_churn as train
    elif kind == "trend":
        from models.trend import train_trend as train
    else:
        raise InvalidInputError(f"unknown model kind {kind!r}: use churn or trend")
    result = train(settings=settings, seed=seed, register=True)
    return {"run_id": result.run_id, "model_version": result.model_version, "metrics": dict(result.metrics)}


WEEKLY_TRAINING_DAY = 6  # Sunday: the regular retraining; other days train only on a drift flag


def retrain_due(kind: str, run_day: date, *, manual: bool = False, settings: Settings | None = None) -> bool:
    """Does the daily train_models run train `kind` today? On the weekly day, on a manual run, when there is no
    champion yet, and, for churn, any day the champion carries the drift flag (PSI > 0.2 on a top-10 feature,
    set by a scoring run: `models.scoring.record_drift`)."""
    from models.common import CHAMPION, CHURN_MODEL, TREND_MODEL
    from models.scoring import retrain_requested
    from models.tracking import aliases

    settings = settings or get_settings()
    name = {"churn": CHURN_MODEL, "trend": TREND_MODEL}.get(kind)
    if name is None:
        raise InvalidInputError(f"unknown model kind {kind!r}: use churn or trend")
    with stage("retrain_due", model=name, day=str(run_day)) as summary:
        flag = retrain_requested(name, settings=settings) if kind == "churn" else None
        reasons = [why for why, hit in (("weekly", run_day.weekday() == WEEKLY_TRAINING_DAY), ("manual", manual),
                                        ("no champion", CHAMPION not in aliases(name, settings=settings)),
                                        ("drift", flag is not None)) if hit]
        summary.extra.update(due=bool(reasons), reasons=reasons, drifted=(flag or {}).get("features"))
    return bool(reasons)


def promotion_gate(name: str, *, settings: Settings | None = None) -> dict[str, Any]:
    """Run the promotion gates for `name`; the registry audits the decision, the summary goes to XCom."""
    from models.registry import promote_if_better

    with stage("promotion_gate", model=name) as summary:
        decision = promote_if_better(name, settings=settings or get_settings())
        summary.extra.update(promoted=decision.promoted, reason=decision.reason)
    return decision.as_dict()


# --- score_batch -----------------------------------------------------------------------------------------
def tenant_chunks(
    *, chunk_rows: int | None = None, chunk_size: int | None = None, plan: str | None = None,
    score_date: date | None = None, settings: Settings | None = None,
) -> list[list[str]]:
    """The tenants with churn_prediction on (only `plan`'s tenants when given: each plan's chunks run in its own
    pool), packed into chunks of at most `SHIRONZI_SCORE_CHUNK_ROWS` customers to score and
    `SHIRONZI_SCORE_CHUNK_TENANTS` tenants (one mapped task each: the task count follows the data, and 100,000
    tiny tenants make a few tasks, not 100,000)."""
    from models.scoring import eligible_tenants, scoring_chunks

    settings = settings or get_settings()
    tenants = sorted(eligible_tenants("churn_prediction", settings=settings))
    if plan is not None:
        from shironzi.tenancy.registry import get_registry

        directory = get_registry(settings).tenant_directory()
        tenants = [t for t in tenants if t in directory and directory[t].plan == plan]
    return scoring_chunks(tenants, score_date or datetime.now(UTC).date(),
                          max_rows=chunk_rows or settings.score_chunk_rows,
                          max_tenants=chunk_size or settings.score_chunk_tenants, settings=settings)


def score_tenants(tenant_ids: Sequence[str], score_date: date, *, settings: Settings | None = None) -> dict[str, Any]:
    """Score one chunk for one date (re-scoring replaces that slice: idempotent)."""
    from models.scoring import score_churn

    result = score_churn(settings=settings or get_settings(), score_date=score_date, tenant_ids=list(tenant_ids))
    return {"rows": int(getattr(result, "rows", 0)), "tenants": len(tenant_ids), "score_date": score_date.isoformat()}


def write_trend_forecasts(generated_date: date, *, settings: Settings | None = None) -> dict[str, Any]:
    """KPI forecasts for the tenants with trend_forecast on, as of one date (a re-run replaces that date)."""
    from models.scoring import write_forecasts

    result = write_forecasts(settings=settings or get_settings(), generated_date=generated_date)
    return {"rows": int(getattr(result, "rows", 0)), "generated_date": generated_date.isoformat()}


# --- lake_maintenance ------------------------------------------------------------------------------------
def maintained_tables(*, settings: Settings | None = None) -> list[str]:
    """Every Delta table of the lake, data and platform (the audit trail included: it only grows)."""
    from shironzi.lake.discovery import discover_tables

    settings = settings or get_settings()
    return [t.uri for t in discover_tables(settings.resolved_lake_uri, include_platform=True, include_audit=True)]


def maintain_tables(uris: Sequence[str], *, settings: Settings | None = None) -> list[dict[str, Any]]:
    """Optimize with z-order by tenant_id, checkpoint, then vacuum with the safe 7-day retention."""
    from shironzi.lake.maintenance import DEFAULT_RETENTION_HOURS, run_maintenance

    settings = settings or get_settings()
    return [
        run_maintenance(uri, retention_hours=DEFAULT_RETENTION_HOURS, storage_options=settings.storage_options)
        for uri in uris
    ]


def expire_data_exports(*, settings: Settings | None = None) -> dict[str, Any]:
    """The tenants' exports past their expiry: their files deleted, their rows marked expired."""
    from shironzi.exports import expire_exports

    result = expire_exports(settings=settings)
    return {"expired": result.expired, "files_deleted": result.files_deleted}


def enforce_retention_policies(*, confirm: bool = False) -> dict[str, Any]:
    """Retention enforcement: one delete commit per bronze/quarantine table and the expired audit days. A
    run that would delete more than the threshold share of a tenant's rows raises (the task fails with that
    message and nothing is deleted) unless triggered with `confirm`."""
    from shironzi.audit.retention import enforce_retention
    from shironzi.tenancy import TenantContext

    ctx = TenantContext.admin(actor=f"{PIPELINE_ACTOR}:retention", purpose="retention")
    result = enforce_retention(ctx=ctx, confirm=confirm)
    return {
        "tenants": len(result["tenants"]),
        "rows_deleted": sum(result["commits"].values()),
        "tables": sorted(result["commits"]),
        "audit_days_deleted": result["audit_days_deleted"],
    }


# --- gdpr_erasure ----------------------------------------------------------------------------------------
def erase_data_subject(tenant_id: str, subject_id: str, *, requested_by: str) -> dict[str, Any]:
    """GDPR Art. 17: erase one subject of one tenant everywhere; returns the signed receipt's summary."""
    from shironzi.audit.erasure import erase_subject
    from shironzi.tenancy import TenantContext

    if not tenant_id or not subject_id:
        raise InvalidInputError("gdpr_erasure needs the params tenant_id and subject_id")
    ctx = TenantContext.admin(actor=f"{PIPELINE_ACTOR}:{requested_by}", purpose="GDPR Art. 17 subject erasure")
    receipt = erase_subject(ctx, tenant_id, subject_id)
    return {
        "request_id": receipt.request_id,
        "tables": len(receipt.tables),
        "rows_deleted": sum(int(t.get("rows_deleted", 0)) for t in receipt.tables),
    }


def verify_erasure(request_id: str) -> dict[str, Any]:
    """Re-check the receipt's signature and rescan the lake; raises IntegrityCheckError when it fails."""
    from shironzi.audit.erasure import verify_receipt

    check = verify_receipt(request_id)
    if not check.ok:
        raise IntegrityCheckError(
            f"erasure {request_id} did not verify (signature ok: {check.signature_ok})", request_id=request_id
        )
    return check.as_dict()


# --- operability -----------------------------------------------------------------------------------------
def record_task_failure(
    *, dag_id: str, task_id: str, run_id: str, map_index: int = -1, try_number: int | None = None, error: str = ""
) -> None:
    """The on-failure alert: a durable audit event (`pipeline.task_failed`) naming the DAG run and task."""
    from shironzi.audit.log import audit
    from shironzi.tenancy import TenantContext

    ctx = TenantContext.admin(actor=PIPELINE_ACTOR, purpose="pipeline failure alert")
    audit(
        ctx,
        "pipeline.task_failed",
        resource=f"airflow:{dag_id}.{task_id}",
        outcome="failure",
        details={"dag_id": dag_id, "task_id": task_id, "run_id": run_id, "map_index": map_index,
                 "try_number": try_number, "error": error[:2000]},
        durable=True,
    )


def record_deadline_missed(*, dag_id: str, deadline: str) -> None:
    """The deadline (SLA) alert: a durable audit event (`pipeline.deadline_missed`)."""
    from shironzi.audit.log import audit
    from shironzi.tenancy import TenantContext

    ctx = TenantContext.admin(actor=PIPELINE_ACTOR, purpose="pipeline deadline alert")
    audit(ctx, "pipeline.deadline_missed", resource=f"airflow:{dag_id}", outcome="failure",
          details={"dag_id": dag_id, "deadline": deadline}, durable=True)


def evaluate_alerts(*, settings: Settings | None = None) -> dict[str, Any]:
    """One pass of the alert rules (`shironzi alerts evaluate`)."""
    from shironzi.alerts.engine import evaluate

    result = evaluate(settings=settings or get_settings())
    return {"firing": len(result.firing), "still_open": len(result.still_open), "silenced": len(result.silenced),
            "resolved": len(result.resolved)}


def dispatch_webhooks(*, settings: Settings | None = None) -> dict[str, Any]:
    """Attempt the webhook deliveries that are due (`shironzi webhooks dispatch`)."""
    from shironzi.webhooks.delivery import dispatch_due

    result = dispatch_due(settings=settings or get_settings())
    return {"attempted": result.attempted, "delivered": len(result.delivered), "retrying": len(result.retrying),
            "dead": len(result.dead)}


def plan_placement_moves(run_day: date, *, settings: Settings | None = None) -> list[dict[str, Any]]:
    """The placement policy's moves for `run_day` (a dry run: changes nothing)."""
    from shironzi.tenancy.placement_policy import plan_placement

    return [move.as_dict() for move in plan_placement(as_of=run_day, settings=settings)]


def apply_placement_moves(
    run_day: date, *, max_moves: int | None = None, settings: Settings | None = None
) -> dict[str, Any]:
    """Carry out at most `max_moves` of the policy's moves for `run_day` (default: the policy's cap); a
    failed move fails the task after the others ran."""
    from shironzi.errors import InvalidStateError
    from shironzi.tenancy import TenantContext
    from shironzi.tenancy.placement_policy import apply_placement

    ctx = TenantContext.admin(actor="airflow:placement_policy", purpose="placement policy")
    result = apply_placement(ctx, max_moves=max_moves, as_of=run_day, settings=settings).as_dict()
    if result["failed"]:
        raise InvalidStateError(f"{len(result['failed'])} placement move(s) failed: {result['failed']}")
    return result
