"""Tenant encryption keys, PII pseudonymisation and the encrypted PII vault (with crypto-shredding).

Keys come from the secrets backend chosen by `settings.resolved_secrets_url`:

- `file://DIR`: a local keystore (`DIR/tenant_keys.json`) whose entries are Fernet-encrypted under a key
  derived (scrypt) from `settings.master_key`;
- `vault+https://host[:port]/MOUNT`: HashiCorp Vault KV v2 through hvac (token from `VAULT_TOKEN`).

`pseudonymise_batch` replaces PII fields by a keyed hash (HMAC-SHA256 under the tenant's key) and keeps
the raw value of recoverable fields only in the vault table, encrypted under the tenant's key.
Destroying a tenant's key (`destroy_key`) crypto-shreds it: its vault rows stay but can never be read.
"""

from __future__ import annotations

import base64
import copy
import datetime as dt
import functools
import hashlib
import hmac
import json
import os
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlparse

from shironzi.errors import (
    ConfigurationError,
    InvalidInputError,
    KeyDestroyedError,
    NotFoundError,
    ServiceUnavailableError,
)

if TYPE_CHECKING:
    import pyarrow as pa

    from shironzi.settings import Settings
    from shironzi.tenancy.context import TenantContext

TOKEN_PREFIX = "tok_"
TOKEN_PATTERN = re.compile(r"^tok_[0-9a-f]{32}$")
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


def _fernet(key: bytes) -> Any:
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
            self._wrapping[salt] = _fernet(derived)
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
        from shironzi.audit.lease import file_lock

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
    from shironzi.settings import get_settings

    settings = settings or get_settings()
    url = settings.resolved_secrets_url
    store = _keystores.get(url)
    if store is None:
        store = keystore_for_url(url, master_key=settings.master_key.get_secret_value())
        _keystores[url] = store
    return store


# --- pseudonymisation --------------------------------------------------------------------------------


def pseudonym(key: bytes, value: str) -> str:
    """The stable keyed hash that stands for a PII value: `tok_` + 128 bits of HMAC-SHA256."""
    return TOKEN_PREFIX + hmac.new(key, value.encode(), hashlib.sha256).hexdigest()[:32]


def subject_pseudonym(
    tenant_id: str, subject_id: str, *, keystore: TenantKeystore | None = None
) -> str | None:
    """The pseudonymised form of a subject id under the tenant's key (None when the key is gone/absent)."""
    store = keystore or get_keystore()
    try:
        return pseudonym(store.get_key(tenant_id), subject_id)
    except (NotFoundError, KeyDestroyedError):
        return None


def _value_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def vault_table_uri(lake_uri: str | None = None) -> str:
    from shironzi.lake.paths import platform_uri
    from shironzi.settings import get_settings

    return platform_uri(lake_uri or get_settings().resolved_lake_uri, "vault", "pii")


