"""Subject erasure (GDPR Art. 17, HIPAA-style patient requests) and tenant offboarding erasure.

`erase_subject` deletes a data subject's rows from every Delta table in the lake that carries
`tenant_id` + `customer_id` (bronze, silver, gold, features, predictions, the PII vault) and the
quarantine rows whose raw payload names the subject as a JSON value; it matches the raw id and its
pseudonym (HMAC under the tenant key) exactly. Registered erasure targets (the online store) are erased
too. The delete reads only the files whose statistics can hold the tenant and subject (delta-rs prunes
by `tenant_id`/`customer_id` min/max). It then physically removes exactly the files that delete commit
removed (its `remove` actions in the `_delta_log`): the files that held the subject's rows. Nothing else
is vacuumed, so other tenants' older versions stay readable by time travel (their files are untouched).
The verification scans every physical Parquet file that may hold the tenant, current or not (files whose
log statistics exclude the tenant are skipped and counted), directly rather than via the log, plus the
`_delta_log` statistics and each target, and the receipt signed with an HMAC under
`settings.platform_key` goes to `_platform/audit/erasures`.

Each table is modified while this process holds the table's EXCLUSIVE lease
(`shironzi.lake.leases.table_lease`), so no writer commits in between: the delete commit is the version
after `before_version`. Readers pinned to an older version lose the removed files, by design: those
files held the subject's data. If an older commit's statistics still name the subject, the log before
a fresh checkpoint is dropped (that table's time travel ends there).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import hmac
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shironzi.audit.erasure_artifacts import erase_artifacts, queue_retraining, scan_artifacts
from shironzi.audit.erasure_scan import (
    RAW_PAYLOAD,
    ErasureKind,
    Matcher,
    candidate_files,
    map_in_threads,
    platform_key,
    scan_files,
    scan_log,
    subject_digest,
    text_values,
)
from shironzi.audit.log import audit, read_audit_events
from shironzi.audit.table_identity import identity_matches
from shironzi.errors import (
    IntegrityCheckError,
    InvalidInputError,
    InvalidStateError,
    NotFoundError,
    ShironziError,
    TenantNotFoundError,
)
from shironzi.lake.delta import append, delete, open_table, read_arrow, sql_literal, table_exists, table_version
from shironzi.lake.discovery import (
    LakeTable,
    delete_files,
    delete_tree,
    discover_tables,
    list_log_files,
    read_bytes,
)
from shironzi.lake.leases import normalise_uri, table_lease
from shironzi.lake.maintenance import checkpoint
from shironzi.lake.paths import platform_uri
from shironzi.observability import stage
from shironzi.privacy.phi import subject_phi
from shironzi.privacy.tokens import subject_pseudonym
from shironzi.settings import get_settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.keystore import get_keystore
from shironzi.tenancy.registry import get_registry
from shironzi.webhooks.notify import notify

logger = logging.getLogger("shironzi.audit")
ERASED_TENANT_KEY = "shironzi_erased_tenant"  # in each erasure delete's commit: the dbt build rebuilds that tenant

# --- erasure targets outside the lake ----------------------------------------------------------------


class ErasureTarget(Protocol):
    """A store outside the lake that holds subject data (the online feature store, caches)."""

    name: str

    def erase(self, tenant_id: str, subject_ids: Sequence[str] | None) -> int:
        """Delete the subject's rows (every tenant row when `subject_ids` is None); returns rows deleted."""
        ...

    def scan(self, tenant_id: str, matches: Callable[[str], bool], *, mentions: Sequence[str] | None = None) -> int:
        """How many remaining rows of the tenant hold a value for which `matches` is true. `mentions`, when given,
        are texts every matching value holds verbatim: the target may skip rows holding none of them unread."""
        ...


_targets: dict[str, ErasureTarget] = {}


def register_erasure_target(target: ErasureTarget) -> None:
    """Add a store (e.g. the online store) that every erasure also erases and verifies."""
    _targets[target.name] = target


