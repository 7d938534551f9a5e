"""Online tenant moves: pooled <-> dedicated while ingestion goes on, losing and repeating no row.

`move_tenant` follows issue 23's six steps, per table of the tenant's layers (bronze, silver, gold,
features, predictions) found under the source root:

1. **copy** the tenant's rows at a recorded version `v0` of each source table to the target table;
2. **flip** the placement in the registry (`placement_changed`, epoch + 1, new lake namespace) while holding
   the source bronze table's EXCLUSIVE lease, and record each source's version `v1` under it. Landers hold the
   shared leases of the bronze tables they commit to and re-read the moved tenants' placement under them
   (`BronzeLander.fence_moved_tenants`), so no flush commits the tenant's rows to the source after the flip,
   and every flush after it routes them to the target;
3. **catch up** the rows the source received between `v0` and `v1`: the data-changing add actions of those
   commits in the Delta log, filtered to the tenant;
4. **delete** the tenant from each source table (one commit per table), once readers' registry watchers have
   seen the flip (two poll periods after it: until then a reader may still resolve the source);
5. the tenant's gold and features rows travel with steps 1-4 (they are per-tenant rows, so the target holds
   its own after the copy); the online store is keyed by tenant, not by placement, so nothing is rebuilt there;
6. write a **receipt** (rows per table before and after, versions) to `_platform/tenant_moves` and an audit
   event.

A second move of the same tenant is refused while one runs (a per-tenant move lock on the lease backend, so it
holds across hosts sharing the registry). Reads find the tenant's tables through the registry throughout:
before the flip the source holds every row, after it the target holds the copied rows and receives the new ones
(the caught-up rows arrive within the same call).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from shironzi.audit.events import AuditEvent
from shironzi.audit.log import get_audit_log
from shironzi.errors import ConflictError, InvalidInputError, InvalidStateError, LeaseBusyError
from shironzi.lake.discovery import discover_tables, read_bytes, read_parquet
from shironzi.lake.groups import LakeGroup
from shironzi.lake.leases import table_lease
from shironzi.lake.paths import platform_uri
from shironzi.lake.reads import open_table, read_arrow, table_exists, table_version
from shironzi.lake.writes import append, delete
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import catalog
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.invalidation import POLL_SECONDS
from shironzi.tenancy.records import Tenant
from shironzi.tenancy.registry import get_registry

if TYPE_CHECKING:
    import pyarrow as pa

MOVED_LAYERS = ("bronze", "silver", "gold", "features", "predictions")
MoveProgress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class TableMove:
    """One table of a move: where the tenant's rows came from and went, with the counts and versions."""

    layer: str
    table: str
    source: str
    target: str
    source_rows_before: int = 0  # the tenant's rows in the source at the flip (copied + caught up)
    target_rows_before: int = 0
    copied: int = 0
    copy_version: int | None = None  # v0: the source version the copy read
    flip_version: int | None = None  # v1: the source version at the flip
    caught_up: int = 0
    deleted: int = 0
    source_rows_after: int = 0
    target_rows_after: int = 0
    source_delete_version: int | None = None


@dataclass
class MoveReceipt:
    """What a move did, table by table; written to `_platform/tenant_moves` and the audit log."""

    move_id: str
    tenant_id: str
    from_placement: str
    to_placement: str
    region: str
    epoch: int
    started_at: datetime
    seconds: float = 0.0
    tables: list[TableMove] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # copy, flip, catch_up, delete

    @property
    def rows(self) -> int:
        return sum(t.source_rows_before for t in self.tables)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["started_at"] = self.started_at.isoformat()
        out["rows"] = self.rows
        return out


def moves_uri(settings: Settings | None = None) -> str:
    """The platform table of move receipts."""

    return platform_uri((settings or get_settings()).resolved_lake_uri, "tenant_moves")


