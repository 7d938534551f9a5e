"""Run the curated layer (dbt on DuckDB: bronze Delta -> silver/gold Delta) from Python; the CLI command
is transformations/cli.py.

The dbt project (dbt_project/) holds no absolute path: this runner computes every location from the
settings and hands it over as dbt `--vars` (`project_vars`), in-process through dbtRunner, without
touching the process environment. The DuckDB file, dbt's target/ and logs/ live under
SHIRONZI_HOME/dbt/<region>/.

A region has one pooled build (`{lake}/{region}/{layer}/...`, every pooled tenant) and one build per
dedicated tenant (`{lake}/{region}/tenants/{tenant_id}/{layer}/...`, its own bronze, silver and gold,
its own work dir SHIRONZI_HOME/dbt/<region>/tenants/<tenant_id>/ and its own registry snapshot).
`build_region` runs them all.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from shironzi.errors import InvalidInputError, TableNotFoundError, TransformationError
from shironzi.lake import table_version
from shironzi.lake.groups import LakeGroup
from shironzi.lake.paths import platform_uri
from shironzi.metering.usage import ensure_usage_table, usage_uri
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from transformations.dbt_results import DbtBuildResult, RegionBuildResult, failure_message
from transformations.dbt_state import (
    TenantChanges,
    delete_removed_tenants,
    erased_tenants_since,
    has_build_state,
    model_tables,
    record_build_state,
    rows_removed_since,
    tenant_changes,
    with_erased_tenants,
)
from transformations.dbt_targets import DbtTarget, prepare_spark, resolve_target, spark_build, target_args

PROJECT_DIR = Path(__file__).resolve().parent.parent / "dbt_project"
PLUGINS_DIR = PROJECT_DIR / "plugins"
INDUSTRIES = ("ecommerce", "healthcare", "education")
REGISTRY_COLUMNS = (
    "tenant_id",
    "slug",
    "industry",
    "region",
    "plan",
    "placement",
    "status",
    "analytics_enabled",
)

# dbt keeps process-global state (flags, adapters) and we set environment variables: one build at a time.
_DBT_LOCK = threading.RLock()
logger = logging.getLogger("shironzi.dbt")


# -- locations ----------------------------------------------------------------------------------------
def _group(region: str, tenant_id: str | None) -> LakeGroup:
    """The tables a build reads and writes: the region's pooled ones (None) or the dedicated tenant's own."""
    if tenant_id:
        return LakeGroup.of_tenant(tenant_id, region=region, placement="dedicated")
    return LakeGroup.pooled(region)


def bronze_events_uri(settings: Settings, region: str, tenant_id: str | None = None) -> str:
    """The region's pooled bronze events, or a dedicated tenant's own."""
    return _group(region, tenant_id).uri(settings, layer="bronze", table="events")


def registry_snapshot_uri(settings: Settings, region: str | None = None, tenant_id: str | None = None) -> str:
    """The snapshot a pooled build reads, or (with `tenant_id`) the one of a dedicated tenant's build: each
    dedicated build writes its own, so it never races with the pooled build or another tenant's."""
    if tenant_id is None:
        return platform_uri(settings.resolved_lake_uri, "registry", "tenants")
    if region is None:
        raise InvalidInputError("a dedicated registry snapshot needs a region", tenant=tenant_id)
    return platform_uri(settings.resolved_lake_uri, "registry", "dedicated", region, tenant_id)


def layer_root(settings: Settings, region: str, layer: str, tenant_id: str | None = None) -> str:
    """`{lake}/{region}/{layer}` (or `{lake}/{region}/tenants/{tenant_id}/{layer}`): where the dbt models of
    that layer write their Delta tables."""
    uri = _group(region, tenant_id).uri(settings, layer=layer, table="placeholder")  # type: ignore[arg-type]
    return uri.rsplit("/", 1)[0]


def dbt_home(settings: Settings, region: str, tenant_id: str | None = None) -> Path:
    """dbt's work dir (DuckDB file, target/, logs/, build state): per region, and per dedicated tenant."""
    work = settings.home / "dbt" / region
    return work / "tenants" / tenant_id if tenant_id else work