def pseudonymise_batch(
    table: pa.Table,
    *,
    pii_fields: Iterable[str],
    recoverable_fields: Iterable[str] = (),
    keystore: TenantKeystore | None = None,
    properties_column: str = "properties",
    vault_uri: str | None = None,
    pending: PendingVault | None = None,
) -> pa.Table:
    """Replace PII (top-level columns and keys inside the `properties` JSON) by per-tenant keyed hashes.

    Hashes are computed once per distinct (tenant, value); raw values of `recoverable_fields` are stored
    encrypted under the tenant key in the vault table. Ingestion calls it with the contract's
    `pii_fields(industry)` / `recoverable_pii_fields(industry)`. Values already tokenised stay as they are.
    With `pending`, the vault entries are collected there (the caller stores them once, before its commit).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    pii = set(pii_fields)
    recoverable = set(recoverable_fields)
    if not recoverable <= pii:
        raise InvalidInputError(f"recoverable fields {sorted(recoverable - pii)} are not marked PII")
    if "tenant_id" not in table.column_names:
        raise InvalidInputError("pseudonymisation needs a tenant_id column (keys are per tenant)")
    if "tenant_id" in pii:
        raise InvalidInputError("tenant_id cannot be pseudonymised: it scopes every row")
    if table.num_rows == 0 or not pii:
        return table
    store = keystore or get_keystore()
    tenant_column = table.column("tenant_id")
    if tenant_column.null_count:
        raise InvalidInputError("rows without a tenant_id cannot be pseudonymised")
    keys = {t: store.get_or_create_key(t) for t in pc.unique(tenant_column).to_pylist()}
    cache: dict[tuple[str, str], str] = {}
    customer_column = table.column("customer_id") if "customer_id" in table.column_names else None
    vault: dict[tuple[str, str], dict[str, Any]] = {}

    def token_for(tenant: str, field: str, value: Any, *, row: int, customer: str | None) -> Any:
        if value is None or (isinstance(value, str) and TOKEN_PATTERN.match(value)):
            return value
        text = _value_text(value)
        token = cache.get((tenant, text))
        if token is None:
            token = cache[(tenant, text)] = pseudonym(keys[tenant], text)
        if field in recoverable:
            _vault_entry(vault, tenant, token, field, customer, value, row)
        return token

    out = table
    columns = sorted(pii & set(table.column_names))
    if columns:
        tenants = tenant_column.to_pylist()
        customers = customer_column.to_pylist() if customer_column is not None else [None] * table.num_rows
        for name in columns:
            values = table.column(name).to_pylist()
            replaced = [
                token_for(t, name, v, row=i, customer=customers[i])
                for i, (t, v) in enumerate(zip(tenants, values, strict=True))
            ]
            out = out.set_column(out.schema.get_field_index(name), name, pa.array(replaced, pa.string()))
    if properties_column in table.column_names:
        column = table.column(properties_column)
        # Only rows whose JSON text mentions a PII key are looked at (a vectorised pre-filter).
        pattern = "|".join(re.escape(json.dumps(f)) for f in sorted(pii))
        mentions = pc.fill_null(pc.match_substring_regex(column, pattern), False)
        if isinstance(mentions, pa.ChunkedArray):
            mentions = mentions.combine_chunks()
        rows = pc.indices_nonzero(mentions)
        if len(rows):
            texts = _tokenise_properties(
                pc.take(column, rows),
                rows,
                pc.take(tenant_column, rows),
                pc.take(customer_column, rows) if customer_column is not None else None,
                sorted(pii),
                recoverable,
                keys,
                token_for,
                vault,
            )
            kind = table.schema.field(properties_column).type
            replaced_texts = pc.replace_with_mask(column.combine_chunks(), mentions, texts.cast(kind))
            out = out.set_column(
                out.schema.get_field_index(properties_column), table.schema.field(properties_column), replaced_texts
            )
    if vault:
        entries = [{k: v for k, v in e.items() if k != "_row"} for e in vault.values()]
        if pending is not None:
            pending.add(entries, keys)
        else:
            _store_in_vault(entries, keys, vault_uri=vault_uri)
    return out


def _tokenise_properties(
    texts: Any,
    rows: Any,
    tenants: Any,
    customers: Any,
    fields: list[str],
    recoverable: set[str],
    keys: Mapping[str, bytes],
    token_for: Any,
    vault: dict[tuple[str, str], dict[str, Any]],
) -> pa.Array:
    """The tokenised texts of the candidate rows (Arrow arrays: texts, their row numbers, tenants, customers).

    The common shape is handled vectorised; the rest (nested or escaped text, duplicate keys, non-string
    values) is parsed row by row, the reference way."""
    import polars as pl

    frame = pl.DataFrame(
        {
            "_n": pl.int_range(0, len(rows), eager=True, dtype=pl.Int64),
            "_row": pl.Series(rows).cast(pl.Int64),
            "tenant_id": pl.Series(tenants).cast(pl.String),
            "customer_id": pl.Series(customers).cast(pl.String) if customers is not None
            else pl.Series([None] * len(rows), dtype=pl.String),
            "text": pl.Series(texts).cast(pl.String),
        }
    )
    done = _tokenise_flat_properties(frame, keys, fields, recoverable, vault)
    merged = frame.join(done.rename({"text": "_new"}), on="_n", how="left", maintain_order="left")
    rest = merged.filter(pl.col("_new").is_null()).select("_n", "_row", "tenant_id", "customer_id", "text")
    pii = set(fields)
    fixed = [
        (
            n,
            _tokenise_document(
                text, pii, functools.partial(token_for, tenant, row=row, customer=customer)
            ),
        )
        for n, row, tenant, customer, text in rest.iter_rows()
    ]
    if fixed:
        merged = merged.join(
            pl.DataFrame(fixed, schema={"_n": pl.Int64, "_fixed": pl.String}, orient="row"),
            on="_n", how="left", maintain_order="left",
        ).with_columns(pl.coalesce("_new", "_fixed").alias("_new"))
    return merged.get_column("_new").to_arrow()


def _vault_entry(
    vault: dict[tuple[str, str], dict[str, Any]],
    tenant: str,
    token: str,
    field: str,
    customer: str | None,
    value: Any,
    row: int,
) -> None:
    """Record a recoverable value's vault entry; a token seen several times keeps its first row's entry."""
    known = vault.get((tenant, token))
    if known is None or row < known["_row"]:
        vault[(tenant, token)] = {
            "tenant_id": tenant,
            "token": token,
            "field": field,
            "customer_id": customer,
            "raw": json.dumps(value),
            "_row": row,
        }


def _tokenise_document(text: str | None, pii: set[str], tokenise: Any) -> str | None:
    """The reference path for one properties text: parse it, replace its top-level PII keys, re-serialise.

    Text that is not a JSON object is left as it is."""
    if text is None:
        return None
    try:
        doc = json.loads(text)
    except ValueError:
        return text
    if not isinstance(doc, dict):
        return text
    changed = False
    for name in sorted(pii & doc.keys()):
        new = tokenise(name, doc[name])
        changed = changed or new != doc[name]
        doc[name] = new
    return json.dumps(doc, separators=(",", ":")) if changed else text


_PLAIN_FIELD = re.compile(r"^[A-Za-z0-9_]+$")
_JSON_SPACE = " \t\n\r"
_duck_local = threading.local()


def _json_valid(texts: Any) -> Any:
    """`json_valid` of a polars String Series, evaluated by DuckDB over the whole column at once."""
    import polars as pl

    con = getattr(_duck_local, "con", None)
    if con is None:
        import duckdb

        con = _duck_local.con = duckdb.connect(":memory:")
    con.register("_pii_texts", pl.DataFrame({"text": texts}).to_arrow())
    try:
        return con.sql("SELECT coalesce(json_valid(text), false) AS ok FROM _pii_texts").pl().get_column("ok")
    finally:
        con.unregister("_pii_texts")


def _tokenise_flat_properties(
    frame: Any,
    keys: Mapping[str, bytes],
    fields: list[str],
    recoverable: set[str],
    vault: dict[tuple[str, str], dict[str, Any]],
) -> Any:
    """Vectorised tokenisation of the common case: `_n, text` (tokenised) of the rows of `frame`
    (`_n, _row, tenant_id, customer_id, text`) it handled.

    Handled: valid JSON objects holding no other object (a single `{`), no backslash, and each PII key at
    most once, written `"key":"value"` or `"key":null`. There a string's raw text is its value and every key
    is top level, so values are swapped for tokens in the text itself with literal splits (the rest of the
    document is kept byte for byte). Everything else is left to the row-by-row reference path."""
    import polars as pl

    none = pl.DataFrame(schema={"_n": pl.Int64, "text": pl.String})
    if frame.is_empty() or not all(_PLAIN_FIELD.match(f) for f in fields):
        return none
    text = pl.col("text")
    plain = [
        text.is_not_null(),
        ~text.str.contains("\\", literal=True),
        text.str.strip_chars_start(_JSON_SPACE).str.starts_with("{"),
        text.str.count_matches("{", literal=True) == 1,
    ]
    for f in fields:
        key = json.dumps(f)
        plain.append(
            (text.str.count_matches(key, literal=True) == 0)
            | (
                (text.str.count_matches(key, literal=True) == 1)
                & (text.str.contains(f"{key}:\"", literal=True) | text.str.contains(f"{key}:null", literal=True))
            )
        )
    simple = frame.filter(pl.all_horizontal(plain).fill_null(False))
    if simple.is_empty():
        return none
    simple = simple.filter(_json_valid(simple.get_column("text")))
    if simple.is_empty():
        return none
    # Every PII string value, split out of its text: prefix + '"key":"' + value + '"' + suffix.
    found = []
    for f in fields:
        opener = f"{json.dumps(f)}:\""
        rest = text.str.splitn(opener, 2).struct.field("field_1")
        found.append(
            simple.filter(text.str.contains(opener, literal=True)).select(
                "_n", "_row", "tenant_id", "customer_id", pl.lit(f).alias("field"),
                rest.str.splitn('"', 2).struct.field("field_0").alias("value"),
            )
        )
    values = pl.concat(found)
    distinct = values.select("tenant_id", "value").unique()
    distinct = distinct.with_columns(
        pl.Series(
            "token",
            [
                v if TOKEN_PATTERN.match(v) else TOKEN_PREFIX + hmac.digest(keys[t], v.encode(), "sha256").hex()[:32]
                for t, v in distinct.iter_rows()
            ],
            dtype=pl.String,
        )
    )
    values = values.join(distinct, on=["tenant_id", "value"], how="left")
    for tenant, token, name, customer, value, row in (
        values.filter(pl.col("field").is_in(sorted(recoverable)) & (pl.col("token") != pl.col("value")))
        .sort("_row", "field")
        .unique(subset=["tenant_id", "token"], keep="first", maintain_order=True)
        .select("tenant_id", "token", "field", "customer_id", "value", "_row")
        .iter_rows()
    ):
        _vault_entry(vault, tenant, token, name, customer, value, row)
    out = simple.select("_n", "text")
    for f in fields:
        opener = f"{json.dumps(f)}:\""
        tokens = values.filter(pl.col("field") == f).select("_n", pl.col("token").alias("_token"))
        if tokens.is_empty():
            continue
        parts = text.str.splitn(opener, 2)
        head, rest = parts.struct.field("field_0"), parts.struct.field("field_1")
        tail = rest.str.splitn('"', 2).struct.field("field_1")
        out = (
            out.join(tokens, on="_n", how="left", maintain_order="left")
            .with_columns(
                pl.when(pl.col("_token").is_not_null())
                .then(pl.concat_str(head, pl.lit(opener), pl.col("_token"), pl.lit('"'), tail))
                .otherwise(text)
                .alias("text")
            )
            .drop("_token")
        )
    return out


VAULT_SCHEMA_FIELDS = ("tenant_id", "token", "field", "customer_id", "ciphertext", "created_at")


@dataclass
class PendingVault:
    """Vault entries of one landing batch (several `pseudonymise_batch` calls), written in one commit."""

    entries: list[Mapping[str, Any]] = field(default_factory=list)
    keys: dict[str, bytes] = field(default_factory=dict)

    def add(self, entries: Iterable[Mapping[str, Any]], keys: Mapping[str, bytes]) -> None:
        self.entries.extend(entries)
        self.keys.update(keys)

    def store(self, *, vault_uri: str | None = None) -> None:
        if self.entries:
            _store_in_vault(self.entries, self.keys, vault_uri=vault_uri)
        self.entries, self.keys = [], {}


# Tokens known to be in the vault, per vault table: (the table version they describe, tenant -> tokens).
# Any other writer's commit (another ingestor, an erasure) changes the version and drops the cache, so a
# long-running ingestor does not re-read the whole vault at every batch.
_VAULTED: dict[str, tuple[int, dict[str, set[str]]]] = {}
_VAULTED_MAX_TOKENS = 2_000_000


def _vaulted_tokens(uri: str, tenants: Sequence[str]) -> tuple[int, dict[str, set[str]]]:
    from shironzi.lake.delta import read_polars, table_version

    version = table_version(uri)
    cached = _VAULTED.get(uri)
    known = cached[1] if cached is not None and cached[0] == version else {}
    missing = [t for t in tenants if t not in known]
    if missing:
        present = read_polars(uri, columns=["tenant_id", "token"], filters=[("tenant_id", "in", missing)])
        for tenant in missing:
            known[tenant] = set()
        for tenant, token in present.iter_rows():
            known[tenant].add(token)
    return version, known


def _store_in_vault(
    entries: Sequence[Mapping[str, Any]], keys: Mapping[str, bytes], *, vault_uri: str | None
) -> None:
    import pyarrow as pa

    from shironzi.lake.delta import append, table_exists

    uri = vault_uri or vault_table_uri()
    known: dict[str, set[str]] = {}
    if table_exists(uri):  # insert-only: tokens already vaulted are skipped (duplicates would be harmless)
        _, known = _vaulted_tokens(uri, sorted({e["tenant_id"] for e in entries}))
        entries = [e for e in entries if e["token"] not in known.get(e["tenant_id"], ())]
        if not entries:
            return
    now = dt.datetime.now(dt.UTC)
    ciphers = {tenant: _fernet(key) for tenant, key in keys.items()}
    rows = [
        {
            "tenant_id": e["tenant_id"],
            "token": e["token"],
            "field": e["field"],
            "customer_id": e["customer_id"],
            "ciphertext": ciphers[e["tenant_id"]].encrypt(e["raw"].encode()),
            "created_at": now,
        }
        for e in entries
    ]
    schema = pa.schema(
        [
            pa.field("tenant_id", pa.string(), nullable=False),
            pa.field("token", pa.string(), nullable=False),
            pa.field("field", pa.string(), nullable=False),
            pa.field("customer_id", pa.string(), nullable=True),
            pa.field("ciphertext", pa.binary(), nullable=False),
            pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
        ]
    )
    from shironzi.audit.lease import table_lease

    with table_lease(uri):  # erasure vacuums the vault under the exclusive lease
        committed = append(uri, pa.Table.from_pylist(rows, schema=schema), metadata={"writer": "shironzi.pii_vault"})
    for e in entries:
        known.setdefault(e["tenant_id"], set()).add(e["token"])
    if sum(map(len, known.values())) <= _VAULTED_MAX_TOKENS:
        _VAULTED[uri] = (committed.version, known)
    else:
        _VAULTED.pop(uri, None)


def reveal(ctx: TenantContext, tenant_id: str, token: str, *, keystore: TenantKeystore | None = None) -> Any:
    """Decrypt the raw value behind a token from the vault (audited); KeyDestroyedError once shredded."""
    from cryptography.fernet import InvalidToken

    from shironzi.audit.log import audit
    from shironzi.lake.delta import read_polars, table_exists

    ctx.require_tenant(tenant_id)
    if not isinstance(token, str) or not TOKEN_PATTERN.match(token):
        raise InvalidInputError(f"{token!r} is not a pseudonym token", field="token")
    uri = vault_table_uri()
    # polars, not Arrow: files rewritten by an erasure hold string_view columns Arrow filters cannot compare.
    wanted = [("tenant_id", "=", tenant_id), ("token", "=", token)]
    rows = read_polars(uri, columns=["ciphertext"], filters=wanted) if table_exists(uri) else None
    if rows is None or rows.height == 0:
        raise NotFoundError(f"token {token} is not in tenant {tenant_id!r}'s PII vault", tenant=tenant_id)
    store = keystore or get_keystore()
    try:
        key = store.get_key(tenant_id)
    except KeyDestroyedError:
        audit(
            ctx,
            "pii_reveal",
            tenant_id=tenant_id,
            resource=uri,
            outcome="failure",
            details={"token": token, "error": "key_destroyed"},
        )
        raise
    try:
        raw = _fernet(key).decrypt(rows["ciphertext"][0])
    except InvalidToken as exc:
        raise KeyDestroyedError(f"token {token} cannot be decrypted with tenant {tenant_id!r}'s key") from exc
    audit(ctx, "pii_reveal", tenant_id=tenant_id, resource=uri, details={"token": token}, durable=True)
    return json.loads(raw)
