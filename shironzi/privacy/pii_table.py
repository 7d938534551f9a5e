"""The PII table: the raw values of recoverable PII fields, each encrypted under its tenant's key.

One platform Delta table (`_platform/vault/pii` under the lake: the on-disk name predates this module and
stays, so existing lakes keep their rows) with one row per (tenant, token). Landing inserts rows (never
updates them); erasure deletes a subject's rows; destroying a tenant's key crypto-shreds the rest: the
ciphertext stays but can never be decrypted. `reveal` is the one audited way back to a raw value.

Rows are encrypted under the tenant's newest data key (`DataKeystore.data_keys`; version 0 is the tenant
key), read while holding the table's shared lease, so a key rotation (which rewrites the tenant's rows
under the exclusive lease, then destroys the old key) never misses a row encrypted under the old key.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from shironzi.audit.log import audit
from shironzi.errors import InvalidInputError, KeyDestroyedError, NotFoundError
from shironzi.lake.delta import append, read_polars, table_exists, table_version
from shironzi.lake.leases import table_lease
from shironzi.lake.paths import platform_uri
from shironzi.privacy.tokens import TOKEN_PATTERN
from shironzi.settings import get_settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.keystore import DataKeystore, TenantKeystore, fernet_for, get_keystore

PII_TABLE_SCHEMA = pa.schema(
    [
        pa.field("tenant_id", pa.string(), nullable=False),
        pa.field("token", pa.string(), nullable=False),
        pa.field("field", pa.string(), nullable=False),
        pa.field("customer_id", pa.string(), nullable=True),
        pa.field("ciphertext", pa.binary(), nullable=False),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


def pii_table_uri(lake_uri: str | None = None) -> str:
    return platform_uri(lake_uri or get_settings().resolved_lake_uri, "vault", "pii")


@dataclass
class PendingPiiRows:
    """PII table rows of one landing batch (several `pseudonymise_batch` calls), written in one commit."""

    entries: list[Mapping[str, Any]] = field(default_factory=list)
    keys: dict[str, bytes] = field(default_factory=dict)
    keystore: TenantKeystore | None = None

    def add(
        self, entries: Iterable[Mapping[str, Any]], keys: Mapping[str, bytes], *, keystore: TenantKeystore | None = None
    ) -> None:
        self.entries.extend(entries)
        self.keys.update(keys)
        self.keystore = keystore or self.keystore

    def store(self, *, table_uri: str | None = None) -> None:
        if self.entries:
            store_pii_rows(self.entries, self.keys, table_uri=table_uri, keystore=self.keystore)
        self.entries, self.keys = [], {}


def data_ciphers(store: TenantKeystore, tenant_id: str, token_key: bytes | None = None) -> tuple[Any, Any]:
    """(the cipher new rows of the tenant are encrypted under, one that decrypts any of its live rows).

    A keystore without data keys encrypts under the tenant key itself (version 0)."""
    from cryptography.fernet import MultiFernet

    if isinstance(store, DataKeystore):
        keys = [key for _, key in store.data_keys(tenant_id)]
    else:
        keys = [token_key if token_key is not None else store.get_key(tenant_id)]
    ciphers = [fernet_for(key) for key in keys]
    return ciphers[0], MultiFernet(ciphers)


# Tokens known to be in the PII table, per table: (the table version they describe, tenant -> tokens).
# Any other writer's commit (another ingestor, an erasure) changes the version and drops the cache, so a
# long-running ingestor does not re-read the whole table at every batch.
_STORED_TOKENS: dict[str, tuple[int, dict[str, set[str]]]] = {}
_STORED_TOKENS_MAX = 2_000_000


def _stored_tokens(uri: str, tenants: Sequence[str]) -> tuple[int, dict[str, set[str]]]:
    version = table_version(uri)
    cached = _STORED_TOKENS.get(uri)
    known = cached[1] if cached is not None and cached[0] == version else {}
    missing = [t for t in tenants if t not in known]
    if missing:
        present = read_polars(uri, columns=["tenant_id", "token"], filters=[("tenant_id", "in", missing)])
        for tenant in missing:
            known[tenant] = set()
        for tenant, token in present.iter_rows():
            known[tenant].add(token)
    return version, known


def store_pii_rows(
    entries: Sequence[Mapping[str, Any]],
    keys: Mapping[str, bytes],
    *,
    table_uri: str | None,
    keystore: TenantKeystore | None = None,
) -> None:
    """Encrypt and append the entries (`tenant_id, token, field, customer_id, raw`) in one commit, each under
    its tenant's newest data key (`keys` are the tenant keys the tokens were made with)."""
    uri = table_uri or pii_table_uri()
    store = keystore or get_keystore()
    with table_lease(uri, mode="shared"):  # a rotation cannot retire the data key between encrypt and commit
        _store_pii_rows(entries, keys, uri, store)