@contextmanager
def move_lock(tenant_id: str, settings: Settings | None = None) -> Iterator[None]:
    """The per-tenant move lock (the lease backend's exclusive lock on `_platform/moves/<tenant>`); a second
    move of the tenant is refused at once, never queued."""

    uri = platform_uri((settings or get_settings()).resolved_lake_uri, "moves", tenant_id)
    try:
        lock = table_lease(uri, mode="exclusive", timeout=0)
        lock.__enter__()
    except LeaseBusyError:
        raise ConflictError(f"tenant {tenant_id!r} is already being moved: wait for that move to finish",
                            tenant=tenant_id) from None
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def check_move(tenant: Tenant, placement: str, *, region: str | None, settings: Settings) -> str:
    """The bad inputs of a move, refused before anything changes; returns the checked target placement."""
    if region is not None:
        if region not in settings.regions:
            raise InvalidInputError(f"unknown region {region!r}; expected one of {', '.join(settings.regions)}",
                                    field="region")
        raise InvalidInputError("region moves need multi-region (issue 24)", field="region")
    placement = catalog.check_placement(placement)
    if tenant.status != "active":
        raise InvalidStateError(f"tenant {tenant.id!r} is {tenant.status}: only active tenants move",
                                tenant=tenant.id, status=tenant.status)
    if tenant.placement == placement:
        raise InvalidStateError(f"tenant {tenant.id!r} is already {placement}", tenant=tenant.id,
                                placement=placement)
    if placement == "pooled" and requires_dedicated(tenant.plan, tenant.industry):
        raise InvalidStateError(
            f"tenant {tenant.id!r} ({tenant.plan} {tenant.industry}) requires dedicated placement: it cannot be "
            "demoted to the pool", tenant=tenant.id)
    return placement


def requires_dedicated(plan: str, industry: str) -> bool:
    """Whether the tenant's plan requires its own tables (enterprise tenants of regulated industries)."""
    return catalog.default_placement(plan=plan, industry=industry) == "dedicated"


def move_tenant(
    ctx: TenantContext,
    tenant: str,
    *,
    placement: str,
    region: str | None = None,
    settings: Settings | None = None,
    progress: MoveProgress | None = None,
) -> MoveReceipt:
    """Move a tenant's tables to `placement` online (see the module docstring); returns its receipt."""

    ctx.require_admin("moving a tenant")
    settings = settings or get_settings()
    registry = get_registry(settings)
    found = registry.get_tenant(tenant)
    placement = check_move(found, placement, region=region, settings=settings)
    started = time.perf_counter()
    with move_lock(found.id, settings), stage("tenant_move", tenant=found.id, to=placement) as summary:
        found = registry.get_tenant(found.id)  # re-read under the lock: a move may have finished meanwhile
        placement = check_move(found, placement, region=region, settings=settings)
        epoch = registry.placement_epoch(found.id)
        source = LakeGroup.of_tenant(found.id, region=found.region, placement=found.placement)
        target = LakeGroup.of_tenant(found.id, region=found.region, placement=placement)
        receipt = MoveReceipt(uuid.uuid4().hex, found.id, found.placement, placement, found.region, epoch + 1,
                              datetime.now(UTC))
        receipt.tables = _tables_to_move(source, target, settings)
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            receipt.stage_seconds[name] = round(time.perf_counter() - clock, 3)
            clock = time.perf_counter()

        _copy(receipt, settings, progress)
        lap("copy")
        _flip(ctx, registry, receipt, source, settings, epoch)
        lap("flip")
        flipped = time.monotonic()
        _catch_up(receipt, settings, progress)
        lap("catch_up")
        # Readers (API workers, dashboards) re-resolve the tenant's tables when their registry watcher sees the
        # flip (it polls the event log every POLL_SECONDS): the source keeps the rows until they have.
        time.sleep(max(0.0, flipped + 2 * POLL_SECONDS - time.monotonic()))
        lap("readers_grace")
        _delete_from_source(receipt, settings, progress)
        lap("delete")
        receipt.seconds = time.perf_counter() - started
        _write_receipt(ctx, receipt, settings)
        summary.rows = receipt.rows
        summary.extra.update(tables=len(receipt.tables), epoch=receipt.epoch)
    return receipt


