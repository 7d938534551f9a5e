"""Tenant encryption keys, one per tenant, and the backends that hold them.

Keys come from the secrets backend chosen by `settings.resolved_secrets_url`:

- `file://DIR`: a local keystore (`DIR/tenant_keys.db`, one SQLite row per tenant) whose entries are
  Fernet-encrypted under a key derived (scrypt) from `settings.master_key`;
- `vault+https://host[:port]/MOUNT`: HashiCorp Vault KV v2 through hvac (token from `VAULT_TOKEN`).

The keys tokenise PII and encrypt the PII table (`shironzi.privacy`). Destroying a tenant's key
(`destroy_key`) crypto-shreds it: its PII table rows stay but can never be read.

Two kinds of key per tenant. The tenant key (`get_key`) makes the deterministic tokens (pseudonyms) that
every layer of the lake holds, so it is never rotated: a new one would split each subject into two
pseudonyms. The PII table is encrypted under versioned data keys (`data_keys`), which
`shironzi keys rotate-tenant` replaces (`shironzi.tenancy.key_rotation`); version 0 is the tenant key
itself, which encrypted the PII table before data keys existed. In the local keystore every key is wrapped
under a master key generation (`key_generations`), which `shironzi keys rotate-master` replaces while
reads go on: a process that knows both the old and the new master opens keys of either generation.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any, Protocol, runtime_checkable
from urllib.parse import urlparse

from shironzi.errors import (
    ConfigurationError,
    InvalidInputError,
    KeyDestroyedError,
    NotFoundError,
    ServiceUnavailableError,
)
from shironzi.settings import Settings, get_settings

KEY_BYTES = 32
KEYED_BATCH = 500  # tenants per IN query of a batch read
UNWRAPPED_MEMO_SIZE = 100_000  # wrapped keys whose unwrapping a LocalKeystore remembers (LRU)


class TenantKeystore(Protocol):
    """Where per-tenant secret keys live."""

    def get_or_create_key(self, tenant_id: str) -> bytes:
        """The tenant's key, created on first use; raises KeyDestroyedError once destroyed."""
        ...

    def get_or_create_keys(self, tenant_ids: Sequence[str]) -> dict[str, bytes]:
        """`get_or_create_key` for many tenants at once (a batch that lands thousands of new tenants)."""
        ...

    def get_key(self, tenant_id: str) -> bytes:
        """The tenant's existing key; NotFoundError if none, KeyDestroyedError if destroyed."""
        ...

    def destroy_key(self, tenant_id: str) -> None:
        """Destroy the tenant's key for good (crypto-shredding); leaves a tombstone."""
        ...


@runtime_checkable
class DataKeystore(Protocol):
    """The versioned data keys of the PII table (kept apart from the tenant key, which makes tokens)."""

    def data_keys(self, tenant_id: str) -> list[tuple[int, bytes]]:
        """The tenant's live data keys, newest (the one new rows are encrypted under) first."""
        ...

    def newest_data_keys(self, token_keys: Mapping[str, bytes]) -> dict[str, bytes]:
        """Each tenant's newest data key (`data_keys(t)[0]`) for many tenants: `token_keys` are their tenant keys,
        which the caller (a landing batch) has just read, so they are checked to be live again but not re-read."""
        ...

    def add_data_key(self, tenant_id: str) -> int:
        """Create the next data key version, which becomes the newest; returns its version."""
        ...

    def retire_data_keys(self, tenant_id: str, *, keep: int) -> list[int]:
        """Destroy every data key version but `keep`; returns the versions destroyed."""
        ...


def _check_tenant(tenant_id: str) -> str:
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise InvalidInputError("a tenant id is required", field="tenant_id")
    return tenant_id


def fernet_for(key: bytes) -> Any:
    """A Fernet cipher under a 32-byte key (tenant keys, and the wrapping key of the local keystore)."""
    from cryptography.fernet import Fernet

    return Fernet(base64.urlsafe_b64encode(key))