def unregister_erasure_target(name: str) -> None:
    _targets.pop(name, None)


def load_plugin_targets() -> None:
    """Register the targets other packages declare under the `shironzi.erasure_targets` entry point
    (e.g. the online feature store), once; a plugin whose extra is not installed is skipped."""
    from importlib.metadata import entry_points

    for ep in entry_points(group="shironzi.erasure_targets"):
        if ep.name in _targets:
            continue
        try:
            factory = ep.load()
        except ImportError:
            continue
        register_erasure_target(factory())


@dataclass
class Verification:
    """The result of scanning every remaining file, log and target for the subject."""

    ok: bool
    files_scanned: int = 0
    files_skipped: int = 0  # files whose log statistics exclude the tenant
    rows_scanned: int = 0
    matching_rows: dict[str, int] = field(default_factory=dict)
    log_mentions: dict[str, list[str]] = field(default_factory=dict)
    target_matches: dict[str, int] = field(default_factory=dict)
    artifact_matches: dict[str, int] = field(default_factory=dict)


def verify_erased(matcher: Matcher, tables: Sequence[LakeTable] | None = None) -> Verification:
    """Scan every data file that may hold the tenant's rows (every physical file, current or not, unless
    its log statistics exclude the tenant; read directly), the log statistics, every target and every
    MLflow artifact that holds rows."""
    load_plugin_targets()
    result = Verification(ok=True)
    for table in tables if tables is not None else discover_tables():
        if table.tenant_id is not None and table.tenant_id != matcher.tenant_id:
            continue  # another dedicated tenant's root cannot hold this tenant's rows
        hits = 0
        candidates, total = candidate_files(table.uri, matcher.tenant_id)
        result.files_skipped += total - len(candidates)
        for rows, matched in scan_files(candidates, matcher):
            result.files_scanned += 1
            result.rows_scanned += rows
            hits += matched
        if hits:
            result.matching_rows[table.relative] = hits
        mentions = scan_log(table.uri, matcher)
        if mentions:
            result.log_mentions[table.relative] = mentions
    for name, target in _targets.items():
        found = target.scan(
            matcher.tenant_id, (lambda _v: True) if matcher.kind == "tenant" else matcher.value_matches,
            mentions=matcher.verbatim_values(),
        )
        if found:
            result.target_matches[name] = found
    result.artifact_matches = scan_artifacts(matcher)
    result.ok = not (result.matching_rows or result.log_mentions or result.target_matches or result.artifact_matches)
    return result


# --- the receipt ---------------------------------------------------------------------------------------


@dataclass
class Receipt:
    """What an erasure did and proved, signed with the platform key."""

    request_id: str
    kind: ErasureKind
    tenant_id: str
    subject_digests: list[str]
    requested_by: str
    created_at: str
    tables: list[dict[str, Any]]
    targets: dict[str, int]
    training_runs: list[dict[str, Any]]
    models_flagged: list[dict[str, Any]]
    verification: dict[str, Any]
    signature: str = ""
    artifacts: list[dict[str, Any]] = field(default_factory=list)  # MLflow artifacts and what was done
    retraining_queued: list[dict[str, Any]] = field(default_factory=list)

    def body(self) -> dict[str, Any]:
        # Fields added later are signed only when set, so receipts written before them still verify.
        late = ("artifacts", "retraining_queued")
        return {k: v for k, v in asdict(self).items() if k != "signature" and not (k in late and not v)}

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict[str, Any]) -> Receipt:
        data = json.loads(text) if isinstance(text, str) else dict(text)
        try:
            return cls(**data)
        except TypeError as exc:
            raise InvalidInputError(f"not an erasure receipt: {exc}") from exc


def sign_receipt(receipt: Receipt) -> str:
    body = json.dumps(receipt.body(), sort_keys=True, separators=(",", ":"), default=str)
    return hmac.new(platform_key(), body.encode(), hashlib.sha256).hexdigest()