def _check_region(settings: Settings, region: str) -> str:
    if region not in settings.regions:
        raise InvalidInputError(
            f"unknown region {region!r}; expected one of {', '.join(settings.regions)}", region=region
        )
    return region


# -- the registry snapshot ----------------------------------------------------------------------------
def _registry_tenants(settings: Settings) -> list[dict[str, Any]]:
    """Tenants from the platform registry, with their analytics toggle."""
    from shironzi.tenancy.registry import get_registry

    registry = get_registry(settings)
    analytics = set(registry.tenants_with_module("analytics"))
    return [
        {**info._asdict(), "analytics_enabled": tenant_id in analytics}
        for tenant_id, info in registry.tenant_directory(fresh=True).items()
    ]


def _snapshot_rows(
    tenants: Iterable[Mapping[str, Any]], region: str, tenant_id: str | None = None
) -> dict[str, list[Any]]:
    """The snapshot's columns. `analytics_enabled` is the build's scope: the tenant's analytics toggle, and only
    for the pooled tenants (pooled build) or only for `tenant_id` (its dedicated build), so a build never puts
    another placement's rows into its tables."""
    columns: dict[str, list[Any]] = {name: [] for name in REGISTRY_COLUMNS}
    seen: set[str] = set()
    for number, tenant in enumerate(tenants, start=1):
        tid = tenant_id_of(tenant)
        if not tid:
            raise InvalidInputError(f"tenant #{number} has no tenant_id")
        if tid in seen:
            raise InvalidInputError(f"tenant {tid!r} appears twice", tenant=tid)
        seen.add(tid)
        industry = str(tenant.get("industry") or "").lower()
        if industry not in INDUSTRIES:
            raise InvalidInputError(
                f"tenant {tid!r} has unknown industry {industry!r}; "
                f"expected one of {', '.join(INDUSTRIES)}",
                tenant=tid,
            )
        enabled = _analytics_toggle(tenant)
        placement = str(tenant.get("placement") or "pooled")
        in_scope = placement != "dedicated" if tenant_id is None else tid == tenant_id
        columns["tenant_id"].append(tid)
        columns["slug"].append(str(tenant.get("slug") or tid))
        columns["industry"].append(industry)
        columns["region"].append(str(tenant.get("region") or region))
        columns["plan"].append(str(tenant.get("plan") or "standard"))
        columns["placement"].append(placement)
        columns["status"].append(str(tenant.get("status") or "active"))
        columns["analytics_enabled"].append(bool(enabled) and in_scope)
    if tenant_id is not None:
        _check_dedicated(columns, region, tenant_id)
    return columns


def tenant_id_of(tenant: Mapping[str, Any]) -> str:
    return str(tenant.get("tenant_id") or "").strip()


def _analytics_toggle(tenant: Mapping[str, Any]) -> bool:
    """The tenant's analytics module: its `analytics_enabled` flag, else whether `modules` lists it (default on)."""
    modules = tenant.get("modules")
    return bool(tenant.get("analytics_enabled", "analytics" in modules if modules is not None else True))


def _check_dedicated(columns: Mapping[str, list[Any]], region: str, tenant_id: str) -> None:
    """A dedicated build must name a dedicated tenant of the region it builds."""
    if tenant_id not in columns["tenant_id"]:
        from shironzi.errors import TenantNotFoundError

        raise TenantNotFoundError(tenant_id)
    at = columns["tenant_id"].index(tenant_id)
    if columns["placement"][at] != "dedicated" or columns["region"][at] != region:
        raise InvalidInputError(
            f"tenant {tenant_id!r} is not a dedicated tenant of region {region!r} "
            f"({columns['placement'][at]} in {columns['region'][at]}): its rows are built with the pooled tables",
            tenant=tenant_id,
        )


