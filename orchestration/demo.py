"""`shironzi demo`: provision demo tenants and run every pipeline stage that exists, end to end,
on the embedded defaults, then print one summary table (stage, rows, seconds, table versions)."""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from shironzi.observability import log_to_file, stage
from shironzi.settings import Settings, get_settings

console = Console(width=None if sys.stdout.isatty() else 140)

DEMO_ACTOR = "demo"


@dataclass(frozen=True)
class DemoTenant:
    slug: str
    name: str
    industry: str
    plan: str
    region: str = "eu-west"


DEMO_TENANTS: tuple[DemoTenant, ...] = (
    DemoTenant("acme-shop", "Acme Shop", "ecommerce", "enterprise"),
    DemoTenant("bolt-mart", "Bolt Mart", "ecommerce", "standard"),
    DemoTenant("corner-store", "Corner Store", "ecommerce", "free"),
    DemoTenant("northwind-clinic", "Northwind Clinic", "healthcare", "enterprise"),
    DemoTenant("harbor-health", "Harbor Health", "healthcare", "standard"),
    DemoTenant("pine-dental", "Pine Dental", "healthcare", "free"),
    DemoTenant("brightpath-academy", "Brightpath Academy", "education", "enterprise"),
    DemoTenant("codecamp", "CodeCamp", "education", "standard"),
    DemoTenant("tutor-hub", "Tutor Hub", "education", "free"),
)


@dataclass
class StageOutcome:
    rows: int = 0
    versions: dict[str, int] = field(default_factory=dict)
    note: str = ""


@dataclass
class DemoState:
    """What earlier stages hand to later ones."""

    settings: Settings
    seed: int
    days: int
    customers: int
    tenant_ids: list[str] = field(default_factory=list)
    api_keys: dict[str, str] = field(default_factory=dict)
    admin_key: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)


def provision_demo_tenants(state: DemoState) -> StageOutcome:
    """Create the demo tenants (idempotent: existing slugs are reused) and one platform admin key."""
    from shironzi.errors import TenantNotFoundError
    from shironzi.tenancy import TenantContext, get_registry

    registry = get_registry()
    ctx = TenantContext.admin(actor=DEMO_ACTOR, purpose="demo provisioning")
    created = 0
    for spec in DEMO_TENANTS:
        try:
            tenant = registry.get_tenant(spec.slug)
        except TenantNotFoundError:
            tenant, key = registry.provision_tenant(
                ctx,
                slug=spec.slug,
                name=spec.name,
                industry=spec.industry,
                region=spec.region,
                plan=spec.plan,
            )
            state.api_keys[tenant.id] = key
            created += 1
        state.tenant_ids.append(tenant.id)
    _, state.admin_key = registry.issue_key(ctx, None, scopes=["admin"], label="demo admin")
    return StageOutcome(
        rows=len(state.tenant_ids), note=f"{created} created, {len(DEMO_TENANTS) - created} reused"
    )


LIVE_DAYS = 3  # the newest days of the simulation arrive through the stream; the rest as landing files
DEMO_TOPIC = "events"


def _split_simulation(state: DemoState) -> tuple[Any, Any]:
    """Simulate the demo tenants once: (history for landing files, the live slice for the stream)."""
    import dataclasses
    from datetime import timedelta

    import polars as pl

    from ingestion.synthetic import simulate
    from shironzi.tenancy import get_registry

    directory = get_registry().tenant_directory(fresh=True)
    tenants = [(tid, directory[tid].industry) for tid in state.tenant_ids]
    sim = simulate(tenants, customers=state.customers, days=state.days, seed=state.seed, bad_share=0.002)
    cutoff = sim.start + timedelta(days=sim.days - LIVE_DAYS)

    def part(keep: pl.Expr) -> Any:
        events = sim.events.filter(keep)
        return dataclasses.replace(
            sim,
            events=events,
            bad_plan=sim.bad_plan.filter(pl.col("seq").is_in(events.get_column("seq").implode())),
        )

    day = pl.col("event_time").dt.date()
    return part(day < cutoff), part(day >= cutoff)