def receipts_table_uri() -> str:
    return platform_uri(get_settings().resolved_lake_uri, "audit", "erasures")


def _store_receipt(receipt: Receipt) -> None:
    import pyarrow as pa

    row = {
        "request_id": receipt.request_id,
        "kind": receipt.kind,
        "tenant_id": receipt.tenant_id,
        "created_at": dt.datetime.fromisoformat(receipt.created_at),
        "ok": bool(receipt.verification.get("ok")),
        "receipt": receipt.to_json(),
    }
    schema = pa.schema(
        [
            ("request_id", pa.string()),
            ("kind", pa.string()),
            ("tenant_id", pa.string()),
            ("created_at", pa.timestamp("us", tz="UTC")),
            ("ok", pa.bool_()),
            ("receipt", pa.string()),
        ]
    )
    append(receipts_table_uri(), pa.Table.from_pylist([row], schema=schema))


def load_receipt(reference: str) -> Receipt:
    """A receipt from a JSON file path or by request id from the receipts table."""
    path = Path(reference)
    if path.suffix == ".json" or path.exists():
        if not path.exists():
            raise NotFoundError(f"receipt file {reference} not found")
        return Receipt.from_json(path.read_text())
    return receipt_by_id(reference)


def receipt_by_id(request_id: str) -> Receipt:
    """A receipt by request id from the receipts table, never from a file (what the API offers)."""
    uri = receipts_table_uri()
    if table_exists(uri):
        rows = read_arrow(uri, columns=["receipt"], filters=[("request_id", "=", request_id)])
        if rows.num_rows:
            return Receipt.from_json(rows.column("receipt")[0].as_py())
    raise NotFoundError(f"no erasure receipt with request id {request_id!r}")


@dataclass(frozen=True)
class ReceiptCheck:
    """Re-checking a receipt: is the signature genuine, and does the data still verify as erased?"""

    request_id: str
    signature_ok: bool
    verification: Verification

    @property
    def ok(self) -> bool:
        return self.signature_ok and self.verification.ok

    def as_dict(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "ok": self.ok,
            "signature_ok": self.signature_ok,
            "verification": asdict(self.verification),
        }


def verify_receipt(receipt: Receipt | str) -> ReceiptCheck:
    """Check a receipt's HMAC signature and re-run its verification scan against the lake as it is now."""
    if isinstance(receipt, str):
        receipt = load_receipt(receipt)
    signature_ok = hmac.compare_digest(sign_receipt(receipt), receipt.signature or "")
    matcher = Matcher(receipt.tenant_id, receipt.kind, frozenset(receipt.subject_digests))
    return ReceiptCheck(receipt.request_id, signature_ok, verify_erased(matcher))


# --- erasing ---------------------------------------------------------------------------------------------


def _columns(uri: str) -> list[str]:
    return [f.name for f in open_table(uri).schema().fields]


def _quarantine_payloads(uri: str, tenant_id: str, matcher: Matcher, raw_ids: set[str]) -> list[str]:
    """Raw payloads of quarantined rows that belong to (or claim) the tenant and name the subject exactly."""
    import pyarrow.compute as pc

    rows = read_arrow(uri, columns=["tenant_id", RAW_PAYLOAD])
    tenant = rows.column("tenant_id")
    rows = rows.filter(pc.fill_null(pc.or_kleene(pc.equal(tenant, tenant_id), pc.is_null(tenant)), False))
    payloads = []
    for row in rows.to_pylist():
        payload = row[RAW_PAYLOAD]
        values = text_values(payload) if payload is not None else set()
        if row["tenant_id"] is None and tenant_id not in values:
            continue
        if matcher.kind == "tenant" or values & raw_ids:
            payloads.append(payload)
    return sorted(set(payloads))


def _predicate(columns: list[str], tenant_id: str, raw_ids: Sequence[str] | None) -> str | None:
    if raw_ids is None:
        return f"tenant_id = {sql_literal(tenant_id)}"
    if "customer_id" not in columns:
        return None
    ids = ", ".join(sql_literal(v) for v in raw_ids)
    return f"tenant_id = {sql_literal(tenant_id)} AND customer_id IN ({ids})"


