"""Signed audit digests: a forger who rewrites the audit table and recomputes every SHA-256 hash, or who deletes
the last hour, is caught by the Ed25519-signed digests kept apart from the lake; a wrong public key, a tampered
digest and a re-run are handled. The forger here writes a brand-new, append-only Delta table, so the hash chains
and the Delta log alone (`digests=False`, i.e. the checks that existed before) find nothing wrong."""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from shironzi.audit.digest_signing import fingerprint, signing_key
from shironzi.audit.digests import digest_store, write_digests
from shironzi.audit.events import AUDIT_SCHEMA, GENESIS_HASH, AuditEvent, event_hash
from shironzi.audit.log import AUDIT_PARTITION, audit_table_uri, get_audit_log, reset_audit_logs
from shironzi.audit.verify import verify_chains
from shironzi.errors import IntegrityCheckError
from shironzi.lake.delta import append, read_arrow
from shironzi.settings import get_settings
from tests._services import S3Server
from tests.shironzi.cli._fixtures import run_cli

DAY = dt.date(2026, 3, 2)
NEXT_DAY = DAY + dt.timedelta(days=1)
# (hour, minute) of each event of DAY; NEXT_DAY gets two events at 01:00 and 02:30.
TIMES = [(8, 10), (8, 40), (9, 5), (9, 50), (10, 20), (10, 45)]


def _at(day: dt.date, hour: int, minute: int) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=dt.UTC)


def _write_events() -> None:
    log = get_audit_log()
    when = [_at(DAY, h, m) for h, m in TIMES] + [_at(NEXT_DAY, 1, 0), _at(NEXT_DAY, 2, 30)]
    for i, at in enumerate(when):
        log.record(AuditEvent(action="read", actor=f"key:k{i % 2}", actor_kind="key", tenant_id="t_a",
                              resource="eu-west/gold/fct_orders", outcome="allowed", request_id=f"r{i}",
                              event_time=at))
    log.flush()


def _forge(change: Callable[[list[dict[str, Any]]], list[dict[str, Any]]]) -> None:
    """What a forger with write access to the lake can do: rewrite the events, recompute every day's chain
    consistently (seq, prev_hash, hash), and replace the audit table with a fresh, append-only one."""
    uri = audit_table_uri()
    rows = sorted(read_arrow(uri).to_pylist(), key=lambda r: (r[AUDIT_PARTITION], r["seq"]))
    rows = change(rows)
    tails: dict[dt.date, tuple[int, str]] = {}
    for row in rows:
        seq, prev = tails.get(row[AUDIT_PARTITION], (-1, GENESIS_HASH))
        row["seq"], row["prev_hash"] = seq + 1, prev
        row["hash"] = event_hash(row)
        tails[row[AUDIT_PARTITION]] = (row["seq"], row["hash"])
    reset_audit_logs()  # the writer's cached chain tails belong to the old table
    shutil.rmtree(uri)
    append(uri, pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA), partition_by=AUDIT_PARTITION)


