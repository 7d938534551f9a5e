"""Tenant encryption keys, one per tenant, and the backends that hold them.

Keys come from the secrets backend chosen by `settings.resolved_secrets_url`:

- `file://DIR`: a local keystore (`DIR/tenant_keys.json`) whose entries are Fernet-encrypted under a key
  derived (scrypt) from `settings.master_key`;
- `vault+https://host[:port]/MOUNT`: HashiCorp Vault KV v2 through hvac (token from `VAULT_TOKEN`).

The keys tokenise PII and encrypt the PII table (`shironzi.privacy`). Destroying a tenant's key
(`destroy_key`) crypto-shreds it: its PII table rows stay but can never be read.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import json
import os
import threading
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
from shironzi.lake.leases import file_lock
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
    """A JSON keystore under SHIRONZI_HOME; each tenant key is Fernet-encrypted under the master key."""

    FILE_NAME = "tenant_keys.json"

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
        self._snapshot: tuple[tuple[int, int, int], dict[str, Any]] | None = None

    def _wrapping_key(self, salt: bytes) -> Any:
        from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

        if salt not in self._wrapping:
            derived = Scrypt(salt=salt, length=32, n=2**14, r=8, p=1).derive(self._master_key)
            self._wrapping[salt] = fernet_for(derived)
        return self._wrapping[salt]

    def _load(self) -> dict[str, Any]:
        """The keystore document, read-only; re-read whenever the file changed (every write replaces the
        file, so its inode changes). Writers edit `_load_for_update()`, a private copy."""
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return {"salt": base64.b64encode(os.urandom(16)).decode(), "keys": {}}
        stamp = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if self._snapshot is not None and self._snapshot[0] == stamp:
            return self._snapshot[1]
        try:
            data: dict[str, Any] = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"the keystore {self.path} is unreadable: {exc}") from exc
        self._snapshot = (stamp, data)
        return data

    def _load_for_update(self) -> dict[str, Any]:
        return copy.deepcopy(self._load())

    def _save(self, data: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True))
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    def _locked(self) -> Any:
        return file_lock(self.directory / ".keystore.lock", mode="exclusive", timeout=30)

    def _unwrap(self, data: dict[str, Any], tenant_id: str) -> bytes | None:
        entry = data["keys"].get(tenant_id)
        if entry is None:
            return None
        if entry.get("destroyed_at"):
            raise KeyDestroyedError(
                f"the key of tenant {tenant_id!r} was destroyed at {entry['destroyed_at']}: "
                "data encrypted under it is unrecoverable",
                tenant=tenant_id,
            )
        from cryptography.fernet import InvalidToken

        try:
            return self._wrapping_key(base64.b64decode(data["salt"])).decrypt(entry["wrapped"].encode())
        except InvalidToken as exc:
            raise ConfigurationError(
                f"cannot decrypt tenant {tenant_id!r}'s key: wrong SHIRONZI_MASTER_KEY?", tenant=tenant_id
            ) from exc

    def get_key(self, tenant_id: str) -> bytes:
        _check_tenant(tenant_id)
        key = self._unwrap(self._load(), tenant_id)
        if key is None:
            raise NotFoundError(f"tenant {tenant_id!r} has no encryption key", tenant=tenant_id)
        return key

    def get_or_create_key(self, tenant_id: str) -> bytes:
        _check_tenant(tenant_id)
        existing = self._unwrap(self._load(), tenant_id)
        if existing is not None:
            return existing
        with self._lock, self._locked():
            data = self._load_for_update()
            existing = self._unwrap(data, tenant_id)
            if existing is not None:
                return existing
            key = os.urandom(KEY_BYTES)
            wrapped = self._wrapping_key(base64.b64decode(data["salt"])).encrypt(key).decode()
            data["keys"][tenant_id] = {"wrapped": wrapped, "created_at": _now_text(), "destroyed_at": None}
            self._save(data)
            return key

    def destroy_key(self, tenant_id: str) -> None:
        _check_tenant(tenant_id)
        with self._lock, self._locked():
            data = self._load_for_update()
            entry = data["keys"].get(tenant_id)
            if entry is not None and entry.get("destroyed_at"):
                return
            data["keys"][tenant_id] = {
                "wrapped": None,
                "created_at": (entry or {}).get("created_at"),
                "destroyed_at": _now_text(),
            }
            self._save(data)


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