def _drop_history_holding(uri: str, matcher: Matcher) -> list[str]:
    """If old commits' statistics still name the subject: checkpoint now and drop the older log files."""

    if not scan_log(uri, matcher):
        return []

    version = checkpoint(uri)
    removed = []
    for path in list_log_files(uri, suffixes=(".json", ".parquet", ".crc")):
        name = path.rsplit("/", 1)[-1]
        head = name.split(".", 1)[0]
        if head.isdigit() and int(head) < version:
            removed.append(path)
    delete_files(removed)
    return [p.rsplit("/", 1)[-1] for p in removed]


def _erase_table(
    table: LakeTable, tenant_id: str, matcher: Matcher, raw_ids: Sequence[str] | None
) -> dict[str, Any] | None:

    columns = _columns(table.uri)
    if "tenant_id" not in columns:
        return None
    if RAW_PAYLOAD in columns:
        payloads = _quarantine_payloads(table.uri, tenant_id, matcher, set(raw_ids or ()))
        where = (
            f"(tenant_id = {sql_literal(tenant_id)} OR tenant_id IS NULL) AND {RAW_PAYLOAD} IN "
            f"({', '.join(sql_literal(p) for p in payloads)})"
            if payloads
            else None
        )
    else:
        where = _predicate(columns, tenant_id, raw_ids)
    if where is None:
        return None
    with table_lease(table.uri, mode="exclusive"):
        before = table_version(table.uri)
        deleted = delete(table.uri, where, metadata=erasure_commit_metadata(tenant_id))
        removed_files = _remove_files_removed_by(table.uri, before + 1, holding=matcher) if deleted else []
        removed_files += _remove_stale_files_holding(table.uri, matcher)
        dropped_log = _drop_history_holding(table.uri, matcher) if deleted else []
        after = table_version(table.uri)
    if not deleted:
        return None
    return {
        "table": table.relative,
        "uri": normalise_uri(table.uri),
        "before_version": before,
        "after_version": after,
        "rows_deleted": deleted,
        "files_removed": len(removed_files),
        "log_files_dropped": len(dropped_log),
    }


ERASE_THREADS = 3  # tables erased at once, each under its own exclusive lease (delta-rs and Arrow release the GIL)


def _erase_tables(
    tables: Sequence[LakeTable], tenant_id: str, matcher: Matcher, raw_ids: Sequence[str] | None
) -> list[dict[str, Any]]:
    """What `_erase_table` did to each table that held the subject, in the tables' order, ERASE_THREADS at once."""
    done = map_in_threads(lambda table: _erase_table(table, tenant_id, matcher, raw_ids), tables,
                          threads=ERASE_THREADS, name="shironzi-erase")
    return [r for r in done if r is not None]


def erasure_commit_metadata(tenant_id: str) -> dict[str, str]:
    """What an erasure's delete commit records: its purpose and its tenant, so a dbt build rebuilds that tenant
    alone instead of the whole region (transformations/dbt_state.py)."""
    return {"shironzi_purpose": "erasure", ERASED_TENANT_KEY: tenant_id}


def _remove_files_removed_by(uri: str, version: int, *, holding: Matcher | None = None) -> list[str]:
    """Physically delete the data files one commit removed (with `holding`, only those that held the subject's
    rows: delta-rs may also rewrite candidate files without a match), and nothing else, so other tenants' older
    versions stay readable (and `shironzi.audit.restore` can still read the rest)."""
    from urllib.parse import unquote

    root = uri.rstrip("/")
    entry = read_bytes(f"{root}/_delta_log/{version:020d}.json").decode()
    entries = [json.loads(line) for line in entry.splitlines() if line.strip()]
    removed = [unquote(e["remove"]["path"]) for e in entries if e.get("remove")]
    if holding is not None:
        scanned = scan_files([f"{root}/{path}" for path in removed], holding)
        removed = [path for path, (_, matched) in zip(removed, scanned, strict=True) if matched]
    _delete_if_present([f"{root}/{path}" for path in removed])
    return removed


