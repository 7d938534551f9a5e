"""Tenant encryption keys, one per tenant, and the backends that hold them.

Keys come from the secrets backend chosen by `settings.resolved_secrets_url`:

- `file://DIR`: a local keystore (`DIR/tenant_keys.db`, one SQLite row per tenant) whose entries are
  Fernet-encrypted under a key derived (scrypt) from `settings.master_key`;
- `vault+https://host[:port]/MOUNT`: HashiCorp Vault KV v2 through hvac (token from `VAULT_TOKEN`).

The keys tokenise PII and encrypt the PII table (`shironzi.privacy`). Destroying a tenant's key
(`destroy_key`) crypto-shreds it: its PII table rows stay but can never be read.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any, Protocol
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


class TenantKeystore(Protocol):
    """Where per-tenant secret keys live."""

    def get_or_create_key(self, tenant_id: str) -> bytes:
        """The tenant's key, created on first use; raises KeyDestroyedError once destroyed."""
        ...

    def get_key(self, tenant_id: str) -> bytes:
        """The tenant's existing key; NotFoundError if none, KeyDestroyedError if destroyed."""
        ...

    def destroy_key(self, tenant_id: str) -> None:
        """Destroy the tenant's key for good (crypto-shredding); leaves a tombstone."""
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
    are useless; rotate it for full assurance against those copies.
    """

    FILE_NAME = "tenant_keys.db"
    LEGACY_FILE_NAME = "tenant_keys.json"

    def __init__(self, directory: Path, *, master_key: str) -> None:
        if not master_key:
            raise ConfigurationError("the local keystore needs SHIRONZI_MASTER_KEY")
        self.directory = directory
        self.path = directory / self.FILE_NAME
        self._master_key = master_key.encode()
        self._lock = threading.Lock()
        # scrypt is deliberately slow (~70 ms); the wrapping key it derives depends only on the master key
        # and the salt, so it is derived once per salt. Tenant keys are never cached: a destroyed key must
        # stop working at once, in this process too.
        self._wrapping: dict[bytes, Any] = {}
        self._salt: bytes | None = None
        self._ready = False
        self._local = threading.local()

    def _wrapping_key(self, salt: bytes) -> Any:
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

        if salt not in self._wrapping:
            derived = Scrypt(salt=salt, length=32, n=2**14, r=8, p=1).derive(self._master_key)
            self._wrapping[salt] = fernet_for(derived)
        return self._wrapping[salt]

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
                    "created_at TEXT, destroyed_at TEXT)"
                )
                legacy = self.directory / self.LEGACY_FILE_NAME
                salt = db.execute("SELECT value FROM meta WHERE name = 'salt'").fetchone()
                if salt is None:
                    document = self._legacy_document(legacy)
                    salt_text = document.get("salt") or base64.b64encode(os.urandom(16)).decode()
                    db.execute("INSERT INTO meta VALUES ('salt', ?)", (salt_text,))
                    db.executemany(
                        "INSERT INTO tenant_keys VALUES (?, ?, ?, ?)",
                        [(tid, e.get("wrapped"), e.get("created_at"), e.get("destroyed_at"))
                         for tid, e in sorted(document.get("keys", {}).items())],
                    )
                db.execute("COMMIT")
            if legacy.exists():
                _shred_file(legacy)  # its keys now live in the database (destroyed ones must not linger)
            self._ready = True

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

    def _unwrap(self, db: sqlite3.Connection, tenant_id: str) -> bytes | None:
        row = db.execute(
            "SELECT wrapped, destroyed_at FROM tenant_keys WHERE tenant_id = ?", (tenant_id,)
        ).fetchone()
        if row is None:
            return None
        wrapped, destroyed_at = row
        if destroyed_at:
            raise KeyDestroyedError(
                f"the key of tenant {tenant_id!r} was destroyed at {destroyed_at}: "
                "data encrypted under it is unrecoverable",
                tenant=tenant_id,
            )
        from cryptography.fernet import InvalidToken

        try:
            return bytes(self._wrapping_key(self._salt_bytes(db)).decrypt(wrapped.encode()))
        except InvalidToken as exc:
            raise ConfigurationError(
                f"cannot decrypt tenant {tenant_id!r}'s key: wrong SHIRONZI_MASTER_KEY?", tenant=tenant_id
            ) from exc

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
        wrapped = self._wrapping_key(self._salt_bytes(db)).encrypt(key).decode()
        # One row; a concurrent creator's row wins and both hand out the winner's key.
        db.execute("INSERT OR IGNORE INTO tenant_keys VALUES (?, ?, ?, NULL)", (tenant_id, wrapped, _now_text()))
        winner = self._unwrap(db, tenant_id)
        if winner is None:  # pragma: no cover - the row was just written
            raise ConfigurationError(f"the keystore {self.path} lost tenant {tenant_id!r}'s new key")
        return winner

    def destroy_key(self, tenant_id: str) -> None:
        _check_tenant(tenant_id)
        db = self._connect()
        db.execute(
            "INSERT INTO tenant_keys VALUES (?, NULL, NULL, ?) ON CONFLICT(tenant_id) DO UPDATE SET "
            "wrapped = NULL, destroyed_at = COALESCE(tenant_keys.destroyed_at, excluded.destroyed_at)",
            (tenant_id, _now_text()),
        )
        # Copy the tombstone into the database file and empty the write-ahead log, which held the page with
        # the wrapped key.
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")


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
        self._call("record a key destruction", kv.create_or_update_secret,
                   path=self._path(tenant_id), secret={"destroyed_at": _now_text()}, mount_point=self.mount_point)


def _now_text() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def keystore_for_url(url: str, *, master_key: str) -> TenantKeystore:
    """The keystore behind a secrets URL (`file://...` or `vault+https://host/mount`)."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return LocalKeystore(Path(parsed.path), master_key=master_key)
    if parsed.scheme in ("vault+https", "vault+http"):
        mount = parsed.path.strip("/") or "secret"
        return VaultKeystore(f"{parsed.scheme.removeprefix('vault+')}://{parsed.netloc}", mount_point=mount)
    raise ConfigurationError(
        f"unsupported secrets URL scheme {parsed.scheme!r}: use file:// or vault+https://"
    )


_keystores: dict[str, TenantKeystore] = {}


def get_keystore(settings: Settings | None = None) -> TenantKeystore:
    """The process's keystore for the configured secrets URL."""
    settings = settings or get_settings()
    url = settings.resolved_secrets_url
    store = _keystores.get(url)
    if store is None:
        store = keystore_for_url(url, master_key=settings.master_key.get_secret_value())
        _keystores[url] = store
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
