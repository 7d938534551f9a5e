"""The SOC 2 evidence pack: what an auditor asks for over a period, gathered from the registry, the audit log,
the erasure receipts and the lake's own logs, written as JSON files plus one self-contained HTML report.

Sections (CC6 logical access, CC8 change management, plus the privacy controls):
- `access_review`: every API key with its scopes, tenant, creator and last use (from the audit log);
  keys unused for `STALE_AFTER_DAYS` and older than that are flagged;
- `admin_actions`: every admin-context audit event of the period;
- `changes`: model promotions and rollbacks, module toggles, plan changes (audit events of the period), and
  the versions deployed now: industry contracts, DAG files and dbt models (content hashes);
- `audit_chain`: `shironzi.audit.verify.verify_chains` as it reports;
- `erasures`: the receipts of the period, each with its signature re-checked;
- `retention_runs`, `backup_drills` (the latest drill, or "none recorded");
- `encryption`: how every table holding subject-level rows protects them.

Nothing here writes to the lake except the one durable audit event that records the pack was generated.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shironzi.audit.erasure import Receipt, receipts_table_uri, sign_receipt
from shironzi.audit.evidence_html import render_report
from shironzi.audit.log import audit, read_audit_events
from shironzi.audit.queries import as_jsonable
from shironzi.audit.verify import verify_chains
from shironzi.errors import InvalidInputError
from shironzi.lake.delta import add_actions, open_table, read_arrow, table_exists
from shironzi.lake.discovery import LakeTable, discover_tables
from shironzi.privacy.pii_table import pii_table_uri
from shironzi.privacy.tokens import TOKEN_PATTERN
from shironzi.settings import get_settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.registry import get_registry

STALE_AFTER_DAYS = 90
PROJECT_ROOT = Path(__file__).resolve().parents[2]
CHANGE_ACTIONS: dict[str, tuple[str, ...]] = {
    "models": ("model_promotion", "model_promotion_refused", "model_rollback"),
    "modules": ("module_enabled", "module_disabled"),
    "plans": ("tenant_plan_changed",),
}
RETENTION_ACTIONS = ("retention_enforced",)
DRILL_ACTIONS = ("backup_drill", "restore_drill", "dr_drill", "tenant_restored")
SECTIONS = ("access_review", "admin_actions", "changes", "audit_chain", "erasures", "retention_runs",
            "backup_drills", "encryption")
_EVENT_COLUMNS = ("event_time", "actor", "tenant_id", "action", "resource", "purpose", "outcome", "request_id")


@dataclass(frozen=True)
class Window:
    """The audited period [start, end)."""

    start: dt.datetime
    end: dt.datetime

    def filters(self) -> list[tuple[str, str, Any]]:
        return [("event_date", ">=", self.start.date()), ("event_date", "<=", self.end.date()),
                ("event_time", ">=", self.start), ("event_time", "<", self.end)]


def evidence_window(start: dt.datetime | None, end: dt.datetime | None, *, now: dt.datetime) -> Window:
    """The period (default: the 90 days up to now); naive times are UTC."""
    end = end or now
    start = start or end - dt.timedelta(days=STALE_AFTER_DAYS)
    start, end = (t if t.tzinfo else t.replace(tzinfo=dt.UTC) for t in (start, end))
    if end <= start:
        raise InvalidInputError("the end of the evidence period must be after its start")
    return Window(start, end)


def _events(window: Window, *, actions: Sequence[str] | None = None,
            extra: Sequence[tuple[str, str, Any]] = ()) -> list[dict[str, Any]]:
    filters = [*window.filters(), *extra, *([("action", "in", list(actions))] if actions else [])]
    rows = read_audit_events(filters=filters).to_pylist()
    return [{**{k: r[k] for k in _EVENT_COLUMNS}, "details": json.loads(r["details"] or "{}")} for r in rows]


# --- CC6: access review ------------------------------------------------------------------------------


def _last_uses(actors: Sequence[str]) -> dict[str, dt.datetime]:
    """The newest successful or allowed audit event of each actor, over the whole log."""
    if not actors:
        return {}
    table = read_audit_events(filters=[("actor", "in", list(actors)), ("outcome", "in", ["success", "allowed"])])
    if table.num_rows == 0:
        return {}
    newest = table.select(["actor", "event_time"]).group_by("actor").aggregate([("event_time", "max")])
    return dict(zip(newest.column("actor").to_pylist(), newest.column("event_time_max").to_pylist(), strict=True))


def access_review(*, now: dt.datetime) -> dict[str, Any]:
    keys = get_registry().list_all_keys()
    last = _last_uses([f"key:{k.prefix}" for k in keys])
    stale_before = now - dt.timedelta(days=STALE_AFTER_DAYS)
    rows = []
    for key in keys:
        used = last.get(f"key:{key.prefix}")
        live = key.revoked_at is None and (key.expires_at is None or key.expires_at > now)
        stale = live and key.created_at < stale_before and (used is None or used < stale_before)
        rows.append({"prefix": key.prefix, "tenant_id": key.tenant_id or "(platform admin)",
                     "scopes": list(key.scopes), "label": key.label, "created_by": key.created_by,
                     "created_at": key.created_at, "expires_at": key.expires_at, "revoked_at": key.revoked_at,
                     "last_used": used, "status": "active" if live else "revoked or expired", "stale": stale})
    return {"stale_after_days": STALE_AFTER_DAYS, "keys": rows, "stale": [r["prefix"] for r in rows if r["stale"]]}


# --- CC8: changes ------------------------------------------------------------------------------------


def _file_versions(paths: Iterable[Path]) -> list[dict[str, str]]:
    return [{"file": p.relative_to(PROJECT_ROOT).as_posix(),
             "sha256": hashlib.sha256(p.read_bytes()).hexdigest()[:16]} for p in sorted(paths)]


def deployed_versions(root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """What is deployed now, read from the files (never imported): contract versions per industry, DAG
    files and dbt models with content hashes."""
    contracts = root / "ingestion" / "contracts" / "definitions.py"
    pattern = re.compile(r'"industry":\s*"(\w+)",\s*"version":\s*(\d+)')
    versions: dict[str, list[int]] = {}
    if contracts.exists():
        for industry, version in pattern.findall(contracts.read_text()):
            versions.setdefault(industry, []).append(int(version))
    return {
        "contracts": {k: sorted(v) for k, v in sorted(versions.items())},
        "dags": _file_versions(p for p in (root / "orchestration" / "dags").glob("*.py") if p.name[0] != "_"),
        "dbt_models": _file_versions((root / "dbt_project" / "models").rglob("*.sql")),
    }


def changes(window: Window) -> dict[str, Any]:
    found = {name: _events(window, actions=actions) for name, actions in CHANGE_ACTIONS.items()}
    return {**found, "deployed": deployed_versions()}


# --- privacy controls ---------------------------------------------------------------------------------


def erasures(window: Window) -> list[dict[str, Any]]:
    uri = receipts_table_uri()
    if not table_exists(uri):
        return []
    rows = read_arrow(uri, filters=[("created_at", ">=", window.start), ("created_at", "<", window.end)]).to_pylist()
    out = []
    for row in sorted(rows, key=lambda r: r["created_at"]):
        receipt = Receipt.from_json(row["receipt"])
        out.append({"request_id": row["request_id"], "kind": row["kind"], "tenant_id": row["tenant_id"],
                    "created_at": row["created_at"], "requested_by": receipt.requested_by,
                    "tables": len(receipt.tables),
                    "rows_deleted": sum(t.get("rows_deleted", 0) for t in receipt.tables),
                    "verified": bool(row["ok"]), "signature_valid": sign_receipt(receipt) == receipt.signature,
                    "receipt": json.loads(row["receipt"])})
    return out


def backup_drills(window: Window) -> dict[str, Any]:
    drills = read_audit_events(filters=[("action", "in", list(DRILL_ACTIONS))])
    if drills.num_rows == 0:
        return {"latest": None, "in_period": [], "note": "none recorded"}
    latest = drills.slice(drills.num_rows - 1).to_pylist()[0]
    return {"latest": {k: latest[k] for k in _EVENT_COLUMNS} | {"details": json.loads(latest["details"])},
            "in_period": _events(window, actions=DRILL_ACTIONS), "note": ""}


def _customer_id_form(uri: str) -> str:
    """From the log's statistics alone: are the stored customer ids tokens?"""
    actions = add_actions(uri, storage_options=get_settings().storage_options)
    names = actions.column_names
    if actions.num_rows == 0 or "min.customer_id" not in names:
        return "unknown (no statistics)"
    values = [v for c in ("min.customer_id", "max.customer_id") for v in actions.column(c).to_pylist() if v]
    if values and all(TOKEN_PATTERN.match(v) for v in values):
        return "tokenised (HMAC-SHA256 under the tenant key)"
    return "clear (the tenant's own pseudonymous ids)"


