"""Per-tenant point-in-time restore: one tenant's slice of every shared table (and its dedicated tables) put back
to its state at a moment, from Delta history, with every other tenant's rows untouched.

For each table `restore_tenant` finds the last version committed at or before the moment (time travel),
reads that version's rows of the tenant (files pruned by their `tenant_id` statistics) and, in ONE commit
under the table's exclusive lease, replaces the tenant's current rows with them (a scoped overwrite:
`tenant_id = T` deleted and the old rows appended in the same transaction).

Erasure is never undone. An erasure physically removes the files its delete rewrote, so a version before it
is read by replaying the erasure commits that followed (their rewritten files stand in for the removed
ones), and the subjects the erasure ledger records as erased after the moment are filtered out again before
anything is written. Every table is planned (read and checked) before any table is changed, so a refusal
(an unknown or offboarded tenant, a moment in the future, before the tenant existed, before its last
placement move, or older than the history the log and the files still hold) changes nothing. A run writes a
signed receipt to `_platform/audit/restores` and an audit event (`tenant_restored`, or `restore_drill` for a
dry run) that the evidence pack shows as the latest restore drill.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.compute as pc

from shironzi.audit.erasure import receipts_table_uri
from shironzi.audit.erasure_scan import Matcher, platform_key, subject_row_mask
from shironzi.audit.log import audit
from shironzi.errors import InvalidInputError, InvalidStateError
from shironzi.lake.delta import append, delete, history, open_table, overwrite, read_arrow, table_exists
from shironzi.lake.discovery import LakeTable, discover_tables, list_parquet_files, read_bytes, read_parquet
from shironzi.lake.leases import normalise_uri, table_lease
from shironzi.lake.paths import platform_uri
from shironzi.lake.table_log import _may_match
from shironzi.observability import stage
from shironzi.settings import get_settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.registry import get_registry

PURPOSE = "tenant_restore"
_GONE_STATUSES = ("offboarding", "deleted")


@dataclass
class TablePlan:
    """What a restore reads for one table and would write."""

    table: LakeTable
    restore_version: int | None  # None: the table did not exist yet at the moment (the slice is empty)
    rows: pa.Table | None
    erased_rows_dropped: int = 0
    files_replayed: int = 0  # files an erasure removed, read through the erasure's rewritten files


@dataclass
class RestoreReceipt:
    """What a restore did (or, dry run, would do), signed with the platform key."""

    request_id: str
    tenant_id: str
    restore_to: str
    dry_run: bool
    requested_by: str
    created_at: str
    erasures_reapplied: int
    tables: list[dict[str, Any]] = field(default_factory=list)
    signature: str = ""

    def body(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "signature"}

    def sign(self) -> str:
        body = json.dumps(self.body(), sort_keys=True, separators=(",", ":"), default=str)
        return hmac.new(platform_key(), body.encode(), hashlib.sha256).hexdigest()


def restores_table_uri() -> str:
    return platform_uri(get_settings().resolved_lake_uri, "audit", "restores")


# --- planning: the rows each table held at the moment ---------------------------------------------------


def version_at(uri: str, moment: dt.datetime) -> int | None:
    """The last version committed at or before `moment` (None: the table was created after it); raises when
    the log no longer reaches back that far."""
    commits = history(uri)
    before = [c["version"] for c in commits if c["timestamp"] is not None and c["timestamp"] <= moment]
    if before:
        return max(before)
    oldest = min(c["version"] for c in commits)
    if oldest > 0:
        raise InvalidStateError(
            f"{uri}: {moment.isoformat()} is older than the retained history (the log starts at version {oldest})",
            uri=uri,
        )
    return None


def _log_entries(uri: str, version: int) -> list[dict[str, Any]]:
    text = read_bytes(f"{uri.rstrip('/')}/_delta_log/{version:020d}.json").decode()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _is_erasure(entries: list[dict[str, Any]]) -> bool:
    """Was this commit an erasure's delete (its custom commit metadata, as `erasure` writes it)?"""
    info: dict[str, Any] = next((e["commitInfo"] for e in entries if "commitInfo" in e), {})
    return info.get("shironzi_purpose") == "erasure"


