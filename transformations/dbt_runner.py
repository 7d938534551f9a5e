"""Run the curated layer (dbt on DuckDB: bronze Delta -> silver/gold Delta) from Python or the CLI.

The dbt project (dbt_project/) holds no absolute path: this runner computes every location from the
settings and hands it over as `SHIRONZI_DBT_*` environment variables and `--vars`. The DuckDB file,
dbt's target/ and logs/ live under SHIRONZI_HOME/dbt/<region>/.

A region has one pooled build (`{lake}/{region}/{layer}/...`, every pooled tenant) and one build per
dedicated tenant (`{lake}/{region}/tenants/{tenant_id}/{layer}/...`, its own bronze, silver and gold,
its own work dir SHIRONZI_HOME/dbt/<region>/tenants/<tenant_id>/ and its own registry snapshot).
`build_region` runs them all.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import typer

from shironzi.errors import InvalidInputError, TableNotFoundError, TransformationError
from shironzi.lake import history, table_version
from shironzi.lake.paths import platform_uri, table_uri
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings

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


@dataclass
class DbtBuildResult:
    """What one `dbt build` did."""

    models_built: list[str]
    tests_passed: int
    tests_failed: int
    gold_versions: dict[str, int]
    seconds: float
    success: bool
    failures: list[str] = field(default_factory=list)
    full_refresh: bool = False
    tenant_id: str | None = None  # the dedicated tenant built; None for the pooled build


@dataclass
class RegionBuildResult:
    """A region built in full: the pooled build (None without pooled bronze) and one per dedicated tenant."""

    region: str
    pooled: DbtBuildResult | None
    dedicated: dict[str, DbtBuildResult] = field(default_factory=dict)

    @property
    def builds(self) -> list[DbtBuildResult]:
        return [*([self.pooled] if self.pooled else []), *(self.dedicated[t] for t in sorted(self.dedicated))]

    @property
    def success(self) -> bool:
        return all(b.success for b in self.builds)

    @property
    def models_built(self) -> int:
        return sum(len(b.models_built) for b in self.builds)

    @property
    def tests_passed(self) -> int:
        return sum(b.tests_passed for b in self.builds)

    @property
    def tests_failed(self) -> int:
        return sum(b.tests_failed for b in self.builds)

    @property
    def failures(self) -> list[str]:
        return [f if b.tenant_id is None else f"tenants/{b.tenant_id}: {f}" for b in self.builds for f in b.failures]

    @property
    def gold_versions(self) -> dict[str, int]:
        """Gold table -> Delta version; a dedicated tenant's tables keyed `tenants/<tenant_id>/<table>`
        (their path under the region), so they never collide with the pooled ones."""
        versions = dict(self.pooled.gold_versions) if self.pooled else {}
        for tenant_id, build in self.dedicated.items():
            versions.update({f"tenants/{tenant_id}/{name}": v for name, v in build.gold_versions.items()})
        return versions


# -- locations ----------------------------------------------------------------------------------------
def _placement(tenant_id: str | None) -> dict[str, Any]:
    """`table_uri` keywords: pooled (None) or the dedicated tenant's own root."""
    return {"placement": "dedicated", "tenant_id": tenant_id} if tenant_id else {}