def _reconciliation_note(counts: Any) -> str:
    return (
        f"received {counts.received:,} = landed {counts.landed:,} + quarantined {counts.quarantined:,} "
        f"+ dupes {counts.duplicates:,}" + ("" if counts.balanced() else " (NOT balanced)")
    )


def _ingest_outcome(counts: Any) -> StageOutcome:
    """Rows landed, bronze table versions (relative to the lake) and the reconciliation as the note."""
    bronze = {uri: v for uri, v in counts.table_versions.items() if "/bronze/" in uri}
    versions = {uri.rsplit("/lake/", 1)[-1]: v for uri, v in bronze.items()}
    return StageOutcome(rows=counts.landed, versions=versions, note=_reconciliation_note(counts))


def simulate_and_land_files(state: DemoState) -> StageOutcome:
    """Simulate the demo tenants' history as JSONL landing files and land them with the batch connector."""
    from ingestion.batch import ingest_files
    from ingestion.synthetic import write_landing_files

    history, live = _split_simulation(state)
    state.facts["live_simulation"] = live
    landing = state.settings.home / "landing"
    write_landing_files(history, landing, fmt="jsonl", file_per="day")
    result = ingest_files(landing, check_quality=False)
    return _ingest_outcome(result.totals)


def stream_live_slice(state: DemoState) -> StageOutcome:
    """Produce the newest days to the bundled broker's `events` topic and ingest them until caught up."""
    from ingestion.stream import broker_status, ensure_topic, make_sink, start_broker, stop_broker
    from ingestion.stream.ingestor import StreamIngestor, StreamOptions
    from ingestion.synthetic import iter_payload_batches

    live = state.facts.get("live_simulation")
    if live is None:
        _, live = _split_simulation(state)
    started_here = not state.settings.kafka_bootstrap and not broker_status().running
    info = start_broker() if started_here else None
    try:
        from ingestion.stream import resolve_bootstrap

        bootstrap = info.bootstrap if info is not None else resolve_bootstrap()
        ensure_topic(bootstrap, DEMO_TOPIC, partitions=4)
        with make_sink("confluent", bootstrap) as sink:
            for batch in iter_payload_batches(live):
                for key, value in zip(batch.keys, batch.values, strict=True):
                    sink.produce(DEMO_TOPIC, key, value)
            sink.flush()
        options = StreamOptions(topic=DEMO_TOPIC, bootstrap=bootstrap, until_caught_up=True)
        result = StreamIngestor(options).run()
    finally:
        if started_here:
            stop_broker()
    return _ingest_outcome(result.totals)


DemoStageFn = Callable[[DemoState], StageOutcome]


def build_curated_layer(state: DemoState) -> StageOutcome:
    """dbt build of silver and gold Delta tables for each region the demo tenants live in: the pooled tables and
    each dedicated tenant's own."""
    from transformations.dbt_runner import build_region

    regions = sorted({spec.region for spec in DEMO_TENANTS})
    outcome = StageOutcome()
    built = passed = dedicated = 0
    for region in regions:
        result = build_region(region=region, raise_on_failure=True)
        built += result.models_built
        passed += result.tests_passed
        dedicated += len(result.dedicated)
        outcome.versions.update({f"{region}/{name}": v for name, v in result.gold_versions.items()})
    outcome.rows = built
    outcome.note = f"{built} models built, {passed} tests passed" + (
        f" ({dedicated} dedicated tenant builds)" if dedicated else ""
    )
    state.facts["dbt_models_built"] = built
    return outcome


def build_and_materialize_features(state: DemoState) -> StageOutcome:
    """Feature pipelines on embedded Sail (incremental, module-gated), then the latest values online."""
    from feature_store.materialize import materialize
    from feature_store.offline import build_features

    built = build_features(cadence="weekly", settings=state.settings)
    pushed = materialize(settings=state.settings)
    state.facts["feature_rows"] = built.total_rows
    state.facts["online_feature_rows"] = pushed.total_rows
    return StageOutcome(
        rows=built.total_rows,
        versions=dict(built.versions),
        note=f"{len(built.tenants)} tenants ({len(built.skipped_tenants)} gated off), "
        f"{pushed.total_rows:,} online rows",
    )