@pytest.fixture(autouse=True)
def _quiet_logs(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stage summaries off stderr, where the CLI's one error line is checked."""
    monkeypatch.setenv("SHIRONZI_LOG_LEVEL", "WARNING")
    get_settings.cache_clear()


@pytest.fixture
def digested(audit_home: Path) -> Path:
    _write_events()
    run = write_digests()
    assert len(run.written) == 2 * 25 and run.events == len(TIMES) + 2  # 24 hours + the day, for both days
    report = verify_chains()
    assert report.ok and report.digests is not None and report.digests.digests == 50, report.as_dict()
    return audit_home


def _failing_spans() -> list[str]:
    report = verify_chains()
    assert not report.ok and report.digests is not None
    return [f.span for f in report.digests.failures]


def test_a_forger_who_recomputes_the_chain_is_caught_by_the_digest(
    digested: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    def deny_one(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        target = next(r for r in rows if r["event_time"] == _at(DAY, 9, 50))
        target["outcome"] = "denied"
        return rows

    _forge(deny_one)
    assert verify_chains(digests=False).ok  # the unkeyed chains and the Delta log see nothing
    spans = _failing_spans()
    assert spans[0] == "2026-03-02 09:00-10:00 UTC"
    # The hour holding the edit, the next hour (its head chains on), the day; the empty hours sign no head.
    assert spans == ["2026-03-02 09:00-10:00 UTC", "2026-03-02 10:00-11:00 UTC", "2026-03-02 (day)"]
    first = verify_chains().digests.failures[0]  # type: ignore[union-attr]
    assert "rewritten" in first.reason and first.digest == "2026/03/02/hour-09.json"
    code, _, err = run_cli(capsys, "audit", "verify")
    assert code == 1
    assert "2026-03-02 09:00-10:00 UTC" in err and "recomputed chain head differs" in err
    assert len(err.strip().splitlines()) == 1


def test_deleting_the_last_hour_is_caught(digested: Path) -> None:
    _forge(lambda rows: [r for r in rows if not (r[AUDIT_PARTITION] == NEXT_DAY and r["event_time"].hour == 2)])
    assert verify_chains(digests=False).ok
    report = verify_chains()
    failures = report.digests.failures  # type: ignore[union-attr]
    assert [f.span for f in failures] == ["2026-03-03 02:00-03:00 UTC", "2026-03-03 (day)"]
    assert (failures[0].expected, failures[0].found) == ("1 events", "0 events")


def test_a_public_key_that_does_not_match_is_a_clear_error_and_changes_nothing(
    digested: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shironzi.audit.digest_signing import public_key_pem

    store = digest_store()
    before = {p: store.read(p) for p in store.digest_paths()}
    table_version = len(list((Path(audit_table_uri()) / "_delta_log").glob("*.json")))
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(IntegrityCheckError, match="digest public key does not match"):
        verify_chains(public_key=other)
    wrong = tmp_path / "wrong.pem"
    wrong.write_bytes(public_key_pem(other))
    code, out, err = run_cli(capsys, "audit", "verify", "--public-key", str(wrong))
    assert code == 1 and "digest public key does not match" in err and fingerprint(other)[:16] in err
    # The exported public key verifies offline.
    code, pem, _ = run_cli(capsys, "audit", "digest-key", "--public")
    assert code == 0 and pem.startswith("-----BEGIN PUBLIC KEY-----")
    exported = tmp_path / "digest.pem"
    exported.write_text(pem)
    code, out, _ = run_cli(capsys, "audit", "verify", "--public-key", str(exported))
    assert code == 0 and "50 signed digests verified" in out
    code, _, err = run_cli(capsys, "audit", "digest-key")
    assert code == 1 and "only the public key" in err
    assert {p: store.read(p) for p in store.digest_paths()} == before
    assert len(list((Path(audit_table_uri()) / "_delta_log").glob("*.json"))) == table_version


def test_a_digest_with_a_tampered_signature_or_body_is_caught(digested: Path) -> None:
    root = Path(digest_store().root)
    hour = root / "2026/03/02/hour-08.json"
    document = json.loads(hour.read_text())
    document["event_count"] = 3  # a forger "fixing" the digest to match a forged table cannot re-sign it
    hour.write_text(json.dumps(document))
    spans = _failing_spans()
    assert spans[0] == "2026-03-02 08:00-09:00 UTC"
    day = root / "2026/03/03/day.json"
    document = json.loads(day.read_text())
    document["signature"] = ("0" if document["signature"][0] != "0" else "1") + document["signature"][1:]
    day.write_text(json.dumps(document))
    failures = {f.span: f.reason for f in verify_chains().digests.failures}  # type: ignore[union-attr]
    assert "signature does not match" in failures["2026-03-02 08:00-09:00 UTC"]
    assert "signature does not match" in failures["2026-03-03 (day)"]
    # A removed digest breaks the chain of digests at the next one.
    (root / "2026/03/02/hour-15.json").unlink()
    failures = {f.span: f.reason for f in verify_chains().digests.failures}  # type: ignore[union-attr]
    assert "digest chain broken" in failures["2026-03-02 16:00-17:00 UTC"]


def test_digest_is_idempotent_resumable_and_seals_closed_hours_only(
    audit_home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write_events()
    now = _at(NEXT_DAY, 2, 6)  # 02:00-03:00 is not closed; 01:00-02:00 is, and past the 5-minute grace
    first = write_digests(now=now)
    assert first.written[-2:] == ["2026/03/03/hour-00.json", "2026/03/03/hour-01.json"]
    assert len(first.written) == 25 + 2 and first.events == len(TIMES) + 1
    assert write_digests(now=now).written == []  # idempotent
    # A late flush: an event of 01:59, recorded after 01:00-02:00 was digested, lands in the next hour's digest.
    get_audit_log().record(AuditEvent(action="late", actor="svc", event_time=_at(NEXT_DAY, 1, 59)), durable=True)
    resumed = write_digests(now=now + dt.timedelta(hours=2))
    assert resumed.written == ["2026/03/03/hour-02.json", "2026/03/03/hour-03.json"]
    assert resumed.events == 2  # the 02:30 event and the late one
    store = digest_store()
    hour2 = json.loads(store.read("2026/03/03/hour-02.json"))
    assert (hour2["first_seq"], hour2["last_seq"], hour2["event_count"]) == (1, 2, 2)
    report = verify_chains()
    assert report.ok and report.digests is not None and report.digests.pending_events == 0, report.as_dict()
    # The CLI: the rest of the days close, then a second run writes nothing.
    code, out, _ = run_cli(capsys, "audit", "digest")
    assert code == 0 and "21 digest(s) written" in out
    code, out, _ = run_cli(capsys, "audit", "digest")
    assert code == 0 and out.startswith("0 digest(s) written")
    assert len(store.digest_paths()) == 50
    # The signing key lives in the keystore, not beside the digests: only the public key is published there.
    published = list((Path(store.root) / "public-keys").iterdir())
    assert [p.name for p in published] == [f"{fingerprint(signing_key().public_key())}.pem"]
    assert not any(Path(get_settings().resolved_lake_uri).rglob("*.pem"))


def test_events_appended_to_a_sealed_day_are_reported(digested: Path) -> None:
    get_audit_log().record(AuditEvent(action="backdated", actor="svc", event_time=_at(DAY, 12, 0)), durable=True)
    report = verify_chains()
    assert verify_chains(digests=False).ok and not report.ok
    (failure,) = report.digests.failures  # type: ignore[union-attr]
    assert (failure.span, failure.reason, failure.found) == (
        "2026-03-02 (day)", "events appended after the day was sealed", "1")


@pytest.mark.integration
def test_digests_in_their_own_s3_bucket_apart_from_an_s3_lake(
    audit_home: Path, s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, digests = s3.create_bucket("shironzi-lake-digests"), s3.create_bucket("shironzi-audit-digests")
    monkeypatch.setenv("SHIRONZI_LAKE_URI", f"{lake}/lake")
    monkeypatch.setenv("SHIRONZI_AUDIT_DIGEST_URI", f"{digests}/prod/audit")
    monkeypatch.setenv("SHIRONZI_STORAGE_OPTIONS", json.dumps(s3.storage_options()))
    get_settings.cache_clear()
    reset_audit_logs()
    _write_events()
    assert len(write_digests().written) == 50 and write_digests().written == []
    client = s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="shironzi-audit-digests")["Contents"]]
    assert "prod/audit/2026/03/02/hour-09.json" in keys and any(k.startswith("prod/audit/public-keys/") for k in keys)
    lake_keys = [o["Key"] for o in client.list_objects_v2(Bucket="shironzi-lake-digests")["Contents"]]
    assert not any("hour-" in k or k.endswith(".pem") for k in lake_keys)
    assert verify_chains().ok
    # Tampering with the stored object is caught like on a local disk.
    key = "prod/audit/2026/03/02/hour-09.json"
    document = json.loads(client.get_object(Bucket="shironzi-audit-digests", Key=key)["Body"].read())
    document["event_count"] = 1
    client.put_object(Bucket="shironzi-audit-digests", Key=key, Body=json.dumps(document).encode())
    failures = verify_chains().digests.failures  # type: ignore[union-attr]
    assert [(f.span, f.reason.split(":")[0]) for f in failures] == [
        ("2026-03-02 09:00-10:00 UTC", "the signature does not match the digest (altered or forged)"),
        ("2026-03-02 10:00-11:00 UTC", "digest chain broken"),  # it chained to the bytes before the edit
    ]


def test_a_broken_chain_is_never_signed(audit_home: Path) -> None:
    _write_events()
    uri = audit_table_uri()
    rows = read_arrow(uri).to_pylist()
    next(r for r in rows if r["event_time"] == _at(NEXT_DAY, 1, 0))["outcome"] = "denied"  # hash left as it was
    reset_audit_logs()
    shutil.rmtree(uri)
    append(uri, pa.Table.from_pylist(rows, schema=AUDIT_SCHEMA), partition_by=AUDIT_PARTITION)
    with pytest.raises(IntegrityCheckError, match="refusing to sign the audit chain of 2026-03-03: seq 0"):
        write_digests()
    # The intact day before it was signed; nothing of the broken day was.
    paths = digest_store().digest_paths()
    assert "2026/03/02/day.json" in paths and not any(p.startswith("2026/03/03") for p in paths)


def test_days_expired_by_retention_are_skipped_not_failed(digested: Path) -> None:
    from shironzi.lake.delta import delete

    delete(audit_table_uri(), f"{AUDIT_PARTITION} = '{DAY.isoformat()}'", metadata={"shironzi_purpose": "retention"})
    assert not verify_chains().ok  # the digests of the day find its events gone ...
    get_audit_log().record(AuditEvent(action="audit_days_expired", actor="svc:retention", is_admin=True,
                                      details={"days": [DAY.isoformat()]}))  # ... until the log says retention did it
    report = verify_chains()
    assert report.ok and report.digests is not None, report.as_dict()
    assert report.digests.expired_days == [DAY.isoformat()] and report.digests.pending_events == 1


def test_a_day_changed_after_its_first_hours_were_digested_is_not_signed_further(audit_home: Path) -> None:
    _write_events()
    write_digests(now=_at(DAY, 10, 10))  # DAY 00:00-10:00 sealed: seq 0-3
    _forge(lambda rows: [r for r in rows if r["event_time"] != _at(DAY, 9, 50)])
    with pytest.raises(IntegrityCheckError, match="no longer matches its digest 2026/03/02/hour-09.json"):
        write_digests()
    assert digest_store().digest_paths()[-1] == "2026/03/02/hour-09.json"