def write_registry_snapshot(
    *,
    tenants: Iterable[Mapping[str, Any]] | None = None,
    region: str,
    settings: Settings | None = None,
    tenant_id: str | None = None,
) -> tuple[str, set[str]]:
    """Write the tenants dbt sees (explicit dicts, else the registry) as a Delta table; returns its URI
    and the ids of this region's tenants with analytics on that the build covers (the pooled ones, or only
    the dedicated `tenant_id`)."""
    import pyarrow as pa
    from deltalake import write_deltalake

    settings = settings or get_settings()
    rows = _snapshot_rows(_registry_tenants(settings) if tenants is None else tenants, region, tenant_id)
    schema = pa.schema(
        [(name, pa.bool_() if name == "analytics_enabled" else pa.string()) for name in REGISTRY_COLUMNS]
    )
    ensure_usage_table(settings)  # the other platform source of the marts: empty before the first metering
    uri = registry_snapshot_uri(settings, region, tenant_id)
    write_deltalake(
        uri,
        pa.table(rows, schema=schema),
        mode="overwrite",
        schema_mode="overwrite",
        storage_options=settings.storage_options or None,
    )
    enabled = {
        tid
        for tid, reg, on in zip(rows["tenant_id"], rows["region"], rows["analytics_enabled"], strict=True)
        if on and reg == region
    }
    return uri, enabled


# -- running dbt --------------------------------------------------------------------------------------
def churn_windows_var(settings: Settings) -> dict[str, dict[str, int]]:
    """The dbt var `churn_windows`: the tenants that set their churn_prediction windows (`shironzi modules set
    T churn_prediction inactivity_days=N horizon_days=M`), one registry query; one setting alone sets both."""
    from shironzi.tenancy.registry import get_registry

    out: dict[str, dict[str, int]] = {}
    for tenant_id, values in get_registry(settings).module_settings_of("churn_prediction").items():
        inactivity = values.get("inactivity_days", values.get("horizon_days"))
        horizon = values.get("horizon_days", inactivity)
        if inactivity is not None and horizon is not None:
            out[tenant_id] = {"inactivity_days": int(inactivity), "horizon_days": int(horizon)}
    return out


def project_vars(settings: Settings, region: str, tenant_id: str | None = None) -> dict[str, Any]:
    """Every location the dbt project reads, handed over as dbt vars: profiles.yml (the DuckDB file), the
    sources (bronze events, the registry snapshot) and the delta materialization (the silver/gold roots)."""
    return {
        "region": region,
        "duckdb_path": str(dbt_home(settings, region, tenant_id) / "shironzi.duckdb"),
        "bronze_events": bronze_events_uri(settings, region, tenant_id),
        "registry_tenants": registry_snapshot_uri(settings, region, tenant_id),
        "platform_usage": usage_uri(settings),
        "silver_root": layer_root(settings, region, "silver", tenant_id),
        "gold_root": layer_root(settings, region, "gold", tenant_id),
        "storage_options": json.dumps(settings.storage_options),
    }


@contextlib.contextmanager
def dbt_workdir(settings: Settings, region: str, tenant_id: str | None = None) -> Iterator[Path]:
    """Hold the process's dbt lock and yield the dbt working directory of the region (or of its dedicated
    tenant `tenant_id`), with the project's plugins importable."""
    work = dbt_home(settings, region, tenant_id)
    work.mkdir(parents=True, exist_ok=True)
    with _DBT_LOCK:
        added_path = str(PLUGINS_DIR) not in sys.path
        if added_path:
            sys.path.insert(0, str(PLUGINS_DIR))
        try:
            yield work
        finally:
            if added_path:
                with contextlib.suppress(ValueError):
                    sys.path.remove(str(PLUGINS_DIR))


