"""The dbt targets: `duckdb` (dbt-duckdb, embedded, the default) and `spark` (dbt-spark, `method: session`, over
Spark Connect: the cluster at SHIRONZI_SPARK_REMOTE, else the embedded Sail server).

A spark build is checked before any table is touched (a known target, the pinned Spark Connect client, a server
that answers), and guarded while it runs:

* Sail keeps its catalog in memory, per session: after a server restart (or in a new process) dbt-spark would not
  see the tables an earlier build wrote, and an incremental model would silently rebuild from scratch. So every
  Delta table the project's table/incremental models own is registered again at the start of the run
  (`create table if not exists ... using delta location ...`), which holds after any restart.
* An incremental model whose table existed before the run must come out merged: a commit that replaced the whole
  table fails the build (`check_incremental_merges`), never passes silently.
* Each model table's shared lease is held for the whole build, as the DuckDB plugin holds it for each write, so an
  erasure's exclusive vacuum waits for it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Any, Literal

import pyarrow as pa
import yaml  # type: ignore[import-untyped]  # dbt's own dependency
from deltalake import DeltaTable

from shironzi.errors import ConfigurationError, InvalidInputError
from shironzi.lake import history, table_exists, table_version
from shironzi.lake.leases import table_lease
from shironzi.settings import Settings
from transformations.spark import check_reachable, get_spark, spark_remote_url

DbtTarget = Literal["duckdb", "spark"]
DBT_TARGETS: tuple[DbtTarget, ...] = ("duckdb", "spark")
# pyproject.toml pins pyspark-client==4.2.0: pyspark 4.3 fails against Sail 0.7.2 ("session ... is not running").
PYSPARK_SERIES = "4.2."
# Delta operations that replace a whole table: an incremental model's table must never get one outside a full refresh.
_FULL_REWRITES = {"CREATE OR REPLACE TABLE", "CREATE TABLE AS SELECT", "REPLACE TABLE AS SELECT", "CREATE TABLE"}


def resolve_target(target: str | None, settings: Settings, project_dir: Path) -> DbtTarget:
    """The target to build with: the explicit one, else SHIRONZI_DBT_TARGET. An unknown name is bad input, and so
    is a target the project's SQL is not written for (its dbt_project.yml var `targets`, default duckdb only)."""
    name = (target or settings.dbt_target or "duckdb").strip().lower()
    if name not in DBT_TARGETS:
        raise InvalidInputError(
            f"unknown dbt target {name!r}; expected one of {', '.join(DBT_TARGETS)}", target=name
        )
    supported = project_targets(project_dir)
    if name not in supported:
        raise InvalidInputError(
            f"the dbt project {project_dir.name!r} is written for the {', '.join(supported)} target only, "
            f"not {name!r} (its models use that dialect's SQL)",
            target=name,
        )
    return name  # type: ignore[return-value]


def project_targets(project_dir: Path) -> list[str]:
    """The targets a dbt project declares its models portable to (dbt_project.yml `vars: targets: [...]`)."""
    project = yaml.safe_load((project_dir / "dbt_project.yml").read_text()) or {}
    declared = (project.get("vars") or {}).get("targets") or ["duckdb"]
    return [str(t).lower() for t in declared]