def _at_rest(lake_uri: str) -> str:
    scheme = lake_uri.split("://", 1)[0] if "://" in lake_uri else "file"
    if scheme == "file":
        return "local filesystem: encryption at rest is the volume's (no object-store encryption)"
    options = {k.lower(): v for k, v in (get_settings().storage_options or {}).items()}
    sse = options.get("aws_server_side_encryption") or options.get("server_side_encryption")
    return f"{scheme}: server-side encryption {sse}" if sse else f"{scheme}: the bucket's default encryption"


def _protection(table: LakeTable, columns: Sequence[str], pii_uri: str) -> dict[str, Any] | None:
    if table.uri.rstrip("/") == pii_uri.rstrip("/"):
        return {"holds": "recoverable PII/PHI values", "protection": "each value encrypted (Fernet) under the "
                "tenant key; destroying the key shreds them", "customer_id": _customer_id_form(table.uri)}
    if "customer_id" not in columns:
        return None
    return {"holds": "subject-level rows (PII; PHI for healthcare tenants)",
            "protection": "PII fields tokenised at landing (HMAC under the tenant key); raw recoverable values "
            "only in the PII table" if table.layer == "bronze" else "derived from tokenised bronze",
            "customer_id": _customer_id_form(table.uri)}


def encryption_status() -> list[dict[str, Any]]:
    settings = get_settings()
    lake = settings.resolved_lake_uri
    pii_uri = pii_table_uri(lake)
    out = []
    for table in discover_tables(lake):
        columns = [f.name for f in open_table(table.uri).schema().fields]
        found = _protection(table, columns, pii_uri)
        if found is not None:
            out.append({"table": table.relative, "layer": table.layer,
                        "placement": "dedicated" if table.tenant_id else "pooled", **found,
                        "at_rest": _at_rest(lake)})
    return out