def train_promote_and_score(state: DemoState) -> StageOutcome:
    """Train churn and trend (MLflow), promote them through the gates, score churn and write forecasts; the
    churn AUC is measured next to the simulator's oracle AUC, the trend sMAPE next to seasonal naive.
    A model the data is too short for is skipped with its reason (the rest of the demo goes on)."""
    from models.churn import train_churn
    from models.common import CHURN_MODEL, TREND_MODEL
    from models.oracle_comparison import compare_with_oracle
    from models.registry import promote_if_better
    from models.scoring import eligible_tenants, score_churn, write_forecasts
    from models.trend import train_trend
    from shironzi.errors import ModelTrainingError

    notes: list[str] = []
    outcome = StageOutcome()
    try:
        churn = train_churn(settings=state.settings, seed=state.seed)
    except ModelTrainingError as exc:
        notes.append(f"churn skipped: {exc.message}")
    else:
        gate = promote_if_better(CHURN_MODEL, settings=state.settings)
        scored = score_churn(settings=state.settings)
        simulation = state.facts.get("live_simulation")
        if simulation is None:
            _, simulation = _split_simulation(state)
        oracle = compare_with_oracle(simulation.snapshots, run_id=churn.run_id, settings=state.settings,
                                     tenant_ids=eligible_tenants(settings=state.settings))
        state.facts.update(churn_auc=oracle.model_auc, oracle_auc=oracle.oracle_auc, churn_metrics=churn.metrics,
                           churn_champion=gate.champion_version)
        outcome.rows += scored.rows
        outcome.versions.update({u.rsplit("/lake/", 1)[-1]: v for u, v in scored.table_versions.items()})
        notes.append(f"churn AUC {oracle.model_auc:.3f} vs oracle AUC {oracle.oracle_auc:.3f} on the simulator's "
                     f"truth (holdout AUC {churn.metrics.get('auc', float('nan')):.3f}, calibration error "
                     f"{churn.metrics.get('calibration_error', float('nan')):.3f}), champion v{gate.champion_version}, "
                     f"{scored.rows:,} scores")
    try:
        trend = train_trend(settings=state.settings, seed=state.seed)
    except ModelTrainingError as exc:
        notes.append(f"trend skipped: {exc.message}")
    else:
        gate = promote_if_better(TREND_MODEL, settings=state.settings)
        forecasts = write_forecasts(settings=state.settings)
        state.facts.update(trend_metrics=trend.metrics, trend_champion=gate.champion_version)
        outcome.rows += forecasts.rows
        outcome.versions.update({u.rsplit("/lake/", 1)[-1]: v for u, v in forecasts.table_versions.items()})
        notes.append(f"trend sMAPE {trend.metrics['smape']:.1f} vs seasonal naive "
                     f"{trend.metrics['baseline_smape']:.1f}, 80% interval coverage "
                     f"{trend.metrics['interval_coverage']:.2f}, champion v{gate.champion_version}, "
                     f"{forecasts.rows:,} forecasts")
    outcome.note = "; ".join(notes)
    return outcome