def _tables_to_move(source: LakeGroup, target: LakeGroup, settings: Settings) -> list[TableMove]:

    lake = settings.resolved_lake_uri
    out = []
    for layer in MOVED_LAYERS:
        root = source.table_uri(lake, layer=layer, table="x").rsplit("/", 1)[0]  # type: ignore[arg-type]
        for found in discover_tables(root, include_platform=False):
            name = found.relative
            out.append(TableMove(layer, name, found.uri, target.table_uri(lake, layer=layer, table=name)))  # type: ignore[arg-type]
    return out


def _tenant_rows(uri: str, tenant_id: str, settings: Settings, *, version: int | None = None) -> pa.Table:

    if not table_exists(uri, storage_options=settings.storage_options):
        import pyarrow as pa

        return pa.table({"tenant_id": pa.array([], pa.string())})
    return read_arrow(uri, tenant_id=tenant_id, version=version, storage_options=settings.storage_options)


def _count(uri: str, tenant_id: str, settings: Settings) -> int:

    if not table_exists(uri, storage_options=settings.storage_options):
        return 0
    rows = read_arrow(uri, columns=["tenant_id"], tenant_id=tenant_id, storage_options=settings.storage_options)
    return rows.num_rows


def _partition_columns(uri: str, settings: Settings) -> list[str]:

    return list(open_table(uri, storage_options=settings.storage_options).metadata().partition_columns)


def _append(uri: str, rows: pa.Table, partition_by: list[str], receipt: MoveReceipt, settings: Settings,
            step: str) -> None:

    if rows.num_rows:
        append(uri, rows, partition_by=partition_by or None, storage_options=settings.storage_options,
               metadata={"shironzi.stage": f"tenant_move.{step}", "shironzi.move_id": receipt.move_id,
                         "shironzi.tenant_id": receipt.tenant_id})


def _copy(receipt: MoveReceipt, settings: Settings, progress: MoveProgress | None) -> None:
    """Step 1: each table's tenant rows at a recorded source version, appended to the target."""

    with stage("tenant_move.copy", tenant=receipt.tenant_id) as summary:
        for done, table in enumerate(receipt.tables, start=1):
            table.target_rows_before = _count(table.target, receipt.tenant_id, settings)
            if table.target_rows_before:
                raise InvalidStateError(
                    f"target table {table.target} already holds {table.target_rows_before} rows of tenant "
                    f"{receipt.tenant_id!r}: refusing to move onto them", tenant=receipt.tenant_id)
            table.copy_version = table_version(table.source, storage_options=settings.storage_options)
            rows = _tenant_rows(table.source, receipt.tenant_id, settings, version=table.copy_version)
            _append(table.target, rows, _partition_columns(table.source, settings), receipt, settings, "copy")
            table.copied = rows.num_rows
            summary.rows = (summary.rows or 0) + rows.num_rows
            if progress:
                progress("copy", done, len(receipt.tables))


def _flip(ctx: TenantContext, registry: Any, receipt: MoveReceipt, source: LakeGroup, settings: Settings,
          epoch: int) -> None:
    """Step 2: flip the placement under the source bronze table's exclusive lease; record each v1 under it."""

    bronze = source.uri(settings, layer="bronze", table="events")
    with stage("tenant_move.flip", tenant=receipt.tenant_id) as summary, table_lease(bronze, mode="exclusive"):
        for table in receipt.tables:
            table.flip_version = table_version(table.source, storage_options=settings.storage_options)
        registry.flip_placement(ctx, receipt.tenant_id, placement=receipt.to_placement, expected_epoch=epoch,
                                move_id=receipt.move_id)
        summary.extra.update(epoch=epoch + 1)