class LocalKeystore:
    """Tenant keys under SHIRONZI_HOME, one SQLite row per tenant (`tenant_keys.db`), each key
    Fernet-encrypted under a wrapping key derived (scrypt) from the master key.

    Issuing a key inserts one row: the 100,000th key costs what the first did (the JSON keystore it replaces
    was rewritten whole on every new key, and is migrated on first use). Destroying a key overwrites its row
    with a tombstone; `secure_delete` zeroes the freed bytes in the database file, and the write-ahead log
    that held the old page is checkpointed and truncated to zero bytes at once. What may remain: filesystem
    blocks of that truncated log (and of the migrated JSON file, which is zeroed before it is removed) until
    the disk reuses them, and backups taken before the destroy. Without the master key the wrapped bytes
    are useless; rotate it (`shironzi keys rotate-master`) for full assurance against those copies.

    Each row records the master key generation it is wrapped under. A generation is a salt plus a check
    token (a known text encrypted under its wrapping key), so a process recognises which of the masters it
    was given (`master_key`, then `previous_master_keys`) opens which generation. New keys are wrapped under
    the generation of `master_key` once it has one (a rotation creates it), else under the newest
    generation a given master opens.
    """

    FILE_NAME = "tenant_keys.db"
    LEGACY_FILE_NAME = "tenant_keys.json"
    CHECK_TEXT = b"shironzi master key check"
    KEY_TABLES = ("tenant_keys", "tenant_data_keys")

    def __init__(self, directory: Path, *, master_key: str, previous_master_keys: Sequence[str] = ()) -> None:
        if not master_key:
            raise ConfigurationError("the local keystore needs SHIRONZI_MASTER_KEY")
        self.directory = directory
        self.path = directory / self.FILE_NAME
        self._master_key = master_key.encode()
        self._previous = [m.encode() for m in previous_master_keys if m and m != master_key]
        self._lock = threading.Lock()
        # scrypt is deliberately slow (~70 ms); the wrapping key it derives depends only on the master key
        # and the salt, so it is derived once per (master, salt). Tenant keys are never cached: a destroyed
        # key must stop working at once, in this process too, so every use reads the key's row. Only the
        # unwrapping of a row's wrapped bytes is remembered (`_unwrapped`: the same generation and wrapped
        # text always open to the same key); a destroyed row has no wrapped text, so it never reaches the memo.
        self._wrapping: dict[tuple[bytes, bytes], Any] = {}
        self._unwrapped: OrderedDict[tuple[int, str], bytes] = OrderedDict()
        self._generations: dict[int, Any] = {}  # generation -> the wrapping cipher that opens it
        self._salt: bytes | None = None
        self._ready = False
        self._local = threading.local()

    @property
    def _masters(self) -> list[bytes]:
        return [self._master_key, *self._previous]

    def _wrapping_key(self, salt: bytes, master: bytes | None = None) -> Any:
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

        master = self._master_key if master is None else master
        if (master, salt) not in self._wrapping:
            derived = Scrypt(salt=salt, length=32, n=2**14, r=8, p=1).derive(master)
            self._wrapping[(master, salt)] = fernet_for(derived)
        return self._wrapping[(master, salt)]

    def _connect(self) -> sqlite3.Connection:
        """This thread's connection, kept open: closing the last one checkpoints the log (an fsync)."""
        if not self._ready:
            self._prepare()
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._open()
        return connection

    def _open(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            connection.execute("PRAGMA secure_delete = ON")
            connection.execute("PRAGMA synchronous = NORMAL")  # with WAL: durable at checkpoints, never corrupt
        except sqlite3.Error as exc:
            raise ConfigurationError(f"the keystore {self.path} is unreadable: {exc}") from exc
        return connection

    def _prepare(self) -> None:
        """Create the database (owner-only) and migrate a JSON keystore left by an older version, once."""
        with self._lock:
            if self._ready:
                return
            self.directory.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
            with closing(self._open()) as db:
                db.execute("PRAGMA journal_mode = WAL")
                db.execute("BEGIN IMMEDIATE")
                db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
                db.execute(
                    "CREATE TABLE IF NOT EXISTS tenant_keys (tenant_id TEXT PRIMARY KEY, wrapped TEXT, "
                    "created_at TEXT, destroyed_at TEXT, generation INTEGER NOT NULL DEFAULT 0)"
                )
                legacy = self.directory / self.LEGACY_FILE_NAME
                salt = db.execute("SELECT value FROM meta WHERE name = 'salt'").fetchone()
                if salt is None:
                    document = self._legacy_document(legacy)
                    salt_text = document.get("salt") or base64.b64encode(os.urandom(16)).decode()
                    db.execute("INSERT INTO meta VALUES ('salt', ?)", (salt_text,))
                    db.executemany(
                        "INSERT INTO tenant_keys (tenant_id, wrapped, created_at, destroyed_at) VALUES (?, ?, ?, ?)",
                        [(tid, e.get("wrapped"), e.get("created_at"), e.get("destroyed_at"))
                         for tid, e in sorted(document.get("keys", {}).items())],
                    )
                self._migrate_generations(db)
                db.execute("COMMIT")
            if legacy.exists():
                _shred_file(legacy)  # its keys now live in the database (destroyed ones must not linger)
            self._ready = True

    def _migrate_generations(self, db: sqlite3.Connection) -> None:
        """Add what master rotation needs to a keystore made before it: a generation per row (0: the salt
        of `meta`), the generations table, and the data keys table."""
        columns = {row[1] for row in db.execute("PRAGMA table_info(tenant_keys)")}
        if "generation" not in columns:
            db.execute("ALTER TABLE tenant_keys ADD COLUMN generation INTEGER NOT NULL DEFAULT 0")
        db.execute(
            "CREATE TABLE IF NOT EXISTS key_generations (generation INTEGER PRIMARY KEY, salt TEXT NOT NULL, "
            "check_token TEXT, created_at TEXT)"
        )
        db.execute(
            "CREATE TABLE IF NOT EXISTS tenant_data_keys (tenant_id TEXT NOT NULL, version INTEGER NOT NULL, "
            "wrapped TEXT, generation INTEGER NOT NULL DEFAULT 0, created_at TEXT, destroyed_at TEXT, "
            "PRIMARY KEY (tenant_id, version))"
        )
        salt_text = db.execute("SELECT value FROM meta WHERE name = 'salt'").fetchone()[0]
        db.execute("INSERT OR IGNORE INTO key_generations VALUES (0, ?, NULL, ?)", (salt_text, _now_text()))
        check = db.execute("SELECT check_token FROM key_generations WHERE generation = 0").fetchone()[0]
        if check is None:  # generation 0 of an older keystore: learn its master from a row it opens
            sample = db.execute(
                "SELECT wrapped FROM tenant_keys WHERE wrapped IS NOT NULL AND generation = 0 LIMIT 1"
            ).fetchone()
            opener = self._master_opening(base64.b64decode(salt_text), sample[0] if sample else None)
            if opener is not None:
                db.execute(
                    "UPDATE key_generations SET check_token = ? WHERE generation = 0",
                    (opener.encrypt(self.CHECK_TEXT).decode(),),
                )

    def _master_opening(self, salt: bytes, wrapped: str | None) -> Any:
        """The wrapping cipher (of one of the given masters) that decrypts `wrapped`; the current master's
        when there is nothing to try."""
        from cryptography.fernet import InvalidToken

        if wrapped is None:
            return self._wrapping_key(salt)
        for master in self._masters:
            cipher = self._wrapping_key(salt, master)
            try:
                cipher.decrypt(wrapped.encode())
                return cipher
            except InvalidToken:
                continue
        return None

    def _legacy_document(self, legacy: Path) -> dict[str, Any]:
        if not legacy.exists():
            return {}
        try:
            document: dict[str, Any] = json.loads(legacy.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"the keystore {legacy} is unreadable: {exc}") from exc
        return document

    def _salt_bytes(self, db: sqlite3.Connection) -> bytes:
        if self._salt is None:
            self._salt = base64.b64decode(db.execute("SELECT value FROM meta WHERE name = 'salt'").fetchone()[0])
        return self._salt

    # --- master key generations -------------------------------------------------------------------------

    def _opener(self, db: sqlite3.Connection, generation: int) -> Any:
        """The cipher of the given master that opens `generation`, or None when none of them does."""
        from cryptography.fernet import InvalidToken

        if generation in self._generations:
            return self._generations[generation]
        row = db.execute(
            "SELECT salt, check_token FROM key_generations WHERE generation = ?", (generation,)
        ).fetchone()
        if row is None:
            return None
        salt = base64.b64decode(row[0])
        if row[1] is None:  # an older keystore none of whose rows opened: the current master, as before
            return self._wrapping_key(salt)
        for master in self._masters:
            cipher = self._wrapping_key(salt, master)
            try:
                if cipher.decrypt(row[1].encode()) == self.CHECK_TEXT:
                    self._generations[generation] = cipher
                    return cipher
            except InvalidToken:
                continue
        return None

    def _current_generation(self, db: sqlite3.Connection) -> tuple[int, Any]:
        """The generation new keys are wrapped under: the current master's, else the newest one opened."""
        known = [g for (g,) in db.execute("SELECT generation FROM key_generations ORDER BY generation DESC")]
        opened = [(g, c) for g in known if (c := self._opener(db, g)) is not None]
        for generation, cipher in opened:
            if cipher is self._wrapping_key(self._salt_of(db, generation)):
                return generation, cipher
        if opened:
            return opened[0]
        raise ConfigurationError(
            f"SHIRONZI_MASTER_KEY opens no key generation of the keystore {self.path}: wrong master key? "
            "(during a master rotation, set SHIRONZI_PREVIOUS_MASTER_KEY to the retiring one)"
        )

    def _salt_of(self, db: sqlite3.Connection, generation: int) -> bytes:
        return base64.b64decode(
            db.execute("SELECT salt FROM key_generations WHERE generation = ?", (generation,)).fetchone()[0]
        )

    def _open_wrapped(self, db: sqlite3.Connection, wrapped: str, generation: int, tenant_id: str) -> bytes:
        """The key in a row's wrapped text; each distinct (generation, wrapped) is decrypted once per process
        while the memo holds it (a stream batch over 90,000 tenants decrypted every tenant's key again)."""
        memo = (generation, wrapped)
        with self._lock:
            key = self._unwrapped.get(memo)
            if key is not None:
                self._unwrapped.move_to_end(memo)
                return key
        key = self._decrypt_wrapped(db, wrapped, generation, tenant_id)
        self._remember_unwrapped([(generation, wrapped, key)])
        return key

    def _remember_unwrapped(self, opened: Sequence[tuple[int, str, bytes]]) -> None:
        """Put (generation, wrapped text) -> key in the memo: a key just unwrapped, or one this process just
        wrapped (a new tenant's key is not decrypted again right after it was encrypted)."""
        with self._lock:
            for generation, wrapped, key in opened:
                self._unwrapped[(generation, wrapped)] = key
            while len(self._unwrapped) > UNWRAPPED_MEMO_SIZE:
                self._unwrapped.popitem(last=False)

    def _decrypt_wrapped(self, db: sqlite3.Connection, wrapped: str, generation: int, tenant_id: str) -> bytes:
        from cryptography.fernet import InvalidToken

        cipher = self._opener(db, generation)
        if cipher is None:
            raise ConfigurationError(
                f"cannot decrypt tenant {tenant_id!r}'s key: it is wrapped under master generation {generation}, "
                "which no configured master opens (wrong SHIRONZI_MASTER_KEY, or SHIRONZI_PREVIOUS_MASTER_KEY "
                "missing during a rotation?)",
                tenant=tenant_id,
            )
        try:
            return bytes(cipher.decrypt(wrapped.encode()))
        except InvalidToken as exc:
            raise ConfigurationError(
                f"cannot decrypt tenant {tenant_id!r}'s key: wrong SHIRONZI_MASTER_KEY?", tenant=tenant_id
            ) from exc

    def begin_master_rotation(self) -> int:
        """The generation of the current master, created (a new salt and check token) if it has none yet;
        every other generation must be opened by one of the previous masters, or nothing is changed."""
        db = self._connect()
        with _immediate(db):
            rows = db.execute(
                "SELECT generation, COUNT(*) FROM (SELECT generation FROM tenant_keys WHERE wrapped IS NOT NULL "
                "UNION ALL SELECT generation FROM tenant_data_keys WHERE wrapped IS NOT NULL) GROUP BY generation"
            ).fetchall()
            unopened = {g: n for g, n in rows if self._opener(db, g) is None}
            if unopened:
                raise ConfigurationError(
                    f"keys wrapped under master generation(s) {sorted(unopened)} ({sum(unopened.values())} "
                    "key(s)) are opened by none of the configured masters: set SHIRONZI_PREVIOUS_MASTER_KEY "
                    "to the retiring master key; nothing was changed"
                )
            known = [g for (g,) in db.execute("SELECT generation FROM key_generations ORDER BY generation")]
            for generation in known:
                if self._opener(db, generation) is self._wrapping_key(self._salt_of(db, generation)):
                    return generation
            generation = known[-1] + 1
            salt = os.urandom(16)
            check = self._wrapping_key(salt).encrypt(self.CHECK_TEXT).decode()
            db.execute(
                "INSERT INTO key_generations VALUES (?, ?, ?, ?)",
                (generation, base64.b64encode(salt).decode(), check, _now_text()),
            )
            return generation

    def keys_to_rewrap(self, target: int) -> int:
        """How many live keys (tenant and data keys) are not yet wrapped under generation `target`."""
        db = self._connect()
        return int(sum(
            db.execute(f"SELECT COUNT(*) FROM {table} WHERE wrapped IS NOT NULL AND generation != ?",
                       (target,)).fetchone()[0]
            for table in self.KEY_TABLES
        ))

    def rewrap_batch(self, target: int, *, limit: int) -> int:
        """Re-wrap up to `limit` keys under generation `target` in one transaction; returns how many.

        Each row is replaced only if it is unchanged since it was read (a key destroyed meanwhile stays
        destroyed), and a crash leaves every row wrapped under either generation, so readable."""
        db = self._connect()
        cipher = self._opener(db, target)
        if cipher is None:
            raise ConfigurationError(f"no configured master opens the target generation {target}")
        done = 0
        with _immediate(db):
            for table, key_columns in (("tenant_keys", "tenant_id"), ("tenant_data_keys", "tenant_id, version")):
                rows = db.execute(
                    f"SELECT {key_columns}, wrapped, generation FROM {table} "
                    "WHERE wrapped IS NOT NULL AND generation != ? ORDER BY " + key_columns + " LIMIT ?",
                    (target, limit - done),
                ).fetchall()
                where = " AND ".join(f"{c.strip()} = ?" for c in key_columns.split(","))
                for *ids, wrapped, generation in rows:
                    key = self._open_wrapped(db, wrapped, generation, ids[0])
                    db.execute(
                        f"UPDATE {table} SET wrapped = ?, generation = ? WHERE {where} AND wrapped = ?",
                        (cipher.encrypt(key).decode(), target, *ids, wrapped),
                    )
                done += len(rows)
        return done

    def retire_generations(self, *, keep: int) -> list[int]:
        """Forget the generations no key is wrapped under any more (but `keep`); a process that only knows
        a retired master then fails clearly instead of wrapping new keys under it."""
        db = self._connect()
        with _immediate(db):
            used = {g for table in self.KEY_TABLES
                    for (g,) in db.execute(f"SELECT DISTINCT generation FROM {table} WHERE wrapped IS NOT NULL")}
            retired = [g for (g,) in db.execute("SELECT generation FROM key_generations")
                       if g != keep and g not in used]
            db.executemany("DELETE FROM key_generations WHERE generation = ?", [(g,) for g in retired])
        for generation in retired:
            self._generations.pop(generation, None)
        return retired

    def generation_counts(self) -> dict[int, int]:
        """Live keys per master generation (tenant and data keys together)."""
        db = self._connect()
        counts: dict[int, int] = {}
        for table in self.KEY_TABLES:
            for generation, n in db.execute(
                f"SELECT generation, COUNT(*) FROM {table} WHERE wrapped IS NOT NULL GROUP BY generation"
            ):
                counts[generation] = counts.get(generation, 0) + n
        return counts

    # --- tenant keys ------------------------------------------------------------------------------------

    def _unwrap(self, db: sqlite3.Connection, tenant_id: str) -> bytes | None:
        return self._unwrap_many(db, [tenant_id]).get(tenant_id)

    def _unwrap_many(self, db: sqlite3.Connection, tenant_ids: Sequence[str]) -> dict[str, bytes]:
        """The keys of those of `tenant_ids` that have one, read KEYED_BATCH per indexed query (a landing batch over
        90,000 tenants made one query each); a destroyed key raises KeyDestroyedError."""
        found: dict[str, bytes] = {}
        for start in range(0, len(tenant_ids), KEYED_BATCH):
            batch = tenant_ids[start:start + KEYED_BATCH]
            rows = db.execute(
                f"SELECT tenant_id, wrapped, destroyed_at, generation FROM tenant_keys "
                f"WHERE tenant_id IN ({', '.join('?' * len(batch))})", batch).fetchall()
            for tenant_id, wrapped, destroyed_at, generation in sorted(rows):
                if destroyed_at:
                    raise KeyDestroyedError(
                        f"the key of tenant {tenant_id!r} was destroyed at {destroyed_at}: "
                        "data encrypted under it is unrecoverable",
                        tenant=tenant_id,
                    )
                found[tenant_id] = self._open_wrapped(db, wrapped, generation, tenant_id)
        return found

    def get_key(self, tenant_id: str) -> bytes:
        _check_tenant(tenant_id)
        key = self._unwrap(self._connect(), tenant_id)
        if key is None:
            raise NotFoundError(f"tenant {tenant_id!r} has no encryption key", tenant=tenant_id)
        return key

    def get_or_create_key(self, tenant_id: str) -> bytes:
        _check_tenant(tenant_id)
        db = self._connect()
        existing = self._unwrap(db, tenant_id)
        if existing is not None:
            return existing
        key = os.urandom(KEY_BYTES)
        generation, cipher = self._current_generation(db)
        wrapped = cipher.encrypt(key).decode()
        # One row; a concurrent creator's row wins and both hand out the winner's key (read from its row: the
        # memo entry of a wrapped text that lost is never looked up, and ages out).
        db.execute("INSERT OR IGNORE INTO tenant_keys VALUES (?, ?, ?, NULL, ?)",
                   (tenant_id, wrapped, _now_text(), generation))
        self._remember_unwrapped([(generation, wrapped, key)])
        winner = self._unwrap(db, tenant_id)
        if winner is None:  # pragma: no cover - the row was just written
            raise ConfigurationError(f"the keystore {self.path} lost tenant {tenant_id!r}'s new key")
        return winner

    def get_or_create_keys(self, tenant_ids: Sequence[str]) -> dict[str, bytes]:
        """Many tenants' keys, the missing ones created in ONE write transaction: landing a batch for 100,000 new
        tenants costs one keystore commit, not one per tenant."""
        wanted = [_check_tenant(t) for t in dict.fromkeys(tenant_ids)]
        db = self._connect()
        found = self._unwrap_many(db, wanted)
        missing = [t for t in wanted if t not in found]
        if missing:
            generation, cipher = self._current_generation(db)
            now = _now_text()
            keys = [os.urandom(KEY_BYTES) for _ in missing]
            created = [(generation, cipher.encrypt(key).decode(), key) for key in keys]
            rows = [(t, wrapped, now, generation) for t, (_, wrapped, _) in zip(missing, created, strict=True)]
            with _immediate(db):  # a concurrent creator's rows win, as in get_or_create_key
                db.executemany("INSERT OR IGNORE INTO tenant_keys VALUES (?, ?, ?, NULL, ?)", rows)
            self._remember_unwrapped(created)  # the rows are read back below, but not decrypted again
            winners = self._unwrap_many(db, missing)
            if len(winners) != len(missing):  # pragma: no cover - the rows were just written
                lost = next(t for t in missing if t not in winners)
                raise ConfigurationError(f"the keystore {self.path} lost tenant {lost!r}'s new key")
            found.update(winners)
        return {t: found[t] for t in wanted}

    def destroy_key(self, tenant_id: str) -> None:
        _check_tenant(tenant_id)
        db = self._connect()
        now = _now_text()
        with _immediate(db):
            self._forget_unwrapped(db, tenant_id)
            db.execute(
                "INSERT INTO tenant_keys VALUES (?, NULL, NULL, ?, 0) ON CONFLICT(tenant_id) DO UPDATE SET "
                "wrapped = NULL, destroyed_at = COALESCE(tenant_keys.destroyed_at, excluded.destroyed_at)",
                (tenant_id, now),
            )
            db.execute(  # its data keys go with it: the PII table must become unreadable
                "UPDATE tenant_data_keys SET wrapped = NULL, destroyed_at = COALESCE(destroyed_at, ?) "
                "WHERE tenant_id = ?",
                (now, tenant_id),
            )
        # Copy the tombstone into the database file and empty the write-ahead log, which held the page with
        # the wrapped key.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def _forget_unwrapped(self, db: sqlite3.Connection, tenant_id: str, *, keep: int | None = None) -> None:
        """Drop from this process's memo the keys of the tenant about to be destroyed (all of them), or its data
        keys about to be retired (all but version `keep`; version 0, the tenant key, stays)."""
        rows = db.execute(
            "SELECT generation, wrapped FROM tenant_data_keys WHERE tenant_id = ? AND wrapped IS NOT NULL "
            "AND version != ?", (tenant_id, -1 if keep is None else keep)).fetchall()
        if keep is None:
            rows += db.execute("SELECT generation, wrapped FROM tenant_keys WHERE tenant_id = ? AND wrapped IS NOT "
                               "NULL", (tenant_id,)).fetchall()
        with self._lock:
            for generation, wrapped in rows:
                self._unwrapped.pop((generation, wrapped), None)

    # --- data keys --------------------------------------------------------------------------------------

    def data_keys(self, tenant_id: str) -> list[tuple[int, bytes]]:
        token_key = self.get_key(tenant_id)  # NotFound / KeyDestroyed first: data keys die with it
        db = self._connect()
        rows = db.execute(
            "SELECT version, wrapped, generation FROM tenant_data_keys WHERE tenant_id = ? ORDER BY version DESC",
            (tenant_id,),
        ).fetchall()
        live = [(v, self._open_wrapped(db, w, g, tenant_id)) for v, w, g in rows if w is not None and v > 0]
        if not any(v == 0 for v, _, _ in rows):  # version 0 (the tenant key) is live until retired
            live.append((0, token_key))
        return live

    def newest_data_keys(self, token_keys: Mapping[str, bytes]) -> dict[str, bytes]:
        """Two indexed queries per KEYED_BATCH tenants, and an unwrap only for the tenants with a rotated data key:
        a stream batch over 40,000 tenants read each one's data keys with a query and an unwrap of its own."""
        wanted = sorted(token_keys)
        db = self._connect()
        newest: dict[str, bytes] = {}
        for start in range(0, len(wanted), KEYED_BATCH):
            batch = wanted[start:start + KEYED_BATCH]
            marks = ", ".join("?" * len(batch))
            state = dict(db.execute(
                f"SELECT tenant_id, destroyed_at FROM tenant_keys WHERE tenant_id IN ({marks})", batch).fetchall())
            rotated: dict[str, tuple[str, int]] = {}
            retired: set[str] = set()
            for tenant_id, version, wrapped, generation in db.execute(
                f"SELECT tenant_id, version, wrapped, generation FROM tenant_data_keys WHERE tenant_id IN ({marks}) "
                "ORDER BY tenant_id, version DESC", batch):
                if version == 0:
                    retired.add(tenant_id)
                elif wrapped is not None and tenant_id not in rotated:
                    rotated[tenant_id] = (wrapped, generation)
            for tenant_id in batch:
                if tenant_id not in state:
                    raise NotFoundError(f"tenant {tenant_id!r} has no encryption key", tenant=tenant_id)
                if state[tenant_id]:
                    raise KeyDestroyedError(f"the key of tenant {tenant_id!r} was destroyed at {state[tenant_id]}",
                                            tenant=tenant_id)
                if tenant_id in rotated:
                    newest[tenant_id] = self._open_wrapped(db, *rotated[tenant_id], tenant_id)
                elif tenant_id not in retired:
                    newest[tenant_id] = token_keys[tenant_id]
                else:
                    raise KeyDestroyedError(f"tenant {tenant_id!r} has no live data key", tenant=tenant_id)
        return newest

    def add_data_key(self, tenant_id: str) -> int:
        self.get_key(tenant_id)
        db = self._connect()
        generation, cipher = self._current_generation(db)
        with _immediate(db):
            version = db.execute(
                "SELECT COALESCE(MAX(version), 0) + 1 FROM tenant_data_keys WHERE tenant_id = ?", (tenant_id,)
            ).fetchone()[0]
            db.execute(
                "INSERT INTO tenant_data_keys VALUES (?, ?, ?, ?, ?, NULL)",
                (tenant_id, version, cipher.encrypt(os.urandom(KEY_BYTES)).decode(), generation, _now_text()),
            )
        return int(version)

    def retire_data_keys(self, tenant_id: str, *, keep: int) -> list[int]:
        db = self._connect()
        live = [v for v, _ in self.data_keys(tenant_id) if v != keep]
        now = _now_text()
        with _immediate(db):
            self._forget_unwrapped(db, tenant_id, keep=keep)
            db.execute(  # version 0 is the tenant key, which stays (tokens): its tombstone only ends its data role
                "INSERT OR IGNORE INTO tenant_data_keys VALUES (?, 0, NULL, 0, NULL, ?)", (tenant_id, now)
            )
            db.execute(
                "UPDATE tenant_data_keys SET wrapped = NULL, destroyed_at = COALESCE(destroyed_at, ?) "
                "WHERE tenant_id = ? AND version != ?",
                (now, tenant_id, keep),
            )
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return live


@contextmanager
def _immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (taken at once, so two writers queue instead of failing to upgrade)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _shred_file(path: Path) -> None:
    """Overwrite a file with zeros, flush it to disk, then remove it."""
    size = path.stat().st_size
    with open(path, "r+b") as handle:
        handle.write(b"\0" * size)
        handle.flush()
        os.fsync(handle.fileno())
    path.unlink()


class VaultKeystore:
    """Tenant keys in HashiCorp Vault's KV v2 engine (path `shironzi/tenant-keys/<tenant>`), via hvac."""

    def __init__(self, url: str, *, mount_point: str = "secret", token: str | None = None) -> None:
        try:
            import hvac
        except ImportError as exc:  # pragma: no cover - optional dependency
            raise ConfigurationError(
                "SHIRONZI_SECRETS_URL points at Vault but hvac is not installed"
            ) from exc
        self.client = hvac.Client(url=url, token=token)  # token None: hvac reads VAULT_TOKEN
        self.mount_point = mount_point

    def _path(self, tenant_id: str) -> str:
        return f"shironzi/tenant-keys/{_check_tenant(tenant_id)}"

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        """One Vault request; an unreachable or refusing Vault is one clear error, never a library traceback."""
        import requests
        from hvac.exceptions import InvalidPath, VaultError

        try:
            return fn(**kwargs)
        except InvalidPath:
            raise
        except (requests.RequestException, VaultError) as exc:
            raise ServiceUnavailableError(
                f"Vault at {self.client.url} could not {what}: {type(exc).__name__}: {exc}"
            ) from exc

    def _read(self, tenant_id: str) -> dict[str, Any] | None:
        from hvac.exceptions import InvalidPath

        try:
            response = self._call(
                "read a tenant key", self.client.secrets.kv.v2.read_secret_version,
                path=self._path(tenant_id), mount_point=self.mount_point, raise_on_deleted_version=True,
            )
        except InvalidPath:
            return None
        data: dict[str, Any] = response["data"]["data"]
        if data.get("destroyed_at"):
            raise KeyDestroyedError(f"the key of tenant {tenant_id!r} was destroyed", tenant=tenant_id)
        return data

    def get_key(self, tenant_id: str) -> bytes:
        data = self._read(tenant_id)
        if data is None:
            raise NotFoundError(f"tenant {tenant_id!r} has no encryption key", tenant=tenant_id)
        return base64.b64decode(data["key"])

    def get_or_create_keys(self, tenant_ids: Sequence[str]) -> dict[str, bytes]:
        """One KV read (and a check-and-set create when absent) per tenant: Vault has no batch write."""
        return {t: self.get_or_create_key(t) for t in dict.fromkeys(tenant_ids)}

    def get_or_create_key(self, tenant_id: str) -> bytes:
        data = self._read(tenant_id)
        if data is not None:
            return base64.b64decode(data["key"])
        key = os.urandom(KEY_BYTES)
        # cas=0: only create if absent, so two creators cannot hand out different keys.
        try:
            self.client.secrets.kv.v2.create_or_update_secret(
                path=self._path(tenant_id),
                secret={"key": base64.b64encode(key).decode(), "created_at": _now_text()},
                cas=0,
                mount_point=self.mount_point,
            )
        except Exception:  # noqa: BLE001 - lost the create race: read the winner's key
            return self.get_key(tenant_id)
        return key

    def destroy_key(self, tenant_id: str) -> None:
        kv = self.client.secrets.kv.v2
        self._call("destroy a tenant key", kv.delete_metadata_and_all_versions,
                   path=self._path(tenant_id), mount_point=self.mount_point)
        self._call("destroy a tenant's data keys", kv.delete_metadata_and_all_versions,
                   path=self._data_path(tenant_id), mount_point=self.mount_point)
        self._call("record a key destruction", kv.create_or_update_secret,
                   path=self._path(tenant_id), secret={"destroyed_at": _now_text()}, mount_point=self.mount_point)

    # Data keys: one KV v2 secret per tenant, `{"keys": {version: key}, "token_key_retired": bool}`, written
    # with check-and-set; retiring a version also destroys the older KV versions that still held it.

    def _data_path(self, tenant_id: str) -> str:
        return f"shironzi/tenant-data-keys/{_check_tenant(tenant_id)}"

    def _read_data_keys(self, tenant_id: str) -> tuple[dict[str, Any], int]:
        """The tenant's data keys secret and its KV version (0 when it does not exist yet)."""
        from hvac.exceptions import InvalidPath

        try:
            response = self._call(
                "read a tenant's data keys", self.client.secrets.kv.v2.read_secret_version,
                path=self._data_path(tenant_id), mount_point=self.mount_point, raise_on_deleted_version=True,
            )
        except InvalidPath:
            return {"keys": {}, "token_key_retired": False}, 0
        return response["data"]["data"], int(response["data"]["metadata"]["version"])

    def _write_data_keys(self, tenant_id: str, data: dict[str, Any], *, cas: int) -> int:
        response = self._call(
            "write a tenant's data keys", self.client.secrets.kv.v2.create_or_update_secret,
            path=self._data_path(tenant_id), secret=data, cas=cas, mount_point=self.mount_point,
        )
        return int(response["data"]["version"])

    def data_keys(self, tenant_id: str) -> list[tuple[int, bytes]]:
        token_key = self.get_key(tenant_id)
        data, _ = self._read_data_keys(tenant_id)
        live = sorted(((int(v), base64.b64decode(k)) for v, k in data["keys"].items()), reverse=True)
        return live if data.get("token_key_retired") else [*live, (0, token_key)]

    def newest_data_keys(self, token_keys: Mapping[str, bytes]) -> dict[str, bytes]:
        """One KV read per tenant: Vault has no batch read."""
        return {t: self.data_keys(t)[0][1] for t in token_keys}

    def add_data_key(self, tenant_id: str) -> int:
        self.get_key(tenant_id)
        data, kv_version = self._read_data_keys(tenant_id)
        version = max((int(v) for v in data["keys"]), default=0) + 1
        keys = {**data["keys"], str(version): base64.b64encode(os.urandom(KEY_BYTES)).decode()}
        self._write_data_keys(tenant_id, {**data, "keys": keys}, cas=kv_version)
        return version

    def retire_data_keys(self, tenant_id: str, *, keep: int) -> list[int]:
        data, kv_version = self._read_data_keys(tenant_id)
        retired = [int(v) for v in data["keys"] if int(v) != keep]
        retired += [] if data.get("token_key_retired") else [0]
        kept = {v: k for v, k in data["keys"].items() if int(v) == keep}
        written = self._write_data_keys(tenant_id, {"keys": kept, "token_key_retired": True}, cas=kv_version)
        if written > 1:  # KV v2 keeps old versions: destroy those that held the retired keys
            self._call("destroy old data key versions", self.client.secrets.kv.v2.destroy_secret_versions,
                       path=self._data_path(tenant_id), versions=list(range(1, written)),
                       mount_point=self.mount_point)
        return sorted(retired, reverse=True)


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def keystore_for_url(url: str, *, master_key: str, previous_master_keys: Sequence[str] = ()) -> TenantKeystore:
    """The keystore behind a secrets URL (`file://...` or `vault+https://host/mount`)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalKeystore(Path(parsed.path), master_key=master_key, previous_master_keys=previous_master_keys)
    if parsed.scheme in ("vault+https", "vault+http"):
        mount = parsed.path.strip("/") or "secret"
        return VaultKeystore(f"{parsed.scheme.removeprefix('vault+')}://{parsed.netloc}", mount_point=mount)
    raise ConfigurationError(
        f"unsupported secrets URL scheme {parsed.scheme!r}: use file:// or vault+https://"
    )


_keystores: dict[tuple[str, str, str], TenantKeystore] = {}


def get_keystore(settings: Settings | None = None) -> TenantKeystore:
    """The process's keystore for the configured secrets URL."""
    settings = settings or get_settings()
    url = settings.resolved_secrets_url
    master = settings.master_key.get_secret_value()
    previous = settings.previous_master_key.get_secret_value() if settings.previous_master_key else ""
    store = _keystores.get((url, master, previous))  # a new master (a rotation) is a new keystore
    if store is None:
        store = keystore_for_url(url, master_key=master, previous_master_keys=[previous] if previous else [])
        _keystores[(url, master, previous)] = store
    return store


# --- platform keys (the audit digest signing key) ----------------------------------------------------------

PLATFORM_KEY_PREFIX = "platform:"
"""Local keystore rows of platform keys: a tenant id never holds ':' (`t_` + base32), so they cannot collide."""

VAULT_PLATFORM_KEY_PATH = "shironzi/platform-keys"
"""Vault KV v2 path of platform keys, apart from `shironzi/tenant-keys` so that a policy can grant one and not
the other (the audit digest signer reads only `shironzi/platform-keys/audit-digest-signing`)."""


def _check_platform_key_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or "/" in name:
        raise InvalidInputError(f"not a platform key name: {name!r}", field="name")
    return name


def _vault_platform_key(store: VaultKeystore, name: str, *, create: bool) -> bytes:
    """Read (and on first use create, check-and-set so two creators agree) a platform key in Vault."""
    from hvac.exceptions import InvalidPath

    kv, path = store.client.secrets.kv.v2, f"{VAULT_PLATFORM_KEY_PATH}/{name}"
    try:
        response = store._call("read a platform key", kv.read_secret_version, path=path,
                               mount_point=store.mount_point, raise_on_deleted_version=True)
        return base64.b64decode(response["data"]["data"]["key"])
    except InvalidPath:
        if not create:
            raise NotFoundError(f"Vault holds no platform key {name!r} at {path}") from None
    secret = {"key": base64.b64encode(os.urandom(KEY_BYTES)).decode(), "created_at": _now_text()}
    # A refused check-and-set means another creator won (an unreachable Vault already failed the read above).
    with contextlib.suppress(ServiceUnavailableError):
        store._call("create a platform key", kv.create_or_update_secret, path=path, secret=secret, cas=0,
                    mount_point=store.mount_point)
    return _vault_platform_key(store, name, create=False)  # whoever won the check-and-set


def platform_key(name: str, *, create: bool = True, settings: Settings | None = None) -> bytes:
    """A 32-byte platform secret held by the secrets backend, never in the lake: the Ed25519 seed that signs the
    audit digests. The local keystore keeps it as a reserved row beside the tenant keys (wrapped under the master
    key, so a master-key rotation re-wraps it with them); Vault at `shironzi/platform-keys/<name>`.
    `create=False` raises NotFoundError instead of creating one (verification must change nothing)."""
    _check_platform_key_name(name)
    store = get_keystore(settings)
    if isinstance(store, VaultKeystore):
        return _vault_platform_key(store, name, create=create)
    row = f"{PLATFORM_KEY_PREFIX}{name}"
    if create:
        return store.get_or_create_key(row)
    try:
        return store.get_key(row)
    except NotFoundError:
        raise NotFoundError(f"the keystore holds no platform key {name!r}") from None