def _may_hold(stats: dict[str, Any] | None, tenant_id: str) -> bool:
    """Could a file with these `tenant_id` statistics hold the tenant's rows (no statistics: assume so)?"""
    if not stats:
        return True
    hi = stats.get("max")
    return _may_match("=", tenant_id, stats.get("min"), None if isinstance(hi, str) and len(hi) >= 32 else hi)


def _add_stats(add: dict[str, Any]) -> dict[str, Any] | None:
    raw = add.get("stats")
    if not raw:
        return None
    stats = json.loads(raw)
    return {"min": stats.get("minValues", {}).get("tenant_id"), "max": stats.get("maxValues", {}).get("tenant_id")}


def _file_infos(snapshot: Any) -> dict[str, dict[str, Any]]:
    """{path: {"partition": values as text, "stats": tenant_id bounds}} of a version's live files."""
    parts = list(snapshot.metadata().partition_columns)
    return {
        unquote(a["path"]): {
            "partition": {p: (None if a.get(f"partition.{p}") is None else str(a[f"partition.{p}"])) for p in parts},
            "stats": {"min": a.get("min.tenant_id"), "max": a.get("max.tenant_id")},
        }
        for a in pa.table(snapshot.get_add_actions(flatten=True)).to_pylist()
    }


def _read_files(uri: str, files: dict[str, dict[str, Any]], tenant_id: str, schema: pa.Schema) -> pa.Table:
    """The tenant's rows of these data files, read directly, partition columns restored from the log."""
    root = uri.rstrip("/")
    pieces = []
    for path, info in files.items():
        if not _may_hold(info["stats"], tenant_id):
            continue
        data = read_parquet(f"{root}/{path}")
        for name, value in info["partition"].items():
            if name in data.column_names:  # some writers keep partition values in the file too
                continue
            column = pa.array([value] * data.num_rows, pa.string()).cast(schema.field(name).type)
            data = data.append_column(name, column)
        data = data.select(schema.names).cast(schema)
        pieces.append(data.filter(pc.equal(data.column("tenant_id"), tenant_id)))
    return pa.concat_tables(pieces) if pieces else schema.empty_table()


def _row_key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, default=str)


def _subtract(rows: pa.Table, minus: pa.Table) -> pa.Table:
    """`rows` less the rows of `minus` (as a multiset: each row of `minus` cancels one equal row)."""
    if not minus.num_rows:
        return rows
    counts = Counter(_row_key(r) for r in minus.to_pylist())
    keep = []
    for row in rows.to_pylist():
        key = _row_key(row)
        keep.append(counts[key] == 0)
        counts[key] -= counts[key] > 0
    return rows.filter(pa.array(keep, pa.bool_()))


def _plain_schema(table: Any) -> pa.Schema:
    schema = pa.schema(table.schema().to_arrow())
    return pa.schema([f.with_type(pa.string()) if pa.types.is_string_view(f.type) else f for f in schema])


def _rows_at(uri: str, version: int, tenant_id: str) -> tuple[pa.Table, int]:
    """The tenant's rows at a version, and how many of its files (removed by a later erasure) were replayed.

    A file an erasure removed is gone; the erasure's rewritten files hold its rows less the erased subject's,
    together with the rows of the other files that erasure rewrote, which still exist (they held no subject)
    and are subtracted. A file that is gone for any other reason was vacuumed: that version is lost."""
    snapshot = open_table(uri, version=version)
    files = _file_infos(snapshot)
    root = normalise_uri(uri).rstrip("/")
    present = {normalise_uri(p)[len(root) + 1:] for p in list_parquet_files(uri)}
    missing = set(files) - present
    if not missing:
        return read_arrow(uri, version=version, tenant_id=tenant_id), 0
    schema = _plain_schema(snapshot)
    known = dict(files)
    stand_ins = []
    replayed = 0
    for later in range(version + 1, open_table(uri).version() + 1):
        if not missing:
            break
        entries = _log_entries(uri, later)
        added = {unquote(e["add"]["path"]): {"partition": dict(e["add"].get("partitionValues") or {}),
                                             "stats": _add_stats(e["add"])} for e in entries if "add" in e}
        known.update(added)
        removed = {unquote(e["remove"]["path"]) for e in entries if "remove" in e}
        if not _is_erasure(entries) or not removed & missing:
            continue
        others = {p: known[p] for p in removed - missing if p in known}
        lost = [p for p in {*others, *added} if p not in present and _may_hold(known[p]["stats"], tenant_id)]
        if lost or len(others) < len(removed - missing):
            raise InvalidStateError(
                f"{uri}: version {version} cannot be rebuilt: the erasure at version {later} rewrote it together "
                "with files that are gone too",
                uri=uri,
            )
        rewritten = _read_files(uri, added, tenant_id, schema)
        stand_ins.append(_subtract(rewritten, _read_files(uri, others, tenant_id, schema)))
        replayed += len(removed & missing)
        missing -= removed
    if missing:
        raise InvalidStateError(
            f"{uri}: version {version} is older than the retained history: {len(missing)} of its data files "
            f"were vacuumed, or destroyed by an erasure after a rewrite (e.g. {sorted(missing)[0]})",
            uri=uri,
        )
    base = _read_files(uri, {p: info for p, info in files.items() if p in present}, tenant_id, schema)
    return pa.concat_tables([base, *stand_ins]), replayed


