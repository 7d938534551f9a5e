"""What a dbt build already covers, recorded in the lake: the tenants with analytics it built and the bronze
version it read. From it the runner derives what changed since (`TenantChanges`): tenants added since the last
build are built for themselves only (the models' `added_tenants` scope), tenants removed (analytics off,
offboarded) have their rows deleted from the build's tables by one predicate per table, and a tenant one of whose
subjects was erased from bronze since (the erasure's delete names its tenant: `ERASED_TENANT_KEY`) is both: its rows
are deleted and built again from bronze. None of these turns the next build into a full refresh; only rows that
left bronze some other way (an untagged delete or merge, a truncated log) do.

The state is a small Delta table per build: `{lake}/_platform/dbt/builds/<region>` for the pooled build and
`{lake}/_platform/dbt/builds/<region>/tenants/<tenant_id>` for a dedicated tenant's, one row per built tenant,
the bronze version in the commit's metadata; so any worker (Airflow, the CLI, another host) sees the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from shironzi.audit.erasure import ERASED_TENANT_KEY
from shironzi.lake import history, open_table, overwrite, table_exists
from shironzi.lake.leases import table_lease
from shironzi.lake.paths import platform_uri
from shironzi.lake.predicates import sql_literal
from shironzi.settings import Settings

BRONZE_VERSION_KEY = "shironzi.bronze_version"


@dataclass(frozen=True)
class TenantChanges:
    """The tenants a build adds to or removes from its tables, compared with the last recorded build."""

    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    recorded: bool = True  # False: no build state yet (a first build, or one from before the state moved here)
    bronze_version: int | None = None  # the bronze version the last build read
    built: frozenset[str] = field(default_factory=frozenset)

    def as_dict(self) -> dict[str, object]:
        """JSON-friendly (Airflow XCom); `from_dict` reads it back."""
        return {"added": list(self.added), "removed": list(self.removed), "recorded": self.recorded,
                "bronze_version": self.bronze_version}

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TenantChanges:
        version = data.get("bronze_version")
        return cls(
            added=tuple(str(t) for t in data.get("added") or ()),  # type: ignore[attr-defined]
            removed=tuple(str(t) for t in data.get("removed") or ()),  # type: ignore[attr-defined]
            recorded=bool(data.get("recorded", True)),
            bronze_version=int(version) if version is not None else None,  # type: ignore[call-overload]
        )


def build_state_uri(settings: Settings, region: str, tenant_id: str | None = None) -> str:
    """The Delta table recording the pooled build of `region`, or a dedicated tenant's build."""
    parts = ("dbt", "builds", region, *(("tenants", tenant_id) if tenant_id else ()))
    return platform_uri(settings.resolved_lake_uri, *parts)


def has_build_state(settings: Settings, region: str, tenant_id: str | None = None) -> bool:
    return table_exists(build_state_uri(settings, region, tenant_id), storage_options=settings.storage_options or None)


def read_build_state(
    settings: Settings, region: str, tenant_id: str | None = None
) -> tuple[set[str], int | None] | None:
    """The tenants the last successful build covered and the bronze version it read; None before any."""
    uri = build_state_uri(settings, region, tenant_id)
    opts = settings.storage_options or None
    if not table_exists(uri, storage_options=opts):
        return None
    table = open_table(uri, storage_options=opts)
    built = set(table.to_pyarrow_table(columns=["tenant_id"]).column("tenant_id").to_pylist())
    last = table.history(1)[0]
    version = last.get(BRONZE_VERSION_KEY)
    return built, int(version) if version is not None else None


def record_build_state(
    settings: Settings, region: str, *, tenants: Iterable[str], bronze_version: int | None, tenant_id: str | None = None
) -> None:
    """Record a successful build: the tenants it covered (one overwrite commit, under the table's lease) and
    the bronze version it read."""
    import pyarrow as pa

    rows = pa.table({"tenant_id": pa.array(sorted(set(tenants)), type=pa.string())})
    overwrite(
        build_state_uri(settings, region, tenant_id),
        rows,
        schema_mode="overwrite",
        storage_options=settings.storage_options or None,
        metadata={BRONZE_VERSION_KEY: json.dumps(bronze_version)} if bronze_version is not None else None,
    )


def tenant_changes(settings: Settings, region: str, enabled: set[str], tenant_id: str | None = None) -> TenantChanges:
    """The analytics tenants of this build (`enabled`) against the last recorded build."""
    state = read_build_state(settings, region, tenant_id)
    if state is None:
        return TenantChanges(recorded=False)
    built, bronze_version = state
    return TenantChanges(
        added=tuple(sorted(enabled - built)),
        removed=tuple(sorted(built - enabled)),
        bronze_version=bronze_version,
        built=frozenset(built),
    )


def model_tables(manifest: Path, root_of: dict[str, str]) -> list[str]:
    """The Delta tables the project's `delta` models write (their layer root from `root_of` + the model name),
    read from a parsed manifest."""
    if not manifest.exists():
        return []
    nodes = json.loads(manifest.read_text())["nodes"].values()
    return sorted(
        f"{root_of[n['config']['layer']]}/{n['name']}"
        for n in nodes
        if n["resource_type"] == "model"
        and n["config"].get("materialized") == "delta"
        and n["config"].get("layer") in root_of
    )