# --- the pack -----------------------------------------------------------------------------------------


def gather_evidence(window: Window, *, now: dt.datetime,
                    progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Every section's content for the period (`progress` is told each section as it starts)."""
    builders: dict[str, Callable[[], Any]] = {
        "access_review": lambda: access_review(now=now),
        "admin_actions": lambda: _events(window, extra=[("is_admin", "=", True)]),
        "changes": lambda: changes(window),
        "audit_chain": lambda: verify_chains().as_dict(),
        "erasures": lambda: erasures(window),
        "retention_runs": lambda: _events(window, actions=RETENTION_ACTIONS),
        "backup_drills": lambda: backup_drills(window),
        "encryption": encryption_status,
    }
    sections: dict[str, Any] = {}
    for name in SECTIONS:
        if progress is not None:
            progress(name)
        sections[name] = builders[name]()
    return sections


@dataclass(frozen=True)
class EvidencePack:
    """Where a pack went: its directory, the HTML report and the manifest (file -> sha256)."""

    directory: Path
    report: Path
    manifest: dict[str, Any]


def _checked_out_dir(out: Path) -> Path:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInputError(f"--out {str(out)!r} exists and is not an empty directory: refusing to overwrite it")
    out.mkdir(parents=True, exist_ok=True)
    return out


def write_evidence_pack(
    ctx: TenantContext,
    out: Path,
    *,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
    now: dt.datetime | None = None,
    progress: Callable[[str], None] | None = None,
) -> EvidencePack:
    """Gather the evidence for [start, end) and write `<section>.json`, `manifest.json` and `report.html`
    into `out` (a new or empty directory); the generation is audited."""
    ctx.require_admin("generating a SOC 2 evidence pack")
    now = now or dt.datetime.now(dt.UTC)
    window = evidence_window(start, end, now=now)
    directory = _checked_out_dir(out)
    sections = as_jsonable(gather_evidence(window, now=now, progress=progress))
    files: dict[str, str] = {}
    for name, content in sections.items():
        text = json.dumps(content, indent=2, sort_keys=True, default=str)
        (directory / f"{name}.json").write_text(text)
        files[f"{name}.json"] = hashlib.sha256(text.encode()).hexdigest()
    manifest: dict[str, Any] = {"generated_at": now.isoformat(), "generated_by": ctx.actor,
                                "period": {"from": window.start.isoformat(), "to": window.end.isoformat()},
                                "summary": summary(sections), "files": files}
    html = render_report(manifest, sections)
    (directory / "report.html").write_text(html)
    files["report.html"] = hashlib.sha256(html.encode()).hexdigest()
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    audit(ctx, "evidence_pack_generated", resource=f"evidence:{directory.name}", durable=True,
          details={"directory": str(directory), "period": manifest["period"], "summary": manifest["summary"]})
    return EvidencePack(directory, directory / "report.html", manifest)


def summary(sections: Mapping[str, Any]) -> dict[str, Any]:
    """The headline figures of a pack (for the report's top and the dashboard)."""
    changes_ = sections["changes"]
    drills = sections["backup_drills"]
    return {
        "keys": len(sections["access_review"]["keys"]),
        "stale_keys": len(sections["access_review"]["stale"]),
        "admin_actions": len(sections["admin_actions"]),
        "changes": sum(len(changes_[k]) for k in CHANGE_ACTIONS),
        "audit_chain_ok": bool(sections["audit_chain"].get("ok")),
        "erasures": len(sections["erasures"]),
        "receipts_valid": all(e["signature_valid"] for e in sections["erasures"]),
        "retention_runs": len(sections["retention_runs"]),
        "latest_drill": (drills["latest"] or {}).get("event_time") or drills["note"],
        "tables_with_subject_data": len(sections["encryption"]),
    }


def latest_pack(root: Path | None = None) -> Path | None:
    """The newest pack under `root` (default: home/evidence), by its manifest's generation time."""
    base = root or get_settings().home / "evidence"
    manifests = sorted(base.glob("*/manifest.json"), key=lambda p: json.loads(p.read_text())["generated_at"])
    return manifests[-1].parent if manifests else None


def default_pack_dir(now: dt.datetime | None = None) -> Path:
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return get_settings().home / "evidence" / stamp


__all__: Sequence[str] = ("EvidencePack", "deployed_versions", "gather_evidence", "latest_pack", "write_evidence_pack")