def bronze_events_uri(settings: Settings, region: str, tenant_id: str | None = None) -> str:
    """The region's pooled bronze events, or a dedicated tenant's own."""
    return table_uri(
        settings.resolved_lake_uri, layer="bronze", table="events", region=region, **_placement(tenant_id)
    )


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
    uri = table_uri(
        settings.resolved_lake_uri,
        layer=layer,  # type: ignore[arg-type]
        table="placeholder",
        region=region,
        **_placement(tenant_id),
    )
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
@contextlib.contextmanager
def dbt_environment(settings: Settings, region: str, tenant_id: str | None = None) -> Iterator[Path]:
    """Set the SHIRONZI_DBT_* variables the profile and sources read (restored afterwards); yields
    the dbt working directory of the region (or of its dedicated tenant `tenant_id`)."""
    work = dbt_home(settings, region, tenant_id)
    work.mkdir(parents=True, exist_ok=True)
    values = {
        "SHIRONZI_DBT_DUCKDB_PATH": str(work / "shironzi.duckdb"),
        "SHIRONZI_DBT_BRONZE_EVENTS": bronze_events_uri(settings, region, tenant_id),
        "SHIRONZI_DBT_REGISTRY_TENANTS": registry_snapshot_uri(settings, region, tenant_id),
        "SHIRONZI_DBT_SILVER_ROOT": layer_root(settings, region, "silver", tenant_id),
        "SHIRONZI_DBT_GOLD_ROOT": layer_root(settings, region, "gold", tenant_id),
        "SHIRONZI_DBT_STORAGE_OPTIONS": json.dumps(settings.storage_options),
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
        "DBT_VERSION_CHECK": "false",
        "DO_NOT_TRACK": "1",
    }
    with _DBT_LOCK:
        previous = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        added_path = str(PLUGINS_DIR) not in sys.path
        if added_path:
            sys.path.insert(0, str(PLUGINS_DIR))
        try:
            yield work
        finally:
            for name, value in previous.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
            if added_path:
                with contextlib.suppress(ValueError):
                    sys.path.remove(str(PLUGINS_DIR))


def _release_duckdb() -> None:
    """Close dbt-duckdb's process-wide DuckDB environment: frees the file lock and the registered
    datasets, and keeps a later `dbt parse` from loading sources through a stale environment."""
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with DuckDBConnectionManager._LOCK:
        environment = DuckDBConnectionManager._ENV
        DuckDBConnectionManager._ENV = None
    if environment is not None:
        with contextlib.suppress(Exception):
            environment.close()


def _invoke(
    command: str,
    work: Path,
    *,
    region: str,
    extra: list[str],
    dbt_vars: Mapping[str, Any],
    project_dir: Path = PROJECT_DIR,
) -> Any:
    """Run one dbt command (e.g. "build", "docs generate") in-process against the region's work dir."""
    from dbt.cli.main import dbtRunner

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
        json.dumps({"region": region, **dbt_vars}),
        "--quiet",
        "--no-use-colors",
        *extra,
    ]
    _release_duckdb()
    try:
        return dbtRunner().invoke(args)
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


def _gold_models(work: Path) -> list[str]:
    manifest = work / "target" / "manifest.json"
    if not manifest.exists():
        return []
    nodes = json.loads(manifest.read_text())["nodes"].values()
    return sorted(
        n["name"]
        for n in nodes
        if n["resource_type"] == "model"
        and n["config"].get("materialized") == "delta"
        and n["config"].get("layer") == "gold"
    )


def _gold_versions(
    settings: Settings, region: str, names: Iterable[str], tenant_id: str | None = None
) -> dict[str, int]:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError as DeltaMissing

    versions = {}
    for name in names:
        uri = table_uri(settings.resolved_lake_uri, layer="gold", table=name, region=region, **_placement(tenant_id))
        with contextlib.suppress(DeltaMissing):
            versions[name] = DeltaTable(uri, storage_options=settings.storage_options or None).version()
    return versions


def _tenants_fingerprint(enabled: set[str]) -> str:
    return hashlib.sha256("\n".join(sorted(enabled)).encode()).hexdigest()


def _rows_removed_since(bronze: str, version: int | None, settings: Settings) -> bool:
    """Did bronze lose rows (an erasure, a retention run) since the last build? Incremental models only see
    new ingestion, so deletions must flow through a full refresh or aggregates would keep erased rows."""
    if version is None:
        return True
    commits = history(bronze, storage_options=settings.storage_options or None)
    newer = [c for c in commits if int(c.get("version", -1)) > int(version)]
    if newer and min(int(c["version"]) for c in newer) > int(version) + 1:
        return True  # the log was truncated (an erasure drops old commits): assume rows were removed
    for commit in newer:
        if str(commit.get("operation", "")).upper() in {"DELETE", "MERGE", "UPDATE", "CREATE OR REPLACE TABLE"}:
            return True
        if str(commit.get("operation", "")).upper() == "WRITE" and "predicate" in (
            commit.get("operationParameters") or {}
        ):
            return True
    return False