def delete_removed_tenants(settings: Settings, tables: Iterable[str], removed: Iterable[str]) -> dict[str, int]:
    """Delete the removed tenants' rows from every table that exists: one commit per table holding any of them
    (never one per tenant), none where no table holds them. Returns the rows deleted per table."""
    ids = sorted(set(removed))
    if not ids:
        return {}
    opts = settings.storage_options or None
    deleted = {}
    for uri in tables:
        if table_exists(uri, storage_options=opts):
            with table_lease(uri):
                deleted[uri] = _drop_tenants(uri, ids, opts)
    return deleted


def _drop_tenants(uri: str, ids: list[str], opts: dict[str, str] | None) -> int:
    """One commit that rewrites the partitions holding `ids`' rows without them (the whole table when it is not
    partitioned), with plain string columns: a delta-rs DELETE would rewrite them as `string_view`, which the
    pyarrow scans of later builds cannot filter (delta-rs #4579)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as pds
    from deltalake import CommitProperties, write_deltalake

    table = open_table(uri, storage_options=opts)
    arrow_schema = pa.schema(table.schema().to_arrow())  # type: ignore[arg-type]
    plain = pa.schema(
        [pa.field(f.name, pa.string()) if pa.types.is_string_view(f.type) or pa.types.is_large_string(f.type) else f
         for f in arrow_schema]
    )
    dataset = table.to_pyarrow_dataset(schema=plain)
    is_removed = pds.field("tenant_id").isin(pa.array(ids, pa.string()))
    parts = list(table.metadata().partition_columns)
    if len(parts) > 1:  # the dbt models have one partition column at most; anything else: a plain DELETE
        return int(table.delete(f"tenant_id IN ({', '.join(sql_literal(t) for t in ids)})")["num_deleted_rows"])
    if parts:
        hits = dataset.to_table(filter=is_removed, columns=parts)
        if hits.num_rows == 0:
            return 0
        values = pc.unique(hits.column(parts[0]))
        kept = dataset.to_table(filter=pds.field(parts[0]).isin(values) & ~is_removed)
        predicate: str | None = f"{parts[0]} IN ({', '.join(sql_literal(v) for v in values.to_pylist())})"
    else:
        hits = dataset.to_table(filter=is_removed, columns=["tenant_id"])
        if hits.num_rows == 0:
            return 0
        kept = dataset.to_table(filter=~is_removed)
        predicate = None
    write_deltalake(
        table,
        kept,
        mode="overwrite",
        predicate=predicate,
        partition_by=parts or None,
        commit_properties=CommitProperties(
            custom_metadata={"shironzi.operation": "tenants_removed", "shironzi.tenants": str(len(ids)),
                             "shironzi.deleted_rows": str(hits.num_rows)}
        ),
    )
    return hits.num_rows


def rows_removed_since(bronze: str, version: int | None, settings: Settings) -> bool:
    """Did bronze lose rows (a retention run, an untagged delete) since the last build, other than by a subject
    erasure? Incremental models only see new ingestion, so such deletions must flow through a full refresh or
    aggregates would keep the removed rows. An erasure names its tenant (`erased_tenants_since`): that tenant alone
    is rebuilt."""
    return _erased_or_unknown(bronze, version, settings) is None


def erased_tenants_since(bronze: str, version: int | None, settings: Settings) -> frozenset[str]:
    """The tenants a subject erasure deleted bronze rows of since `version` (empty when `rows_removed_since`)."""
    return _erased_or_unknown(bronze, version, settings) or frozenset()


def _erased_or_unknown(bronze: str, version: int | None, settings: Settings) -> frozenset[str] | None:
    """The erased tenants since `version`; None when rows left bronze in a way that names no tenant."""
    if version is None:
        return None
    commits = history(bronze, storage_options=settings.storage_options or None)
    newer = [c for c in commits if int(c.get("version", -1)) > int(version)]
    if newer and min(int(c["version"]) for c in newer) > int(version) + 1:
        return None  # the log was truncated (an erasure drops old commits): assume rows were removed
    erased: set[str] = set()
    for commit in newer:
        operation = str(commit.get("operation", "")).upper()
        removes = operation in {"DELETE", "MERGE", "UPDATE", "CREATE OR REPLACE TABLE"} or (
            operation == "WRITE" and "predicate" in (commit.get("operationParameters") or {})
        )
        if not removes:
            continue
        tenant = (commit.get("userMetadata") or {}).get(ERASED_TENANT_KEY) or commit.get(ERASED_TENANT_KEY)
        if tenant:  # an erasure's delete, or the rewrite of that delete's files (shironzi.lake.delete)
            erased.add(str(tenant))
            continue
        return None
    return frozenset(erased)


def with_erased_tenants(changes: TenantChanges, erased: Iterable[str]) -> TenantChanges:
    """`changes` plus a rebuild of every built tenant in `erased` that stays: its rows are deleted from the
    build's tables (as a removed tenant's) and built again from bronze (as an added tenant's)."""
    again = (set(erased) & changes.built) - set(changes.removed) - set(changes.added)
    if not again:
        return changes
    return replace(changes, added=tuple(sorted({*changes.added, *again})),
                   removed=tuple(sorted({*changes.removed, *again})))