def _store_pii_rows(
    entries: Sequence[Mapping[str, Any]], keys: Mapping[str, bytes], uri: str, store: TenantKeystore
) -> None:
    known: dict[str, set[str]] = {}
    if table_exists(uri):  # insert-only: tokens already stored are skipped (duplicates would be harmless)
        _, known = _stored_tokens(uri, sorted({e["tenant_id"] for e in entries}))
        entries = [e for e in entries if e["token"] not in known.get(e["tenant_id"], ())]
        if not entries:
            return
    now = dt.datetime.now(dt.UTC)
    tenants = {e["tenant_id"] for e in entries}
    if isinstance(store, DataKeystore):  # every tenant's newest data key in a few queries
        ciphers = {t: fernet_for(k) for t, k in store.newest_data_keys({t: keys[t] for t in tenants}).items()}
    else:
        ciphers = {tenant: data_ciphers(store, tenant, keys[tenant])[0] for tenant in tenants}
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
    committed = append(  # takes the shared lease: erasure vacuums the PII table under the exclusive one
        uri, pa.Table.from_pylist(rows, schema=PII_TABLE_SCHEMA), metadata={"writer": "shironzi.pii_table"}
    )
    for e in entries:
        known.setdefault(e["tenant_id"], set()).add(e["token"])
    if sum(map(len, known.values())) <= _STORED_TOKENS_MAX:
        _STORED_TOKENS[uri] = (committed.version, known)
    else:
        _STORED_TOKENS.pop(uri, None)


def reveal(ctx: TenantContext, tenant_id: str, token: str, *, keystore: TenantKeystore | None = None) -> Any:
    """Decrypt the raw value behind a token from the PII table (audited); KeyDestroyedError once shredded."""
    from cryptography.fernet import InvalidToken

    ctx.require_tenant(tenant_id)
    if not isinstance(token, str) or not TOKEN_PATTERN.match(token):
        raise InvalidInputError(f"{token!r} is not a pseudonym token", field="token")
    uri = pii_table_uri()
    # polars, not Arrow: files rewritten by an erasure hold string_view columns Arrow filters cannot compare.
    wanted = [("tenant_id", "=", tenant_id), ("token", "=", token)]
    rows = read_polars(uri, columns=["ciphertext"], filters=wanted) if table_exists(uri) else None
    if rows is None or rows.height == 0:
        raise NotFoundError(f"token {token} is not in tenant {tenant_id!r}'s PII table", tenant=tenant_id)
    store = keystore or get_keystore()
    try:
        _, cipher = data_ciphers(store, tenant_id)
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
        raw = cipher.decrypt(rows["ciphertext"][0])
    except InvalidToken as exc:
        raise KeyDestroyedError(f"token {token} cannot be decrypted with tenant {tenant_id!r}'s key") from exc
    audit(ctx, "pii_reveal", tenant_id=tenant_id, resource=uri, details={"token": token}, durable=True)
    return json.loads(raw)
