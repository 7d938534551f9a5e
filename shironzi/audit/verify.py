"""Recompute the audit hash chains from the stored Parquet data and report the first broken link per day; with
the signed digests (`shironzi.audit.digest_verify`), also catch a forger who recomputed the chains."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from shironzi.audit.chain import BrokenLink, check_day
from shironzi.audit.digest_verify import DigestReport, verify_digests
from shironzi.audit.log import AUDIT_PARTITION, audit_table_uri, get_audit_log
from shironzi.lake.delta import history, read_arrow, table_exists
from shironzi.lake.writes import DELETE_OPERATION_KEY
from shironzi.observability import stage

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey


@dataclass
class ChainReport:
    """What `verify_chains` checked and what it found."""

    ok: bool
    days: int = 0
    events: int = 0
    broken: list[BrokenLink] = field(default_factory=list)
    log_violations: list[str] = field(default_factory=list)
    digests: DigestReport | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "days": self.days,
            "events": self.events,
            "broken": [{**asdict(b), "day": b.day.isoformat()} for b in self.broken],
            "log_violations": list(self.log_violations),
            "digests": self.digests.as_dict() if self.digests is not None else None,
        }


# Operations that only add events or reorganise files without changing what they hold.
_APPEND_ONLY_OPERATIONS = frozenset({"CREATE TABLE", "OPTIMIZE", "VACUUM START", "VACUUM END"})


def append_only_violations(history: Iterable[dict[str, Any]]) -> list[str]:
    """Commits that changed the audit table other than by appending: the chains cannot see a deleted or
    rewritten *last* event of a day, but the Delta log can. Retention deletes are the one sanctioned
    exception, and they carry `shironzi_purpose=retention` in their commit metadata."""
    violations = []
    for commit in history:
        operation = str(commit.get("operation", "")).upper()
        mode = str((commit.get("operationParameters") or {}).get("mode", ""))
        if operation in _APPEND_ONLY_OPERATIONS or (operation == "WRITE" and mode == "Append"):
            continue
        metadata = commit.get("userMetadata") or {}
        if isinstance(metadata, dict) and metadata.get("shironzi_purpose") == "retention":
            continue
        done = f"{operation or 'unknown'} {mode}".strip()
        named = str(metadata.get(DELETE_OPERATION_KEY, "")).upper() if isinstance(metadata, dict) else ""
        violations.append(f"version {commit.get('version')}: " + (f"{named} ({done})" if named else done))
    return sorted(violations)


def verify_chains(
    *,
    days: Iterable[dt.date] | None = None,
    lake_uri: str | None = None,
    digests: bool = True,
    public_key: Ed25519PublicKey | None = None,
) -> ChainReport:
    """Re-read the audit table's data files, recompute every day's chain in `seq` order and report
    the first broken link of each day; for a whole-log check of the configured lake (no `days`, no `lake_uri`),
    also check the signed digests (with `public_key`, default: the keystore's signing key). An empty or missing
    table verifies trivially, unless digests vouch for events it no longer holds."""
    uri = audit_table_uri(lake_uri)
    if lake_uri is None:
        get_audit_log().flush()
    with stage("audit.verify", table=uri) as summary:
        check_digests = digests and days is None and lake_uri is None
        if not table_exists(uri):
            report = ChainReport(ok=True)
            if check_digests:
                report.digests = verify_digests({}, public_key=public_key)
                report.ok = not report.digests.failures
            return report
        wanted = sorted(set(days)) if days is not None else None
        table = read_arrow(uri, filters=[(AUDIT_PARTITION, "in", wanted)] if wanted else None)
        by_day: dict[dt.date, list[dict[str, Any]]] = {}
        for row in table.to_pylist():
            by_day.setdefault(row[AUDIT_PARTITION], []).append(row)
        report = ChainReport(ok=True, days=len(by_day), events=table.num_rows)
        for day in sorted(by_day):
            rows = by_day[day] = sorted(by_day[day], key=lambda r: (r["seq"], r["hash"]))
            broken = check_day(day, rows)
            if broken is not None:
                report.broken.append(broken)
        if days is None:
            report.log_violations = append_only_violations(history(uri))
        if check_digests:
            intact = set(by_day) - {b.day for b in report.broken}
            report.digests = verify_digests(by_day, public_key=public_key, intact_days=intact)
        report.ok = not report.broken and not report.log_violations and not (report.digests and report.digests.failures)
        summary.rows = report.events
        summary.extra.update(days=report.days, broken=len(report.broken))
        return report