def project_declaring(project_dir: Path, dest: Path, targets: list[str]) -> Path:
    """A copy of a dbt project at `dest` that declares `targets`: how a port in progress is built on a target the
    project does not declare yet (its ported models only, e.g. `--select tag:portable`)."""
    shutil.copytree(project_dir, dest, ignore=shutil.ignore_patterns("target", "logs", "dbt_packages"))
    config = yaml.safe_load((dest / "dbt_project.yml").read_text())
    config.setdefault("vars", {})["targets"] = list(targets)
    (dest / "dbt_project.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return dest


def installed_pyspark_version() -> str | None:
    """The installed Spark Connect client's version (pyspark-client, or a full pyspark), None without one."""
    for distribution in ("pyspark-client", "pyspark"):
        with contextlib.suppress(PackageNotFoundError):
            return package_version(distribution)
    return None


def check_pyspark_version(version: str | None) -> str:
    """Refuse a Spark Connect client outside the pinned series (see PYSPARK_SERIES)."""
    if version is None:
        raise ConfigurationError("the spark dbt target needs pyspark-client 4.2 (pip install 'pyspark-client==4.2.0')")
    if not version.startswith(PYSPARK_SERIES):
        raise ConfigurationError(
            f"pyspark {version} is outside the pinned range {PYSPARK_SERIES}x for the spark dbt target "
            "(pyspark 4.3 fails against Sail 0.7.2); install pyspark-client==4.2.0",
            version=version,
        )
    return version


def prepare_spark(settings: Settings) -> str:
    """Everything a spark build needs before it touches a table: the pinned client, a server that answers
    (embedded Sail started when SHIRONZI_SPARK_REMOTE is unset) and a session dbt-spark's getOrCreate() picks up.
    Returns the Spark Connect URL."""
    check_pyspark_version(installed_pyspark_version())
    remote = spark_remote_url(settings)
    check_reachable(remote)
    get_spark(settings)  # the session dbt-spark's getOrCreate() picks up
    return remote


def _version(location: str, settings: Settings) -> int | None:
    opts = settings.storage_options or None
    return table_version(location, storage_options=opts) if table_exists(location, storage_options=opts) else None


@dataclass(frozen=True)
class ModelTable:
    """A model's Delta table on the spark target; `incremental`: the model merges into it after its first build."""

    name: str
    schema: str
    location: str
    incremental: bool


def model_tables(manifest: Path) -> list[ModelTable]:
    """The Delta tables the project's table, incremental and `delta` models own, from a parsed manifest. A `delta`
    model merges when configured incremental=true, unless its incremental_write is overwrite."""
    nodes = json.loads(manifest.read_text())["nodes"].values()
    tables = []
    for node in nodes:
        config = node.get("config") or {}
        materialized = config.get("materialized")
        if node.get("resource_type") != "model" or materialized not in ("table", "incremental", "delta"):
            continue
        merges = materialized == "incremental" or (
            materialized == "delta" and bool(config.get("incremental"))
            and config.get("incremental_write", "merge") == "merge"
        )
        root = config.get("location_root")
        if not root:
            raise ConfigurationError(f"spark model {node['name']} has no location_root: its Delta table has no home")
        identifier = node.get("alias") or node["name"]
        tables.append(ModelTable(identifier, node["schema"], f"{root}/{identifier}", merges))
    return sorted(tables, key=lambda t: (t.schema, t.name))


@dataclass(frozen=True)
class SourceTable:
    """A dbt source that is a Delta table (its `meta.delta_table_path`), read on the spark target as a catalog
    table `<source>.<table>` registered at that location."""

    name: str
    schema: str
    location: str


def source_tables(manifest: Path) -> list[SourceTable]:
    """The project's Delta sources, from a parsed manifest (their paths come from the runner's vars)."""
    sources = json.loads(manifest.read_text()).get("sources", {}).values()
    found = [
        SourceTable(node.get("identifier") or node["name"], node["schema"], str(node["meta"]["delta_table_path"]))
        for node in sources
        if (node.get("meta") or {}).get("delta_table_path")
    ]
    return sorted(found, key=lambda t: (t.schema, t.name))


def register_sources(sources: list[SourceTable], settings: Settings) -> list[str]:
    """Point the session catalog's source tables at this build's Delta paths (a dedicated tenant's bronze is
    another path under the same name)."""
    spark = get_spark(settings)
    for schema in sorted({s.schema for s in sources}):
        spark.sql(f"create schema if not exists `{schema}`")
    for source in sources:
        _point_catalog(spark, source.schema, source.name, source.location)
    return [f"{s.schema}.{s.name}" for s in sources]


def _point_catalog(
    spark: Any, schema: str, name: str, location: str | None, layout: tuple[str, str] = ("", "")
) -> None:
    """The catalog table `schema`.`name` at `location` (none: no such table). Dropped first, which keeps an external
    table's files: the server may hold the name at another build's location. `layout` (delta_layout) gives the entry
    its columns: Sail's `describe` shows none for a table registered without them, and dbt reads columns there."""
    spark.sql(f"drop table if exists `{schema}`.`{name}`")
    if location is not None:
        quoted = location.replace("'", "\\'")
        columns, partitioned = layout
        spark.sql(f"create table `{schema}`.`{name}` {columns} using delta {partitioned} location '{quoted}'")


_SPARK_TYPES = {"string": "string", "large_string": "string", "string_view": "string", "int64": "bigint",
                "int32": "int", "int16": "smallint", "int8": "tinyint", "double": "double", "float": "float",
                "bool": "boolean", "date32[day]": "date"}


def delta_layout(location: str, settings: Settings) -> tuple[str, str]:
    """A Delta table's columns and partitioning as Spark DDL, `("(a string, b bigint not null)", "partitioned by
    (p)")`: Sail checks both against the log when a table is registered with them."""
    table = DeltaTable(location, storage_options=settings.storage_options or None)
    columns = []
    for field in pa.schema(table.schema().to_arrow()):
        kind = str(field.type)
        if kind.startswith("timestamp"):
            spark_type = "timestamp" if "tz=" in kind else "timestamp_ntz"
        elif kind.startswith("decimal"):
            spark_type = kind.replace("decimal128", "decimal")
        else:
            spark_type = _SPARK_TYPES.get(kind, kind)
        columns.append(f"`{field.name}` {spark_type}{'' if field.nullable else ' not null'}")
    partitions = ", ".join(f"`{c}`" for c in table.metadata().partition_columns)
    return f"({', '.join(columns)})", (f"partitioned by ({partitions})" if partitions else "")


def register_delta_tables(tables: list[ModelTable], settings: Settings) -> list[str]:
    """Point the session catalog at this build's location of every model table that already has a Delta log, so
    dbt-spark sees it whatever the server forgot, and at nothing for the others (a first build). The same server
    may hold a name at another build's location (the pooled build's before a dedicated tenant's): merging there
    would write into the wrong table. Returns the names registered."""
    spark = get_spark(settings)
    spark.conf.set("spark.sql.session.timeZone", "UTC")  # as profiles.yml: a declared timestamp is UTC, like the logs'
    registered = []
    for schema in sorted({t.schema for t in tables}):
        spark.sql(f"create schema if not exists `{schema}`")
    for table in tables:
        exists = _version(table.location, settings) is not None
        if exists:
            _point_catalog(spark, table.schema, table.name, table.location, delta_layout(table.location, settings))
        else:
            _point_catalog(spark, table.schema, table.name, None)
        if exists:
            registered.append(f"{table.schema}.{table.name}")
    return registered


def check_incremental_merges(
    before: Mapping[str, int | None], tables: list[ModelTable], settings: Settings
) -> list[str]:
    """Failures for incremental models whose existing table this run replaced whole instead of merging into."""
    failures = []
    for table in tables:
        previous = before.get(table.location)
        if not table.incremental or previous is None:
            continue
        commits = history(table.location, storage_options=settings.storage_options or None)
        rewrites = [_describe(c) for c in commits if int(c.get("version", -1)) > previous and _replaces_table(c)]
        if rewrites:
            failures.append(
                f"model {table.name}: the incremental model was rebuilt in full ({rewrites[0]}) instead of merged "
                f"into its table of version {previous}: the catalog lost the table; rebuild with --full-refresh"
            )
    return failures


def _replaces_table(commit: Mapping[str, Any]) -> bool:
    """A commit that replaced the whole table: a create/replace, or an overwrite without a predicate (what Sail
    writes for dbt-spark's `create or replace table ... using delta`)."""
    operation = str(commit.get("operation", "")).upper()
    parameters = commit.get("operationParameters") or {}
    overwrite = operation == "WRITE" and str(parameters.get("mode", "")).lower() == "overwrite"
    return operation in _FULL_REWRITES or (overwrite and not parameters.get("predicate"))


def _describe(commit: Mapping[str, Any]) -> str:
    mode = (commit.get("operationParameters") or {}).get("mode")
    return f"{commit.get('operation')}{f' {mode}' if mode else ''} at version {commit.get('version')}"


@contextlib.contextmanager
def spark_build(
    settings: Settings, *, parse: Callable[[], Path], full_refresh: bool, failures: list[str]
) -> Iterator[list[ModelTable]]:
    """Around one spark `dbt build`: re-register the model tables (from `parse()`, which returns a fresh manifest),
    hold their shared leases, and afterwards append to `failures` every incremental model that was not merged."""
    manifest = parse()
    tables = model_tables(manifest)
    register_sources(source_tables(manifest), settings)
    register_delta_tables(tables, settings)
    before = {t.location: _version(t.location, settings) for t in tables}
    with contextlib.ExitStack() as leases:
        for table in tables:
            leases.enter_context(table_lease(table.location))
        yield tables
    if not full_refresh:
        failures.extend(check_incremental_merges(before, tables, settings))


def target_args(target: DbtTarget, remote: str | None) -> tuple[list[str], dict[str, Any]]:
    """dbt's --target switch and the vars the spark output of profiles.yml reads."""
    return ["--target", target], ({"spark_remote": remote} if remote else {})