def _added_rows(table: TableMove, tenant_id: str, settings: Settings) -> pa.Table | None:
    """The tenant's rows in the data-changing add actions of commits v0+1..v1 of the source (None: none)."""
    import pyarrow as pa
    import pyarrow.compute as pc


    assert table.copy_version is not None and table.flip_version is not None
    schema = _tenant_rows(table.source, tenant_id, settings, version=table.flip_version).schema
    parts = []
    for version in range(table.copy_version + 1, table.flip_version + 1):
        for line in read_bytes(f"{table.source}/_delta_log/{version:020d}.json").decode().splitlines():
            action = json.loads(line) if line.strip() else {}
            add = action.get("add")
            if not add or not add.get("dataChange", True):  # compactions re-add rows the table already had
                continue
            path = unquote(add["path"])
            data = read_parquet(path if "://" in path or path.startswith("/") else f"{table.source}/{path}")
            data = data.filter(pc.equal(data.column("tenant_id"), tenant_id))
            if not data.num_rows:
                continue
            for name, value in (add.get("partitionValues") or {}).items():
                if name not in data.column_names:
                    data = data.append_column(name, pa.array([value] * data.num_rows, pa.string()))
            parts.append(data.select(schema.names).cast(schema))
    return pa.concat_tables(parts) if parts else None


def _catch_up(receipt: MoveReceipt, settings: Settings, progress: MoveProgress | None) -> None:
    """Step 3: the rows the source received between the copy and the flip, from its Delta log."""
    with stage("tenant_move.catch_up", tenant=receipt.tenant_id) as summary:
        for done, table in enumerate(receipt.tables, start=1):
            if table.flip_version is not None and table.copy_version is not None \
                    and table.flip_version > table.copy_version:
                rows = _added_rows(table, receipt.tenant_id, settings)
                if rows is not None:
                    _append(table.target, rows, _partition_columns(table.source, settings), receipt, settings,
                            "catch_up")
                    table.caught_up = rows.num_rows
            table.source_rows_before = table.copied + table.caught_up
            summary.rows = (summary.rows or 0) + table.caught_up
            if progress:
                progress("catch up", done, len(receipt.tables))


def _delete_from_source(receipt: MoveReceipt, settings: Settings, progress: MoveProgress | None) -> None:
    """Step 4: one delete commit per source table; then the counts after."""

    with stage("tenant_move.delete", tenant=receipt.tenant_id) as summary:
        for done, table in enumerate(receipt.tables, start=1):
            if table.source_rows_before:
                table.deleted = delete(table.source, [("tenant_id", "=", receipt.tenant_id)],
                                       metadata={"shironzi.stage": "tenant_move.delete",
                                                 "shironzi.move_id": receipt.move_id},
                                       storage_options=settings.storage_options)
                table.source_delete_version = table_version(table.source, storage_options=settings.storage_options)
            table.source_rows_after = _count(table.source, receipt.tenant_id, settings)
            table.target_rows_after = _count(table.target, receipt.tenant_id, settings)
            summary.rows = (summary.rows or 0) + table.deleted
            if progress:
                progress("delete", done, len(receipt.tables))


def _write_receipt(ctx: TenantContext, receipt: MoveReceipt, settings: Settings) -> None:
    """Step 6: the receipt row and an audit event."""
    import pyarrow as pa


    row = {
        "move_id": receipt.move_id, "tenant_id": receipt.tenant_id, "from_placement": receipt.from_placement,
        "to_placement": receipt.to_placement, "region": receipt.region, "epoch": receipt.epoch,
        "started_at": receipt.started_at, "seconds": receipt.seconds, "rows": receipt.rows,
        "tables": json.dumps([asdict(t) for t in receipt.tables]),
        "stage_seconds": json.dumps(receipt.stage_seconds),
    }
    append(moves_uri(settings), pa.Table.from_pylist([row]), storage_options=settings.storage_options,
           metadata={"shironzi.stage": "tenant_move.receipt", "shironzi.move_id": receipt.move_id})
    get_audit_log().record(AuditEvent(
        action="tenant_moved", actor=ctx.actor, tenant_id=receipt.tenant_id, resource=f"tenant:{receipt.tenant_id}",
        purpose=ctx.purpose, actor_kind="user", is_admin=ctx.is_admin, request_id=receipt.move_id,
        details={"from": receipt.from_placement, "to": receipt.to_placement, "epoch": receipt.epoch,
                 "rows": receipt.rows, "seconds": round(receipt.seconds, 3),
                 "tables": {f"{t.layer}/{t.table}": {"before": t.source_rows_before, "after": t.target_rows_after}
                            for t in receipt.tables}},
    ), durable=True)