def _release_duckdb() -> None:
    """Close dbt-duckdb's process-wide DuckDB environment: frees the file lock and the registered
    datasets, and keeps a later `dbt parse` from loading sources through a stale environment."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    try:
        environment = DuckDBConnectionManager.env()
    except Exception:  # noqa: BLE001 - dbt-duckdb raises a bare Exception when there is none yet
        return
    DuckDBConnectionManager.close_all_connections()
    with contextlib.suppress(Exception):
        environment.close()


def _invoke(
    command: str,
    *,
    settings: Settings,
    region: str,
    tenant_id: str | None = None,
    extra: Iterable[str] = (),
    dbt_vars: Mapping[str, Any] | None = None,
    project_dir: Path = PROJECT_DIR,
    target: DbtTarget = "duckdb",
    spark_remote: str | None = None,
) -> Any:
    """Run one dbt command (e.g. "build", "docs generate") in-process against the region's (or dedicated
    tenant's) work dir. Locations go in as --vars, dbt's own switches as the runner's keyword flags: the
    process environment is left alone."""
    from dbt.cli.main import dbtRunner

    target_switch, spark_vars = target_args(target, spark_remote)
    with dbt_workdir(settings, region, tenant_id) as work:
        args = [
            *command.split(),
            "--project-dir",
            str(project_dir),
            "--profiles-dir",
            str(project_dir),
            "--target-path",
            str(work / "target"),
            "--log-path",
            str(work / "logs"),
            "--vars",
            json.dumps({**project_vars(settings, region, tenant_id), "churn_windows": churn_windows_var(settings),
                        **spark_vars, **dict(dbt_vars or {})}),
            "--quiet",
            "--no-use-colors",
            *target_switch,
            *extra,
        ]
        _release_duckdb()
        try:
            return dbtRunner().invoke(args, send_anonymous_usage_stats=False, version_check=False)
        finally:
            _release_duckdb()


def _first_line(text: str | None) -> str:
    """The first informative line of a dbt message (skipping its 'Runtime Error in model x' header)."""
    lines = [" ".join(line.split()) for line in (text or "").splitlines() if line.strip()]
    informative = [line for line in lines if not line.endswith(".sql)") and not line.endswith(".yml)")]
    return (informative or lines or [""])[0]


def _summarise(result: Any) -> tuple[list[str], int, int, list[str]]:
    """Models built, tests passed, tests failed and failure lines from a dbt RunExecutionResult."""
    models, passed, failed, failures = [], 0, 0, []
    for item in getattr(result, "results", None) or []:
        node, status = item.node, str(item.status)
        kind = str(node.resource_type)
        if kind in ("test", "unit_test"):
            if status == "pass":
                passed += 1
            elif status in ("fail", "error"):
                failed += 1
                failures.append(
                    f"{kind} {node.name}: {status} ({_first_line(item.message) or 'failing rows'})"
                )
        elif kind in ("model", "seed", "snapshot"):
            if status == "success":
                if kind == "model":
                    models.append(node.name)
            elif status == "error":
                failures.append(f"{kind} {node.name}: {_first_line(item.message)}")
    return models, passed, failed, failures


def _model_stats(result: Any) -> dict[str, dict[str, Any]]:
    """Per built model, its build seconds and the rows the adapter reported (None when it reports none)."""
    stats: dict[str, dict[str, Any]] = {}
    for item in getattr(result, "results", None) or []:
        if str(item.node.resource_type) == "model" and str(item.status) == "success":
            rows = (getattr(item, "adapter_response", None) or {}).get("rows_affected")
            stats[item.node.name] = {"seconds": round(float(item.execution_time or 0.0), 3),
                                     "rows": rows if isinstance(rows, int) and rows >= 0 else None}
    return stats


def _gold_models(work: Path) -> list[str]:
    manifest = work / "target" / "manifest.json"
    if not manifest.exists():
        return []
    nodes = json.loads(manifest.read_text())["nodes"].values()
    return sorted(
        n["name"]
        for n in nodes
        if n["resource_type"] == "model"
        and n["config"].get("materialized") in ("delta", "table", "incremental")
        and n["config"].get("layer") == "gold"
    )


def _gold_versions(
    settings: Settings, region: str, names: Iterable[str], tenant_id: str | None = None
) -> dict[str, int]:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError as DeltaMissing

    versions = {}
    for name in names:
        uri = _group(region, tenant_id).uri(settings, layer="gold", table=name)
        with contextlib.suppress(DeltaMissing):
            versions[name] = DeltaTable(uri, storage_options=settings.storage_options or None).version()
    return versions


def run_dbt_build(
    *,
    region: str,
    tenants: Iterable[Mapping[str, Any]] | None = None,
    select: str | None = None,
    indirect_selection: Literal["eager", "cautious", "buildable", "empty"] | None = None,
    full_refresh: bool = False,
    settings: Settings | None = None,
    dbt_vars: Mapping[str, Any] | None = None,
    raise_on_failure: bool = False,
    project_dir: Path | None = None,
    full_tests: bool = False,
    tenant_id: str | None = None,
    target: str | None = None,
    changes: TenantChanges | None = None,
) -> DbtBuildResult:
    """Run `dbt build` for one region's pooled tables, or (with `tenant_id`) for one dedicated tenant's own
    tables: snapshot the registry, build silver and gold Delta tables, run every data and unit test. Tenants whose
    analytics came on since the last build (recorded in the lake, transformations/dbt_state.py) are built for
    themselves only; those whose analytics went off have their rows deleted (one predicate per table): neither is
    a full refresh. `changes` is set by an orchestrator that decided them (and applied the removals) once per
    run (`plan_build`); such a build, like a `select`ed one, records no build state.
    On an incremental build, data tests on a merged model check the partitions that build rewrote
    (dbt_project/README.md, "Incremental tests"); `full_tests` (or a full refresh) checks every row.
    `project_dir` swaps in a copy of the dbt project (tests, extensions); `indirect_selection` is dbt's
    --indirect-selection (which tests a --select brings along). `target` is the dbt target (duckdb, spark;
    default SHIRONZI_DBT_TARGET); a spark build is checked and guarded by transformations/dbt_targets.py."""
    settings = settings or get_settings()
    _check_region(settings, region)
    dbt_target = resolve_target(target, settings, project_dir or PROJECT_DIR)
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError as DeltaMissing

    if tenant_id is not None:  # a dedicated build names a dedicated tenant of the region, or fails here
        tenants = list(_registry_tenants(settings) if tenants is None else tenants)
        _snapshot_rows(tenants, region, tenant_id)
    bronze = bronze_events_uri(settings, region, tenant_id)
    try:
        DeltaTable(bronze, storage_options=settings.storage_options or None)
    except DeltaMissing as exc:
        owner = f"region {region!r}" + (f" (dedicated tenant {tenant_id!r})" if tenant_id else "")
        raise TableNotFoundError(
            f"no bronze events table for {owner} at {bronze}; ingest events first", uri=bronze
        ) from exc
    spark_remote = prepare_spark(settings) if dbt_target == "spark" else None
    invocation: dict[str, Any] = {
        "settings": settings, "region": region, "tenant_id": tenant_id, "project_dir": project_dir or PROJECT_DIR,
        "target": dbt_target, "spark_remote": spark_remote,
        "dbt_vars": {**dict(dbt_vars or {}), **({"full_tests": True} if full_tests else {})},
    }

    def parse() -> Path:
        outcome = _invoke("parse", **invocation)
        if not outcome.success:
            raise TransformationError(f"dbt parse failed: {_first_line(str(outcome.exception))}", region=region)
        return dbt_home(settings, region, tenant_id) / "target" / "manifest.json"

    scope = {"tenant": tenant_id} if tenant_id else {}
    with stage("dbt_build", region=region, **scope) as summary:
        _, enabled = write_registry_snapshot(tenants=tenants, region=region, settings=settings, tenant_id=tenant_id)
        bronze_version = table_version(bronze, storage_options=settings.storage_options or None)
        orchestrated = changes is not None
        if changes is None:
            changes = _changes_since_build(settings, region, enabled, tenant_id, bronze)
            if not _full_refresh_needed(changes, bronze, settings) and changes.removed:
                delete_removed_tenants(settings, build_tables(settings, region, tenant_id, parse), changes.removed)
        if _full_refresh_needed(changes, bronze, settings):
            full_refresh = True
        if changes.added and not full_refresh:
            invocation["dbt_vars"] = {**invocation["dbt_vars"], "added_tenants": list(changes.added)}
        extra = [
            *(["--select", select] if select else []),
            *(["--indirect-selection", indirect_selection] if indirect_selection else []),
            *(["--full-refresh"] if full_refresh else []),
        ]
        started = time.perf_counter()
        not_merged: list[str] = []
        with (
            spark_build(settings, parse=parse, full_refresh=full_refresh, failures=not_merged)
            if dbt_target == "spark"
            else contextlib.nullcontext()
        ):
            outcome = _invoke("build", extra=extra, **invocation)
        seconds = time.perf_counter() - started
        models, passed, failed, failures = _summarise(outcome.result)
        failures += not_merged
        if outcome.exception is not None:
            failures.append(f"dbt: {_first_line(str(outcome.exception))}")
        success = bool(outcome.success) and not failures
        if success and not orchestrated and select is None:
            record_build_state(settings, region, tenants=enabled, bronze_version=bronze_version, tenant_id=tenant_id)
        if success and select is None and dbt_target == "duckdb":
            _mark_scopes_tested(settings, region, tenant_id)
        result = DbtBuildResult(
            models_built=models,
            tests_passed=passed,
            tests_failed=failed,
            gold_versions=_gold_versions(
                settings, region, _gold_models(dbt_home(settings, region, tenant_id)), tenant_id
            ),
            seconds=seconds,
            success=success,
            failures=failures,
            full_refresh=full_refresh,
            tenant_id=tenant_id,
        )
        summary.rows = len(models)
        summary.table_version = result.gold_versions
        summary.extra.update(
            tests_passed=passed, tests_failed=failed, success=success, full_refresh=full_refresh, target=dbt_target,
            tenants_added=len(changes.added), tenants_removed=len(changes.removed), tenants=len(enabled),
            model_stats=_model_stats(outcome.result),
        )
    if raise_on_failure and not success:
        raise TransformationError(failure_message(result), region=region, failures=failures, **scope)
    return result


def dedicated_build_targets(
    *, region: str, tenants: Iterable[Mapping[str, Any]] | None = None, settings: Settings | None = None
) -> list[str]:
    """The dedicated tenants of `region` that get their own build: a bronze table of their own, and analytics
    on, or off after an earlier build (that rebuild empties their marts, as a pooled build drops a disabled
    tenant's rows)."""
    from shironzi.lake import table_exists

    settings = settings or get_settings()
    _check_region(settings, region)
    listed = list(_registry_tenants(settings) if tenants is None else tenants)
    _snapshot_rows(listed, region)  # the same checks as a build's snapshot
    opts = settings.storage_options or None
    targets = []
    for tenant in listed:
        tenant_id = tenant_id_of(tenant)
        if tenant.get("placement") != "dedicated" or str(tenant.get("region") or region) != region:
            continue
        built_before = has_build_state(settings, region, tenant_id)
        if (_analytics_toggle(tenant) or built_before) and table_exists(
            bronze_events_uri(settings, region, tenant_id), storage_options=opts
        ):
            targets.append(tenant_id)
    return sorted(targets)


def build_region(
    *,
    region: str,
    tenants: Iterable[Mapping[str, Any]] | None = None,
    select: str | None = None,
    full_refresh: bool = False,
    settings: Settings | None = None,
    raise_on_failure: bool = False,
    full_tests: bool = False,
    dbt_vars: Mapping[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
    target: str | None = None,
) -> RegionBuildResult:
    """Build a region in full: its pooled tables (when it has pooled bronze) and each dedicated tenant's own
    (`dedicated_build_targets`), from one registry read. A region with no bronze at all raises
    TableNotFoundError; `raise_on_failure` raises TransformationError after every build ran."""
    settings = settings or get_settings()
    _check_region(settings, region)
    from shironzi.lake import table_exists

    listed = list(_registry_tenants(settings) if tenants is None else tenants)
    targets = dedicated_build_targets(region=region, tenants=listed, settings=settings)

    def build(tenant_id: str | None) -> DbtBuildResult:
        if progress:
            progress(f"{region}: {'pooled' if tenant_id is None else f'tenants/{tenant_id}'}")
        return run_dbt_build(
            region=region,
            tenants=listed,
            select=select,
            full_refresh=full_refresh,
            settings=settings,
            dbt_vars=dbt_vars,
            full_tests=full_tests,
            tenant_id=tenant_id,
            target=target,
        )

    opts = settings.storage_options or None
    has_pooled_bronze = table_exists(bronze_events_uri(settings, region), storage_options=opts)
    # no bronze at all: the pooled build raises the not-found error
    result = RegionBuildResult(region, build(None) if has_pooled_bronze or not targets else None)
    for tenant_id in targets:
        result.dedicated[tenant_id] = build(tenant_id)
    if raise_on_failure and not result.success:
        raise TransformationError(failure_message(result), region=region, failures=result.failures)
    return result


def _mark_scopes_tested(settings: Settings, region: str, tenant_id: str | None) -> None:
    """Every model's latest commit has passed its tests (a whole build, nothing failed): the next build tests only
    what it writes itself (dbt_project/macros/test_scope.sql), not a model it leaves alone."""
    import duckdb

    path = dbt_home(settings, region, tenant_id) / "shironzi.duckdb"
    if not path.exists():
        return
    try:
        with _DBT_LOCK, contextlib.closing(duckdb.connect(str(path))) as conn:
            known = conn.execute(
                "select count(*) from information_schema.columns "
                "where table_schema = 'main' and table_name = 'shironzi_delta_scope' and column_name = 'tested'"
            ).fetchone()
            if known and known[0]:
                conn.execute("update main.shironzi_delta_scope set tested = true")
    except duckdb.IOException as exc:  # another process holds the file: the next build tests these scopes again
        logger.warning("the dbt test scopes of region %s stay untested: %s", region, exc)


def _changes_since_build(
    settings: Settings, region: str, enabled: set[str], tenant_id: str | None, bronze: str
) -> TenantChanges:
    """The analytics tenants added and removed since the last build, plus the tenants a subject erasure touched
    since (rebuilt alone: removed, then added)."""
    changes = tenant_changes(settings, region, enabled, tenant_id)
    if not changes.recorded:
        return changes
    return with_erased_tenants(changes, erased_tenants_since(bronze, changes.bronze_version, settings))


def _full_refresh_needed(changes: TenantChanges, bronze: str, settings: Settings) -> bool:
    """No recorded build (a first build, or one recorded before the state moved to the lake), or bronze lost rows
    since the last build other than by a subject erasure (incremental models only see new ingestion)."""
    return not changes.recorded or rows_removed_since(bronze, changes.bronze_version, settings)


def build_tables(
    settings: Settings, region: str, tenant_id: str | None, parse: Callable[[], Path] | None = None
) -> list[str]:
    """The silver and gold Delta tables of a build, from its manifest (parsed first when there is none yet)."""
    manifest = dbt_home(settings, region, tenant_id) / "target" / "manifest.json"
    if not manifest.exists() and parse is not None:
        manifest = parse()
    roots = {layer: layer_root(settings, region, layer, tenant_id) for layer in ("silver", "gold")}
    return model_tables(manifest, roots)


def dbt_manifest(*, region: str | None = None, settings: Settings | None = None) -> dict[str, list[str]]:
    """Every model of the project -> the models it depends on (for per-model Airflow tasks)."""
    settings = settings or get_settings()
    region = _check_region(settings, region or settings.default_region)
    with dbt_workdir(settings, region) as work:
        outcome = _invoke("parse", settings=settings, region=region)
        if not outcome.success:
            raise TransformationError(f"dbt parse failed: {_first_line(str(outcome.exception))}")
        nodes = json.loads((work / "target" / "manifest.json").read_text())["nodes"]
    models = {key: node for key, node in nodes.items() if node["resource_type"] == "model"}
    return {
        node["name"]: sorted(models[dep]["name"] for dep in node["depends_on"]["nodes"] if dep in models)
        for node in models.values()
    }