def erase_example_subject(state: DemoState) -> StageOutcome:
    """GDPR Art. 17 example: erase one customer of the first demo tenant everywhere, then re-verify the receipt."""
    import polars as pl

    from shironzi.audit.erasure import erase_subject, verify_receipt
    from shironzi.lake import read_polars, table_exists
    from shironzi.lake.paths import table_uri
    from shironzi.tenancy import TenantContext, get_registry

    tenant = get_registry().get_tenant(DEMO_TENANTS[0].slug)
    bronze = table_uri(
        state.settings.resolved_lake_uri,
        layer="bronze",
        table="events",
        region=tenant.region,
        placement=tenant.placement,
        tenant_id=tenant.id,
    )
    if not table_exists(bronze):
        return StageOutcome(note="no bronze data to erase from")
    customers = read_polars(bronze, columns=["customer_id"], tenant_id=tenant.id).unique().sort("customer_id")
    if customers.is_empty():
        return StageOutcome(note="no customers to erase")
    subject = customers.get_column("customer_id")[0]
    before = read_polars(bronze, columns=["customer_id"], tenant_id=tenant.id).filter(
        pl.col("customer_id") == subject
    )
    ctx = TenantContext.admin(actor=DEMO_ACTOR, purpose="demo: GDPR Art. 17 subject erasure")
    receipt = erase_subject(ctx, tenant.id, subject)
    check = verify_receipt(receipt.request_id)
    receipt_path = state.settings.home / "receipts" / f"{receipt.request_id}.json"
    receipt_path.parent.mkdir(parents=True, exist_ok=True)
    receipt_path.write_text(receipt.to_json())
    state.facts["erasure_receipt"] = str(receipt_path)
    deleted = sum(int(t.get("rows_deleted", 0)) for t in receipt.tables)
    verdict = "verified" if check.ok else "VERIFICATION FAILED"
    return StageOutcome(
        rows=deleted,
        note=f"{tenant.slug}/{subject}: {len(before)} bronze rows, "
        f"{len(receipt.tables)} tables, receipt {verdict} ({receipt_path.name})",
    )


def check_platform_api(state: DemoState) -> StageOutcome:
    """Serve the API (real uvicorn) and fetch one live churn prediction with a fresh tenant key."""
    from serving.smoke import check_api
    from shironzi.errors import ServiceUnavailableError
    from shironzi.tenancy import get_registry

    erased_next = get_registry().get_tenant(DEMO_TENANTS[0].slug).id  # the erasure stage deletes a subject
    try:
        smoke = check_api(state.settings, exclude_tenants=[erased_next])
    except ServiceUnavailableError as exc:  # no champion (too little data) or no online features yet
        return StageOutcome(note=f"skipped: {exc.message}")
    state.facts["api_smoke"] = smoke
    prediction = smoke.prediction
    return StageOutcome(
        rows=1,
        note=f"{smoke.tenant_slug}/{smoke.customer_id}: churn {prediction['churn_probability']:.3f} "
        f"({prediction['risk_band']}), model v{prediction['model_version']}",
    )


def seal_audit_log(state: DemoState) -> StageOutcome:
    """What the hourly audit_digest DAG does, once: sign a digest for every closed audit hour (the current hour is
    sealed after it closes), then verify the chains against the digests."""
    from shironzi.audit.digests import write_digests
    from shironzi.audit.verify import verify_chains

    run = write_digests(settings=state.settings)
    report = verify_chains()
    digests = report.digests
    state.facts["audit_digests"] = run.root
    through = run.sealed_through.strftime("%Y-%m-%d %H:%M UTC") if run.sealed_through else "nothing closed yet"
    pending = digests.pending_events if digests is not None else report.events
    verdict = "verified" if report.ok else "VERIFICATION FAILED"
    return StageOutcome(
        rows=run.events,
        note=f"{len(run.written)} signed digests, sealed through {through}, {pending} newer events pending; "
        f"chains + digests {verdict}",
    )


def generate_evidence_pack(state: DemoState) -> StageOutcome:
    """SOC 2 evidence for the demo's run (the last day): access review, changes, audit chain, erasures ..."""
    from shironzi.audit.evidence import default_pack_dir, write_evidence_pack
    from shironzi.tenancy import TenantContext

    now = dt.datetime.now(dt.UTC)
    ctx = TenantContext.admin(actor=DEMO_ACTOR, purpose="demo: SOC 2 evidence pack")
    pack = write_evidence_pack(ctx, default_pack_dir(now), start=now - dt.timedelta(days=1), end=now, now=now)
    state.facts["evidence_pack"] = str(pack.report)
    facts = pack.manifest["summary"]
    return StageOutcome(
        rows=len(pack.manifest["files"]),
        note=f"{facts['keys']} keys ({facts['stale_keys']} stale), {facts['changes']} changes, "
        f"{facts['erasures']} erasures, audit chain {'intact' if facts['audit_chain_ok'] else 'BROKEN'}: "
        f"{pack.report}",
    )