def _remove_stale_files_holding(uri: str, matcher: Matcher) -> list[str]:
    """Physically delete files no longer in the current version (left by earlier rewrites, awaiting the
    regular vacuum) that still hold the subject; only the tenant's candidate files are read."""
    current = {f.removeprefix("file://") for f in open_table(uri).file_uris()}
    candidates, _ = candidate_files(uri, matcher.tenant_id)
    old = [f for f in candidates if f.removeprefix("file://") not in current]
    stale = [f for f, (_, matched) in zip(old, scan_files(old, matcher), strict=True) if matched]
    _delete_if_present(stale)
    return stale


def _delete_if_present(uris: list[str]) -> None:
    for uri in uris:
        with contextlib.suppress(FileNotFoundError):
            delete_files([uri])


def _training_runs(touched: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Recorded training runs that read a touched table at a version that still held the subject (inputs
    are lake-relative identities, or absolute paths in older events: see `table_identity`)."""

    runs = []
    events = read_audit_events(filters=[("action", "=", "training_run")])
    for event in events.to_pylist():
        details = json.loads(event["details"])
        used = [
            i
            for i in details.get("inputs", [])
            for t in touched
            if identity_matches(i.get("table", ""), t["uri"])
            and (i.get("version") is None or i["version"] <= t["before_version"])
        ]
        if used:
            runs.append(
                {
                    "run_id": details.get("run_id"),
                    "model": details.get("model"),
                    "model_version": details.get("model_version"),
                    "inputs": used,
                }
            )
    return runs


def _erase(ctx: TenantContext, tenant_id: str, subject_id: str | None, *, request_id: str | None) -> Receipt:
    kind: ErasureKind = "tenant" if subject_id is None else "subject"
    request_id = request_id or f"era_{uuid.uuid4().hex}"
    raw_ids: list[str] | None = None
    digests: list[str] = []
    if subject_id is not None:
        token = subject_pseudonym(tenant_id, subject_id)
        protected = subject_phi(tenant_id, subject_id)  # a healthcare patient's id is PHI-protected in every table
        raw_ids = [subject_id] + [v for v in (token, protected) if v]
        digests = [subject_digest(tenant_id, v) for v in raw_ids]
    matcher = Matcher(tenant_id, kind, frozenset(digests), values=frozenset(raw_ids or ()))
    resource = f"tenant:{tenant_id}" + ("" if subject_id is None else f"/subject:{digests[0][:16]}")
    audit(
        ctx,
        f"{kind}_erasure_started",
        tenant_id=tenant_id,
        resource=resource,
        request_id=request_id,
        durable=True,
    )
    with stage(f"gdpr.erase_{kind}", tenant=tenant_id, request_id=request_id) as summary:
        load_plugin_targets()
        tables = [t for t in discover_tables() if t.tenant_id in (None, tenant_id)]
        touched = _erase_tables(tables, tenant_id, matcher, raw_ids)
        targets = {name: target.erase(tenant_id, raw_ids) for name, target in _targets.items()}
        if kind == "tenant":
            _remove_dedicated_roots(tables, tenant_id)

            get_keystore().destroy_key(tenant_id)
        runs = _training_runs(touched)
        flagged = []
        for run in runs:
            if run["model"]:
                model = {
                    "model": run["model"],
                    "model_version": run["model_version"],
                    "run_id": run["run_id"],
                }
                flagged.append(model)
                audit(
                    ctx,
                    "model_flagged_for_retraining",
                    tenant_id=tenant_id,
                    resource=f"model:{run['model']}",
                    request_id=request_id,
                    details={**model, "reason": f"{kind} erasure"},
                    durable=True,
                )
        artifacts = erase_artifacts(
            matcher, trained_on=[r["run_id"] for r in runs if r["run_id"]], request_id=request_id
        )
        queued = queue_retraining(flagged, request_id=request_id)
        verification = verify_erased(matcher)
        summary.rows = sum(t["rows_deleted"] for t in touched)
        summary.extra.update(tables=len(touched), verified=verification.ok)
    receipt = Receipt(
        request_id=request_id,
        kind=kind,
        tenant_id=tenant_id,
        subject_digests=digests,
        requested_by=ctx.actor,
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="microseconds"),
        tables=touched,
        targets=targets,
        training_runs=runs,
        models_flagged=flagged,
        verification=asdict(verification),
        artifacts=artifacts,
        retraining_queued=queued,
    )
    receipt.signature = sign_receipt(receipt)
    _store_receipt(receipt)
    audit(
        ctx,
        f"{kind}_erased",
        tenant_id=tenant_id,
        resource=resource,
        request_id=request_id,
        outcome="success" if verification.ok else "failure",
        details={"tables": len(touched), "rows_deleted": summary.rows, "verified": verification.ok},
        durable=True,
    )
    if not verification.ok:
        raise IntegrityCheckError(
            f"erasure {request_id} finished but verification still found the {kind}: "
            f"rows={verification.matching_rows} log={verification.log_mentions} "
            f"targets={verification.target_matches} artifacts={verification.artifact_matches}",
            request_id=request_id,
        )
    _notify_erased(tenant_id, kind, request_id, rows_deleted=summary.rows, tables=len(touched))
    return receipt


def _notify_erased(tenant_id: str, kind: str, request_id: str, *, rows_deleted: int, tables: int) -> None:
    """The tenant's `erasure_completed` webhook (when it subscribes); the erasure stands if delivery fails,
    which the delivery log retries."""
    try:
        notify(tenant_id, "erasure_completed", {"request_id": request_id, "kind": kind,
                                                "rows_deleted": rows_deleted, "tables": tables},
               idempotency_key=f"erasure:{request_id}")
    except ShironziError as exc:
        logger.warning("erasure %s: the erasure_completed notification failed: %s", request_id, exc)


def _remove_dedicated_roots(tables: Sequence[LakeTable], tenant_id: str) -> None:
    """A dedicated tenant's own table roots are deleted outright once their rows are erased."""
    roots = {
        t.uri.split(f"/tenants/{tenant_id}/")[0] + f"/tenants/{tenant_id}"
        for t in tables
        if t.tenant_id == tenant_id
    }
    for root in roots:
        delete_tree(root)


def erase_subject(
    ctx: TenantContext, tenant_id: str, subject_id: str, *, request_id: str | None = None
) -> Receipt:
    """Erase one data subject of a tenant everywhere, verify it, and return the signed receipt."""
    ctx.require_tenant(tenant_id)
    if not isinstance(subject_id, str) or not subject_id.strip():
        raise InvalidInputError("a subject id is required", field="subject_id")
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise InvalidInputError("a tenant id is required", field="tenant_id")
    return _erase(ctx, tenant_id, subject_id, request_id=request_id)


def erase_tenant(
    ctx: TenantContext, tenant_id: str, *, request_id: str | None = None, require_offboarding: bool = True
) -> Receipt:
    """Offboarding: erase every row of a tenant, delete its dedicated roots, destroy its key; signed receipt.

    The tenant must be offboarding in the registry (unless `require_offboarding=False`, e.g. for data of
    a tenant the registry no longer knows); afterwards call `Registry.complete_offboarding`.
    """
    ctx.require_admin("erasing a tenant")
    if require_offboarding:
        try:
            status = get_registry().get_tenant(tenant_id).status
        except TenantNotFoundError:
            status = None
        if status is None or status not in ("offboarding", "deleted"):
            raise InvalidStateError(
                f"tenant {tenant_id!r} is {status or 'unknown'}: start its offboarding before erasing it",
                tenant=tenant_id,
            )
    return _erase(ctx, tenant_id, None, request_id=request_id)