def _erasure_matcher(tenant_id: str, moment: dt.datetime) -> tuple[Matcher, int]:
    """The subjects of the tenant that the erasure ledger records as erased after the moment."""
    uri = receipts_table_uri()
    if not table_exists(uri):
        return Matcher(tenant_id, "subject"), 0
    rows = read_arrow(uri, columns=["receipt"], filters=[("tenant_id", "=", tenant_id), ("kind", "=", "subject"),
                                                          ("created_at", ">", moment)])
    digests = {d for text in rows.column("receipt").to_pylist() for d in json.loads(text)["subject_digests"]}
    return Matcher(tenant_id, "subject", frozenset(digests)), rows.num_rows


def _plan_table(table: LakeTable, tenant_id: str, moment: dt.datetime, erased: Matcher) -> TablePlan | None:
    current = open_table(table.uri)
    if "tenant_id" not in {f.name for f in current.schema().fields}:
        return None
    version = version_at(table.uri, moment)
    if version is None:
        return TablePlan(table, None, None)
    rows, replayed = _rows_at(table.uri, version, tenant_id)
    dropped = 0
    if erased.digests and rows.num_rows:
        keep = pc.invert(pa.array(subject_row_mask(rows, erased), pa.bool_()))
        dropped = rows.num_rows - pc.sum(keep.cast(pa.int64())).as_py()
        rows = rows.filter(keep)
    return TablePlan(table, version, rows, erased_rows_dropped=dropped, files_replayed=replayed)


# --- writing -----------------------------------------------------------------------------------------------


def _align(rows: pa.Table, schema: pa.Schema) -> pa.Table:
    """Old rows in the table's current schema (columns added since are null)."""
    columns = [
        rows.column(f.name).cast(f.type) if f.name in rows.column_names else pa.nulls(rows.num_rows, f.type)
        for f in schema
    ]
    return pa.table(columns, schema=schema)


def _write_plan(plan: TablePlan, tenant_id: str, request_id: str) -> dict[str, Any]:
    uri = plan.table.uri
    scope = [("tenant_id", "=", tenant_id)]
    metadata = {"shironzi_purpose": PURPOSE, "request_id": request_id}
    with table_lease(uri, mode="exclusive"):
        target = open_table(uri)
        before_version = target.version()
        rows_before = read_arrow(uri, columns=["tenant_id"], tenant_id=tenant_id).num_rows
        plain = _plain_schema(target)
        rows = _align(plan.rows, plain) if plan.rows is not None else plain.empty_table()
        if rows.num_rows:
            result = overwrite(uri, rows, predicate=scope, partition_by=list(target.metadata().partition_columns)
                               or None, metadata=metadata, lease=False)
            after_version = result.version
        elif rows_before:
            delete(uri, scope, metadata=metadata, lease=False)
            after_version = open_table(uri).version()
        else:
            after_version = before_version
    return {**_plan_summary(plan), "before_version": before_version, "after_version": after_version,
            "rows_before": rows_before}


def _plan_summary(plan: TablePlan) -> dict[str, Any]:
    return {
        "table": plan.table.relative,
        "restore_version": plan.restore_version,
        "rows_after": 0 if plan.rows is None else plan.rows.num_rows,
        "erased_rows_dropped": plan.erased_rows_dropped,
        "files_replayed": plan.files_replayed,
    }