# Each later capability appends its stage here, in pipeline order.
STAGES: list[tuple[str, DemoStageFn]] = [
    ("provision tenants", provision_demo_tenants),
    ("simulate + land files", simulate_and_land_files),
    ("stream live slice", stream_live_slice),
    ("dbt build", build_curated_layer),
    ("features", build_and_materialize_features),
    ("models", train_promote_and_score),
    ("api", check_platform_api),
    ("gdpr erasure example", erase_example_subject),
    ("audit digests", seal_audit_log),
    ("soc2 evidence pack", generate_evidence_pack),
]


def _summary_table(results: list[tuple[str, StageOutcome, float]]) -> Table:
    table = Table(title="Shironzi demo", show_lines=False)
    table.add_column("stage")
    table.add_column("rows", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("table versions")
    table.add_column("notes")
    for name, outcome, seconds in results:
        versions = ", ".join(f"{k}@v{v}" for k, v in outcome.versions.items()) or "-"
        table.add_row(name, f"{outcome.rows:,}", f"{seconds:.1f}", versions, outcome.note)
    return table


def run_demo(
    *, seed: int = 7, days: int = 365, customers: int = 3000, only: list[str] | None = None
) -> list[tuple[str, StageOutcome, float]]:
    """Run every demo stage in order; returns (stage, outcome, seconds) per stage."""
    settings = get_settings()
    settings.ensure_home()
    log_path = settings.home / "logs" / "demo.jsonl"
    log_to_file(log_path)
    console.print(f"Shironzi demo under [bold]{settings.home}[/bold] (stage logs: {log_path})")
    state = DemoState(settings=settings, seed=seed, days=days, customers=customers)
    results: list[tuple[str, StageOutcome, float]] = []
    for name, fn in STAGES:
        if only and name not in only:
            continue
        started = time.perf_counter()
        with console.status(f"[bold]{name}[/bold] ..."), stage(f"demo:{name}") as summary:
            outcome = fn(state)
            summary.rows = outcome.rows
            summary.table_version = outcome.versions or None
        results.append((name, outcome, time.perf_counter() - started))
        console.print(f"[green]✓[/green] {name}: {outcome.rows:,} rows {outcome.note}")
    console.print(_summary_table(results))
    if state.admin_key:
        console.print(f"admin key (shown once): [bold]{state.admin_key}[/bold]")
    if "erasure_receipt" in state.facts:
        console.print(
            f"erasure receipt: {state.facts['erasure_receipt']} "
            f"(re-check: shironzi gdpr verify {state.facts['erasure_receipt']})"
        )
    if "audit_digests" in state.facts:
        console.print(
            f"audit digests: {state.facts['audit_digests']} (verify: shironzi audit verify; public key for "
            "auditors: shironzi audit digest-key --public)",
            markup=False,
        )
    if "evidence_pack" in state.facts:
        console.print(f"SOC 2 evidence pack: {state.facts['evidence_pack']} "
                      "(again: shironzi compliance evidence --from ... --to ...)", markup=False)
    if "api_smoke" in state.facts:
        smoke = state.facts["api_smoke"]
        console.print(
            f"API: SHIRONZI_HOME={settings.home} shironzi serve api --port 8000, then http://127.0.0.1:8000 "
            f"(docs at /docs; admin routes under /v1/admin with the admin key above)\n"
            f"  {smoke.curl('http://127.0.0.1:8000')}",
            markup=False,
        )
    console.print(
        f"dashboards: SHIRONZI_HOME={settings.home} shironzi serve dashboard --port 8501, then open "
        "http://127.0.0.1:8501 and sign in with the admin key above (or a tenant key)",
        markup=False,
    )
    return results


def demo(
    seed: int = typer.Option(7, help="Seed of the synthetic data (deterministic)."),
    days: int = typer.Option(365, min=14, help="Days of history to simulate."),
    customers: int = typer.Option(3000, min=50, help="Customers across all demo tenants."),
) -> None:
    """Provision demo tenants and run the whole pipeline on the embedded defaults."""
    run_demo(seed=seed, days=days, customers=customers)