def run_dbt_build(
    *,
    region: str,
    tenants: Iterable[Mapping[str, Any]] | None = None,
    select: str | None = None,
    full_refresh: bool = False,
    settings: Settings | None = None,
    dbt_vars: Mapping[str, Any] | None = None,
    raise_on_failure: bool = False,
    project_dir: Path | None = None,
    full_tests: bool = False,
    tenant_id: str | None = None,
) -> DbtBuildResult:
    """Run `dbt build` for one region's pooled tables, or (with `tenant_id`) for one dedicated tenant's own
    tables: snapshot the registry, build silver and gold Delta tables, run every data and unit test. When the
    set of analytics-enabled tenants changed since the last build, the facts are rebuilt in full (an
    incremental merge would keep a disabled tenant's rows).
    On an incremental build, data tests on a merged model check the partitions that build rewrote
    (dbt_project/README.md, "Incremental tests"); `full_tests` (or a full refresh) checks every row.
    `project_dir` swaps in a copy of the dbt project (tests, extensions)."""
    settings = settings or get_settings()
    _check_region(settings, region)
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

    scope = {"tenant": tenant_id} if tenant_id else {}
    with stage("dbt_build", region=region, **scope) as summary:
        _, enabled = write_registry_snapshot(tenants=tenants, region=region, settings=settings, tenant_id=tenant_id)
        state_file = dbt_home(settings, region, tenant_id) / "state.json"
        fingerprint = _tenants_fingerprint(enabled)
        previous = json.loads(state_file.read_text()) if state_file.exists() else None
        bronze_version = table_version(bronze, storage_options=settings.storage_options or None)
        if previous is not None and (
            previous.get("analytics_tenants") != fingerprint
            or _rows_removed_since(bronze, previous.get("bronze_version"), settings)
        ):
            full_refresh = True
        extra = [*(["--select", select] if select else []), *(["--full-refresh"] if full_refresh else [])]
        started = time.perf_counter()
        with dbt_environment(settings, region, tenant_id) as work:
            outcome = _invoke(
                "build",
                work,
                region=region,
                extra=extra,
                dbt_vars={**dict(dbt_vars or {}), **({"full_tests": True} if full_tests else {})},
                project_dir=project_dir or PROJECT_DIR,
            )
        seconds = time.perf_counter() - started
        models, passed, failed, failures = _summarise(outcome.result)
        if outcome.exception is not None:
            failures.append(f"dbt: {_first_line(str(outcome.exception))}")
        success = bool(outcome.success) and not failures
        if success:
            state_file.write_text(json.dumps({"analytics_tenants": fingerprint, "bronze_version": bronze_version}))
        result = DbtBuildResult(
            models_built=models,
            tests_passed=passed,
            tests_failed=failed,
            gold_versions=_gold_versions(settings, region, _gold_models(work), tenant_id),
            seconds=seconds,
            success=success,
            failures=failures,
            full_refresh=full_refresh,
            tenant_id=tenant_id,
        )
        summary.rows = len(models)
        summary.table_version = result.gold_versions
        summary.extra.update(
            tests_passed=passed, tests_failed=failed, success=success, full_refresh=full_refresh
        )
    if raise_on_failure and not success:
        raise TransformationError(_failure_message(result), region=region, failures=failures, **scope)
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
        built_before = (dbt_home(settings, region, tenant_id) / "state.json").exists()
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
        )

    opts = settings.storage_options or None
    has_pooled_bronze = table_exists(bronze_events_uri(settings, region), storage_options=opts)
    # no bronze at all: the pooled build raises the not-found error
    result = RegionBuildResult(region, build(None) if has_pooled_bronze or not targets else None)
    for tenant_id in targets:
        result.dedicated[tenant_id] = build(tenant_id)
    if raise_on_failure and not result.success:
        raise TransformationError(_failure_message(result), region=region, failures=result.failures)
    return result