def _store_receipt(receipt: RestoreReceipt) -> None:
    schema = pa.schema([("request_id", pa.string()), ("tenant_id", pa.string()),
                        ("created_at", pa.timestamp("us", tz="UTC")), ("dry_run", pa.bool_()),
                        ("receipt", pa.string())])
    row = {"request_id": receipt.request_id, "tenant_id": receipt.tenant_id,
           "created_at": dt.datetime.fromisoformat(receipt.created_at), "dry_run": receipt.dry_run,
           "receipt": json.dumps(asdict(receipt), sort_keys=True, default=str)}
    append(restores_table_uri(), pa.Table.from_pylist([row], schema=schema))


# --- the entry point ----------------------------------------------------------------------------------------


def _check_moment(tenant_id: str, moment: dt.datetime, now: dt.datetime) -> dt.datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    if moment > now:
        raise InvalidInputError(f"cannot restore to {moment.isoformat()}: that is in the future", field="to")
    tenant = get_registry().get_tenant(tenant_id)
    if tenant.status in _GONE_STATUSES:
        raise InvalidStateError(f"tenant {tenant.id!r} is {tenant.status}: there is nothing to restore it for",
                                tenant=tenant.id)
    created = tenant.created_at if tenant.created_at.tzinfo else tenant.created_at.replace(tzinfo=dt.UTC)
    if moment < created:
        raise InvalidInputError(
            f"cannot restore tenant {tenant.id!r} to {moment.isoformat()}: it did not exist before "
            f"{created.isoformat()}",
            field="to",
        )
    moves = [e.occurred_at for e in get_registry().events(tenant.id) if e.type == "placement_changed"]
    later = [m if m.tzinfo else m.replace(tzinfo=dt.UTC) for m in moves]
    if any(m > moment for m in later):
        raise InvalidStateError(
            f"tenant {tenant.id!r} moved to {tenant.placement} tables at {max(later).isoformat()}, after "
            f"{moment.isoformat()}: restore to a moment after the move",
            tenant=tenant.id,
        )
    return moment


def restore_tenant(
    ctx: TenantContext,
    tenant: str,
    *,
    to: dt.datetime,
    dry_run: bool = False,
    request_id: str | None = None,
    now: dt.datetime | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> RestoreReceipt:
    """Put one tenant's rows in every table back to their state at `to`; returns the signed receipt.
    `progress(phase, done, total)` is called after each table is read and after each is written."""
    ctx.require_admin("restoring a tenant")
    tenant_id = get_registry().get_tenant(tenant).id
    moment = _check_moment(tenant_id, to, now or dt.datetime.now(dt.UTC))
    request_id = request_id or f"rst_{uuid.uuid4().hex}"
    action = "restore_drill" if dry_run else "tenant_restored"
    with stage("restore.tenant", tenant=tenant_id, request_id=request_id, dry_run=dry_run) as summary:
        erased, erasures = _erasure_matcher(tenant_id, moment)
        tables = [t for t in discover_tables(include_platform=False) if t.tenant_id in (None, tenant_id)]
        report = progress or (lambda _phase, _done, _total: None)
        plans = []
        for done, table in enumerate(tables, 1):
            if (plan := _plan_table(table, tenant_id, moment, erased)) is not None:
                plans.append(plan)
            report("reading history", done, len(tables))
        results = []
        for done, plan in enumerate(plans, 1):
            results.append(_plan_summary(plan) if dry_run else _write_plan(plan, tenant_id, request_id))
            report("planned" if dry_run else "restoring", done, len(plans))
        summary.rows = sum(r["rows_after"] for r in results)
        summary.extra.update(tables=len(results), erased_rows_dropped=sum(p.erased_rows_dropped for p in plans))
    receipt = RestoreReceipt(
        request_id=request_id,
        tenant_id=tenant_id,
        restore_to=moment.isoformat(),
        dry_run=dry_run,
        requested_by=ctx.actor,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
        erasures_reapplied=erasures,
        tables=results,
    )
    receipt.signature = receipt.sign()
    _store_receipt(receipt)
    audit(
        ctx,
        action,
        tenant_id=tenant_id,
        resource=f"tenant:{tenant_id}",
        request_id=request_id,
        details={"restore_to": receipt.restore_to, "dry_run": dry_run, "erasures_reapplied": erasures,
                 "tables": results},
        durable=True,
    )
    return receipt
