"""Signed audit digests (CloudTrail-style log-file integrity) and where they are kept.

The hash chains of `shironzi.audit.log` are unkeyed: whoever can write the lake can rewrite a day's events and
recompute every hash. So, every hour and at the end of each day, `write_digests` signs a small JSON statement of
what the day's chain held: the seq range it covers, the event count, the chain head (hash of the last covered
event), the nominal time span, and the SHA-256 of the previous digest file (digests form one chain of their
own). They are signed with Ed25519 under a key held by the secrets backend (`shironzi.audit.digest_signing`) and
written apart from the events (`SHIRONZI_AUDIT_DIGEST_URI`: a folder under SHIRONZI_HOME by default, a separate
bucket or prefix under S3 object lock in production), once, never overwritten.

Closed hours only. An hour [H, H+1h) is digested once `now >= H+1h + SHIRONZI_AUDIT_DIGEST_GRACE_SECONDS`, and
the day digest once the whole day is that far past. A digest covers a contiguous seq range of the day's chain:
from the previous digest of that day up to the highest seq of an event whose time is before the hour's end. A
buffered event flushed late (its time inside an hour already digested) therefore has a higher seq and falls into
the next hour's digest: nothing is lost and no digest is ever rewritten. Only an event of a *day* already sealed
by its day digest cannot be covered any more; `verify` reports it as appended after sealing. The grace period
(default 5 min, far above the writer's 1 s flush interval) makes that a sign of tampering or a broken clock.

Every hour of a day that holds events gets a digest, empty hours included (count 0, the head unchanged), so a
deleted hour is a digest that finds nothing, not a silent gap. Days without any event get none.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from shironzi.audit.chain import check_day
from shironzi.audit.digest_signing import fingerprint, public_key_pem, signing_key
from shironzi.audit.events import GENESIS_HASH, canonical_json, utcnow
from shironzi.audit.log import AUDIT_PARTITION, audit_table_uri, get_audit_log
from shironzi.errors import ConfigurationError, IntegrityCheckError
from shironzi.lake.delta import read_arrow, table_exists
from shironzi.lake.discovery import is_local, lake_filesystem
from shironzi.lake.leases import file_lock
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings

if TYPE_CHECKING:
    import pyarrow.fs as pafs

DigestKind = Literal["hour", "day"]
DIGEST_FORMAT = 1
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)


@dataclass(frozen=True)
class Digest:
    """One signed statement of what a span of a day's audit chain held."""

    kind: DigestKind
    day: dt.date
    start: dt.datetime
    end: dt.datetime
    first_seq: int
    last_seq: int
    event_count: int
    chain_head: str
    previous_digest: str | None  # SHA-256 of the previous digest file, None for the first digest
    previous_path: str | None
    key_fingerprint: str
    created_at: dt.datetime
    format: int = DIGEST_FORMAT
    signature: str = ""

    @property
    def path(self) -> str:
        """Where the digest lives under the digest root: `YYYY/MM/DD/hour-HH.json` or `YYYY/MM/DD/day.json`."""
        folder = self.day.strftime("%Y/%m/%d")
        return f"{folder}/day.json" if self.kind == "day" else f"{folder}/hour-{self.start.hour:02d}.json"

    @property
    def order(self) -> tuple[dt.date, int, int]:
        """Chain order: a day's hours, then its day digest, then the next day."""
        return (self.day, 1 if self.kind == "day" else 0, self.start.hour)

    @property
    def span(self) -> str:
        """How reports name the span: `2026-12-06 09:00-10:00 UTC` or `2026-12-06 (day)`."""
        if self.kind == "day":
            return f"{self.day.isoformat()} (day)"
        return f"{self.day.isoformat()} {self.start:%H:%M}-{self.end:%H:%M} UTC"

    def body(self) -> dict[str, Any]:
        """Every field but the signature, in the one JSON spelling that is signed."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "signature"}
        fields["day"] = self.day.isoformat()
        for name in ("start", "end", "created_at"):
            fields[name] = fields[name].isoformat()
        return fields

    def signed_bytes(self) -> bytes:
        return canonical_json(self.body()).encode()

    def to_bytes(self) -> bytes:
        return (json.dumps({**self.body(), "signature": self.signature}, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, where: str) -> Digest:
        """Parse a digest file; IntegrityCheckError naming the file if it is not one."""
        try:
            raw = json.loads(data)
            return cls(
                **{
                    **raw,
                    "day": dt.date.fromisoformat(raw["day"]),
                    "start": dt.datetime.fromisoformat(raw["start"]),
                    "end": dt.datetime.fromisoformat(raw["end"]),
                    "created_at": dt.datetime.fromisoformat(raw["created_at"]),
                }
            )
        except (ValueError, TypeError, KeyError) as exc:
            raise IntegrityCheckError(f"audit digest {where} is unreadable: {exc}", digest=where) from exc


def file_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- the digest store ---------------------------------------------------------------------------------------


class DigestStore:
    """The digest files under one root, local or on an object store (through the lake's filesystem helper and
    its storage options). Files are written once: an existing one is never replaced."""

    PUBLIC_KEYS = "public-keys"

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self.local = is_local(self.root)
        fs, base = lake_filesystem(self.root)
        self.fs: pafs.FileSystem = fs
        self.base = base.rstrip("/")

    def _full(self, relative: str) -> str:
        return f"{self.base}/{relative}"

    def digest_paths(self) -> list[str]:
        """Relative paths of every digest file (public keys excluded)."""
        import pyarrow.fs as pafs

        infos = self.fs.get_file_info(pafs.FileSelector(self.base, recursive=True, allow_not_found=True))
        cut = len(self.base) + 1
        return sorted(
            i.path[cut:]
            for i in infos
            if i.type == pafs.FileType.File and i.path.endswith(".json")
            and not i.path[cut:].startswith(f"{self.PUBLIC_KEYS}/")
        )

    def exists(self, relative: str) -> bool:
        import pyarrow.fs as pafs

        return bool(self.fs.get_file_info(self._full(relative)).type != pafs.FileType.NotFound)

    def read(self, relative: str) -> bytes:
        with self.fs.open_input_stream(self._full(relative)) as stream:
            return bytes(stream.read())

    def put_once(self, relative: str, data: bytes) -> bool:
        """Write a new file; False (and nothing written) if it exists. Locally through a temporary file and a
        rename, so a crash never leaves half a digest; an object store puts whole objects atomically, and a
        temporary object under object lock could not be deleted afterwards."""
        if self.exists(relative):
            return False
        target = self._full(relative)
        self.fs.create_dir(target.rsplit("/", 1)[0], recursive=True)
        if not self.local:
            with self.fs.open_output_stream(target) as out:
                out.write(data)
            return True
        temporary = f"{target}.tmp-{os.getpid()}"
        with self.fs.open_output_stream(temporary) as out:
            out.write(data)
        self.fs.move(temporary, target)
        return True

    def digests(self) -> Iterator[tuple[Digest, bytes]]:
        """Every digest with its file bytes, in chain order."""
        found = []
        for relative in self.digest_paths():
            data = self.read(relative)
            digest = Digest.from_bytes(data, where=relative)
            if digest.path != relative:
                raise IntegrityCheckError(
                    f"audit digest {relative} claims to be {digest.path} (moved or renamed)", digest=relative
                )
            found.append((digest, data))
        yield from sorted(found, key=lambda item: item[0].order)

    def latest(self) -> tuple[Digest, bytes] | None:
        """The newest digest (the one the next digest chains to), reading only that file."""
        paths = self.digest_paths()
        if not paths:
            return None
        order = {"day.json": 99}  # a day's digest follows its hours
        newest = max(paths, key=lambda p: (p.rsplit("/", 1)[0], order.get(p.rsplit("/", 1)[1], 0), p))
        data = self.read(newest)
        return Digest.from_bytes(data, where=newest), data


def digest_store(settings: Settings | None = None) -> DigestStore:
    """The configured digest store; refuses a location inside the audit table it vouches for."""
    settings = settings or get_settings()
    root = settings.resolved_audit_digest_uri
    audit_table = audit_table_uri(settings.resolved_lake_uri)
    if root == audit_table or root.startswith(audit_table + "/"):
        raise ConfigurationError(
            f"SHIRONZI_AUDIT_DIGEST_URI {root} is inside the audit table: keep the digests apart from the events"
        )
    return DigestStore(root)


# --- writing ------------------------------------------------------------------------------------------------


@dataclass
class DigestRun:
    """What one `write_digests` run did."""

    written: list[str] = field(default_factory=list)
    events: int = 0
    sealed_through: dt.datetime | None = None
    key_fingerprint: str = ""
    root: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {
            "written": list(self.written),
            "events": self.events,
            "sealed_through": self.sealed_through.isoformat() if self.sealed_through else None,
            "key_fingerprint": self.key_fingerprint,
            "root": self.root,
        }


DayProgress = Callable[[int, int], None]


def _midnight(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(0), tzinfo=dt.UTC)


def _day_rows(days: list[dt.date]) -> dict[dt.date, list[dict[str, Any]]]:
    """The chain columns of the given days, per day in seq order."""
    uri = audit_table_uri()
    if not days or not table_exists(uri):
        return {}
    table = read_arrow(uri, filters=[(AUDIT_PARTITION, "in", days)])
    by_day: dict[dt.date, list[dict[str, Any]]] = {}
    for row in table.to_pylist():
        by_day.setdefault(row[AUDIT_PARTITION], []).append(row)
    return {day: sorted(rows, key=lambda r: r["seq"]) for day, rows in by_day.items()}


def _days_to_digest(after: dt.date | None, through: dt.date) -> list[dt.date]:
    """Days with events from `after` (inclusive) through `through`, reading only the partition column."""
    uri = audit_table_uri()
    if not table_exists(uri):
        return []
    filters = [(AUDIT_PARTITION, "<=", through)] + ([(AUDIT_PARTITION, ">=", after)] if after else [])
    column = read_arrow(uri, columns=[AUDIT_PARTITION], filters=filters).column(AUDIT_PARTITION)
    return sorted(set(column.to_pylist()))


class _Writer:
    """Signs and stores the digests of one run, chaining each to the one before."""

    def __init__(self, store: DigestStore, previous: tuple[Digest, bytes] | None) -> None:
        self.store = store
        self.key = signing_key(create=True)
        self.fingerprint = fingerprint(self.key.public_key())
        store.put_once(f"{DigestStore.PUBLIC_KEYS}/{self.fingerprint}.pem", public_key_pem(self.key.public_key()))
        self.previous = previous
        self.written: list[str] = []

    def seal(self, kind: DigestKind, day: dt.date, start: dt.datetime, end: dt.datetime,
             first_seq: int, last_seq: int, head: str) -> None:
        digest = Digest(
            kind=kind, day=day, start=start, end=end, first_seq=first_seq, last_seq=last_seq,
            event_count=last_seq - first_seq + 1, chain_head=head,
            previous_digest=file_hash(self.previous[1]) if self.previous else None,
            previous_path=self.previous[0].path if self.previous else None,
            key_fingerprint=self.fingerprint, created_at=utcnow(),
        )
        signature = self.key.sign(digest.signed_bytes()).hex()
        digest = dataclasses.replace(digest, signature=signature)
        data = digest.to_bytes()
        if self.store.put_once(digest.path, data):
            self.written.append(digest.path)
        else:  # another run wrote it meanwhile (the lock is per host): chain to the stored one
            data = self.store.read(digest.path)
            digest = Digest.from_bytes(data, where=digest.path)
        self.previous = (digest, data)


def _seal_day(writer: _Writer, day: dt.date, rows: list[dict[str, Any]], cutoff: dt.datetime) -> int:
    """Write the closed hours of one day not yet digested and, once the day is closed, its day digest; returns
    the events newly covered. Refuses to sign a chain that does not verify."""
    broken = check_day(day, rows)
    if broken is not None:
        raise IntegrityCheckError(
            f"refusing to sign the audit chain of {day}: seq {broken.seq}: {broken.reason}; run `shironzi audit "
            "verify` and investigate before digesting",
            day=day.isoformat(),
        )
    last = writer.previous[0] if writer.previous and writer.previous[0].day == day else None
    if last is not None and last.kind == "day":
        return 0
    if last is not None and last.last_seq >= 0 and (
        len(rows) <= last.last_seq or rows[last.last_seq]["hash"] != last.chain_head
    ):
        raise IntegrityCheckError(
            f"refusing to sign the audit chain of {day}: it no longer matches its digest {last.path} (events "
            "deleted or rewritten after they were digested); run `shironzi audit verify`",
            day=day.isoformat(),
        )
    last_seq = last.last_seq if last else -1
    head = last.chain_head if last else GENESIS_HASH
    covered = 0
    # highest seq of an event of each hour (rows are in seq order, so the last one of the hour)
    top_of_hour: dict[int, int] = {r["event_time"].hour: r["seq"] for r in rows}
    for hour in range(last.start.hour + 1 if last else 0, 24):
        start = _midnight(day) + hour * HOUR
        if start + HOUR > cutoff:
            return covered
        new_last = max([last_seq, *(seq for h, seq in top_of_hour.items() if h <= hour)])
        new_head = rows[new_last]["hash"] if new_last > last_seq else head
        writer.seal("hour", day, start, start + HOUR, last_seq + 1, new_last, new_head)
        covered += new_last - last_seq
        last_seq, head = new_last, new_head
    if _midnight(day) + DAY <= cutoff:
        writer.seal("day", day, _midnight(day), _midnight(day) + DAY, 0, len(rows) - 1,
                    rows[-1]["hash"] if rows else GENESIS_HASH)
    return covered


def write_digests(
    *, now: dt.datetime | None = None, settings: Settings | None = None, progress: DayProgress | None = None
) -> DigestRun:
    """Digest every closed hour and day not digested yet, resuming after the newest digest (idempotent: a second
    run with nothing newly closed writes nothing). Holds a lock under SHIRONZI_HOME so runs on one host take
    turns; the DAG runs one at a time."""
    settings = settings or get_settings()
    cutoff = (now or utcnow()) - dt.timedelta(seconds=settings.audit_digest_grace_seconds)
    store = digest_store(settings)
    run = DigestRun(root=store.root)
    get_audit_log().flush()  # this process's buffered events count too
    with stage("audit.digest", root=store.root) as summary, \
            file_lock(settings.home / "locks" / "audit-digest.lock", mode="exclusive", timeout=600):
        previous = store.latest()
        writer = _Writer(store, previous)
        run.key_fingerprint = writer.fingerprint
        resume = previous[0].day if previous else None
        if previous and previous[0].kind == "day":
            resume = previous[0].day + dt.timedelta(days=1)
        days = _days_to_digest(resume, cutoff.date())
        if previous and previous[0].kind == "hour" and previous[0].day not in days:
            days = sorted({previous[0].day, *days})  # its remaining (empty) hours and its day digest
        for done, day in enumerate(days, start=1):
            run.events += _seal_day(writer, day, _day_rows([day]).get(day, []), cutoff)
            if progress is not None:
                progress(done, len(days))
        run.written = writer.written
        if writer.previous is not None:
            run.sealed_through = writer.previous[0].end
        summary.rows = run.events
        summary.extra.update(digests=len(run.written), sealed_through=run.sealed_through)
    return run
