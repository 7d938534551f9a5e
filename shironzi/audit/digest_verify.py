"""Check the audit log against its signed digests: each digest's Ed25519 signature, the chain of digests, and that
every digested span's recomputed chain head and event count match what was signed.

The hash chains alone cannot catch a forger who rewrites a day and recomputes every hash, or who deletes the last
events of a day; the digests, signed with a key the lake never holds, can. Days that retention expired (named by an
`audit_days_expired` event of the log) are skipped. Events newer than the newest digest are reported as pending:
nothing has vouched for them yet.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from shironzi.audit.digest_signing import fingerprint as fingerprint_of
from shironzi.audit.digest_signing import signing_key
from shironzi.audit.digests import Digest, DigestStore, digest_store, file_hash
from shironzi.audit.events import GENESIS_HASH, event_hash
from shironzi.errors import ConfigurationError, IntegrityCheckError, NotFoundError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

Rows = Mapping[dt.date, Sequence[Mapping[str, Any]]]


@dataclass(frozen=True)
class DigestFailure:
    """One digested span (or day) that does not match, and why."""

    span: str
    digest: str
    reason: str
    expected: str = ""
    found: str = ""


@dataclass
class DigestReport:
    """What the digest check covered and what it found."""

    digests: int = 0
    key_fingerprint: str | None = None
    sealed_through: dt.datetime | None = None
    pending_events: int = 0
    expired_days: list[str] = field(default_factory=list)
    failures: list[DigestFailure] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "digests": self.digests,
            "key_fingerprint": self.key_fingerprint,
            "sealed_through": self.sealed_through.isoformat() if self.sealed_through else None,
            "pending_events": self.pending_events,
            "expired_days": list(self.expired_days),
            "failures": [asdict(f) for f in self.failures],
        }


def _verification_key(public_key: Ed25519PublicKey | None) -> Ed25519PublicKey:
    if public_key is not None:
        return public_key
    try:
        return signing_key(create=False).public_key()
    except NotFoundError as exc:
        raise ConfigurationError(
            "audit digests exist but the keystore holds no digest signing key: verify with the exported public "
            "key (`--public-key FILE`)"
        ) from exc


def _recomputed_heads(rows: Sequence[Mapping[str, Any]], *, intact: bool) -> dict[int, str]:
    """Each seq's hash recomputed from the genesis over the events as stored (their stored hashes ignored). For a
    day whose chain verified (`intact`), the stored hashes are those recomputed ones, and are used as they are."""
    if intact:
        return {row["seq"]: row["hash"] for row in rows}
    heads, prev = {}, GENESIS_HASH
    for row in rows:
        prev = event_hash({**row, "prev_hash": prev})
        heads[row["seq"]] = prev
    return heads


def _expired_days(by_day: Rows) -> set[dt.date]:
    """Days that retention deleted, as the log itself records them."""
    expired: set[dt.date] = set()
    for rows in by_day.values():
        for row in rows:
            if row["action"] == "audit_days_expired":
                expired.update(dt.date.fromisoformat(d) for d in json.loads(row["details"]).get("days", []))
    return expired


def _signature_ok(key: Ed25519PublicKey, digest: Digest) -> bool:
    from cryptography.exceptions import InvalidSignature

    try:
        key.verify(bytes.fromhex(digest.signature), digest.signed_bytes())
    except (InvalidSignature, ValueError):
        return False
    return True


def _content_failure(
    digest: Digest, rows: Sequence[Mapping[str, Any]], heads: Mapping[int, str]
) -> DigestFailure | None:
    covered = [r for r in rows if digest.first_seq <= r["seq"] <= digest.last_seq]
    if len(covered) != digest.event_count:
        return DigestFailure(digest.span, digest.path, "events missing or added: the count differs from the signed "
                             "digest", f"{digest.event_count} events", f"{len(covered)} events")
    if digest.event_count and heads.get(digest.last_seq) != digest.chain_head:
        return DigestFailure(digest.span, digest.path, "events rewritten: the recomputed chain head differs from the "
                             "signed digest", digest.chain_head, str(heads.get(digest.last_seq)))
    return None


def _check_digest(
    key: Ed25519PublicKey, fingerprint: str, digest: Digest, previous: tuple[Digest, bytes] | None
) -> DigestFailure | None:
    if digest.key_fingerprint != fingerprint:
        return DigestFailure(digest.span, digest.path, "signed by another key", fingerprint, digest.key_fingerprint)
    if not _signature_ok(key, digest):
        return DigestFailure(digest.span, digest.path, "the signature does not match the digest (altered or forged)")
    expected = (file_hash(previous[1]), previous[0].path) if previous else (None, None)
    if (digest.previous_digest, digest.previous_path) != expected:
        return DigestFailure(digest.span, digest.path, "digest chain broken: the previous digest is missing or "
                             "altered", f"{expected[1]} {expected[0]}",
                             f"{digest.previous_path} {digest.previous_digest}")
    return None


def _uncovered(by_day: Rows, digests: Sequence[Digest], expired: set[dt.date], report: DigestReport) -> None:
    """Events no digest covers: pending on the newest digested day and after it; a failure before it."""
    newest = digests[-1].day
    covered_to: dict[dt.date, int] = {}
    sealed = {d.day for d in digests if d.kind == "day"}
    for d in digests:
        covered_to[d.day] = max(covered_to.get(d.day, -1), d.last_seq)
    for day, rows in sorted(by_day.items()):
        if day in expired:
            continue
        extra = sum(1 for r in rows if r["seq"] > covered_to.get(day, -1))
        if not extra:
            continue
        if day in sealed:
            report.failures.append(DigestFailure(f"{day.isoformat()} (day)", f"{day:%Y/%m/%d}/day.json",
                                                 "events appended after the day was sealed", "0", str(extra)))
        elif day < newest:
            report.failures.append(DigestFailure(f"{day.isoformat()} (day)", f"{day:%Y/%m/%d}/",
                                                 "events on a day no digest covers, though later days were digested",
                                                 "0", str(extra)))
        else:
            report.pending_events += extra


def verify_digests(
    by_day: Rows,
    *,
    public_key: Ed25519PublicKey | None = None,
    store: DigestStore | None = None,
    intact_days: Collection[dt.date] = (),
) -> DigestReport:
    """Check every digest against the audit rows (per day, in seq order; `intact_days` are those whose hash chain
    was just verified, so their hashes need no recomputing). Raises IntegrityCheckError at once when the key
    matches none of the digests (a wrong public key, or digests signed by someone else); changes nothing."""
    store = store or digest_store()
    stored = list(store.digests())
    report = DigestReport(digests=len(stored))
    if not stored:
        report.pending_events = sum(len(rows) for rows in by_day.values())
        return report
    key = _verification_key(public_key)
    fingerprint = fingerprint_of(key)
    report.key_fingerprint = fingerprint
    signers = sorted({d.key_fingerprint for d, _ in stored})
    if fingerprint not in signers:
        raise IntegrityCheckError(
            f"the digest public key does not match: it is {fingerprint[:16]}…, the {len(stored)} digests were signed "
            f"by {', '.join(s[:16] + '…' for s in signers)} (a wrong key file, or digests signed by someone else)",
            key_fingerprint=fingerprint, signers=signers,
        )
    expired = _expired_days(by_day)
    report.expired_days = sorted(d.isoformat() for d in expired)
    heads = {day: _recomputed_heads(rows, intact=day in intact_days) for day, rows in by_day.items()}
    previous: tuple[Digest, bytes] | None = None
    for digest, data in stored:
        failure = _check_digest(key, fingerprint, digest, previous)
        if failure is None and digest.day not in expired:
            failure = _content_failure(digest, by_day.get(digest.day, []), heads.get(digest.day, {}))
        if failure is not None:
            report.failures.append(failure)
        previous = (digest, data)
    digests = [d for d, _ in stored]
    report.sealed_through = digests[-1].end
    _uncovered(by_day, digests, expired, report)
    return report