def needs_full_refresh(*, region: str, settings: Settings | None = None, tenant_id: str | None = None) -> bool:
    """Would `run_dbt_build` rebuild this region's facts (or a dedicated tenant's) in full (analytics tenants
    changed, or bronze lost rows since the last successful build)? Orchestrators that build one model per task
    decide this once per run and pass `full_refresh`, since each partial build records the new state."""
    settings = settings or get_settings()
    _check_region(settings, region)
    state_file = dbt_home(settings, region, tenant_id) / "state.json"
    if not state_file.exists():
        return False
    previous = json.loads(state_file.read_text())
    _, enabled = write_registry_snapshot(region=region, settings=settings, tenant_id=tenant_id)
    return previous.get("analytics_tenants") != _tenants_fingerprint(enabled) or _rows_removed_since(
        bronze_events_uri(settings, region, tenant_id), previous.get("bronze_version"), settings
    )


def _failure_message(result: DbtBuildResult | RegionBuildResult) -> str:
    first = result.failures[0] if result.failures else "dbt reported a failure"
    more = f" (+{len(result.failures) - 1} more)" if len(result.failures) > 1 else ""
    return f"dbt build failed: {first}{more}"


def dbt_manifest(*, region: str | None = None, settings: Settings | None = None) -> dict[str, list[str]]:
    """Every model of the project -> the models it depends on (for per-model Airflow tasks)."""
    settings = settings or get_settings()
    region = _check_region(settings, region or settings.default_region)
    with dbt_environment(settings, region) as work:
        outcome = _invoke("parse", work, region=region, extra=[], dbt_vars={})
        if not outcome.success:
            raise TransformationError(f"dbt parse failed: {_first_line(str(outcome.exception))}")
        nodes = json.loads((work / "target" / "manifest.json").read_text())["nodes"]
    models = {key: node for key, node in nodes.items() if node["resource_type"] == "model"}
    return {
        node["name"]: sorted(models[dep]["name"] for dep in node["depends_on"]["nodes"] if dep in models)
        for node in models.values()
    }


# -- the CLI command ----------------------------------------------------------------------------------
def transform(
    region: str = typer.Option(
        None, "--region", help="Region to build (default: the settings' default region)."
    ),
    select: str = typer.Option(
        None, "--select", "-s", help="dbt node selection, e.g. 'fct_tenant_daily_kpis+'."
    ),
    full_refresh: bool = typer.Option(
        False, "--full-refresh", help="Rebuild incremental Delta tables in full."
    ),
    full_tests: bool = typer.Option(
        False,
        "--full-tests",
        help="Run every data test on whole tables (an incremental build tests only the rewritten partitions).",
    ),
    tenant: str = typer.Option(
        None, "--tenant", help="Build only this dedicated tenant's own tables (default: the whole region)."
    ),
) -> None:
    """Build the curated layer with dbt: bronze Delta -> silver and gold Delta, with every test. A region is
    built in full: its pooled tables and every dedicated tenant's own (analytics on, bronze landed)."""
    from rich.console import Console
    from rich.table import Table

    settings = get_settings()
    region = region or settings.default_region
    options: dict[str, Any] = {
        "region": region, "select": select, "full_refresh": full_refresh, "settings": settings, "full_tests": full_tests
    }
    console = Console(highlight=False, stderr=True)
    with console.status(f"dbt build {region}") as status:
        if tenant:
            build = run_dbt_build(tenant_id=tenant, **options)
            result = RegionBuildResult(region, None, {tenant: build})
        else:
            result = build_region(**options, progress=lambda text: status.update(f"dbt build {text}"))
    out = Console(highlight=False)
    for build in result.builds:
        owner = "pooled" if build.tenant_id is None else f"tenants/{build.tenant_id}"
        out.print(
            f"{region} {owner}: models built: {len(build.models_built)}  tests passed: {build.tests_passed}  "
            f"tests failed: {build.tests_failed}  ({build.seconds:.1f}s"
            f"{', full refresh' if build.full_refresh else ''})"
        )
    table = Table(title="gold Delta tables")
    table.add_column("table")
    table.add_column("version", justify="right")
    for name, version in sorted(result.gold_versions.items()):
        table.add_row(name, str(version))
    out.print(table)
    if not result.success:
        raise TransformationError(_failure_message(result), failures=result.failures)
