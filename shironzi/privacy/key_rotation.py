"""Key rotation without downtime: a new master key for the keystore, a new data key for a tenant's PII.

`rotate_master` re-wraps every key of the local keystore (tenant keys and data keys) under the master key
generation of `SHIRONZI_MASTER_KEY`, a batch of rows per transaction. Each row names the generation it is
wrapped under, and a process given both masters (`SHIRONZI_MASTER_KEY` and `SHIRONZI_PREVIOUS_MASTER_KEY`)
opens either, so reads go on during the rotation, and a crash leaves every key readable; running it again
re-wraps what is left. The procedure (docs/compliance/vault.md has it in full): give every process the new
master and the retiring one, run `shironzi keys rotate-master`, then drop the retiring one.

`rotate_tenant` gives a tenant a new data key: it re-encrypts the tenant's rows of the PII table (one
commit), physically removes the files that commit replaced (they held the old ciphertext), then destroys
every older data key. The tenant key that makes the deterministic tokens (pseudonyms) in every layer is
NOT rotated: a new one would give each subject a second pseudonym, breaking joins, group-bys and erasure
by subject over older data, and the lake cannot be re-tokenised (the raw values of non-recoverable fields
are gone by design). The trade-off: the first rotation retires the tenant key from encrypting PII, but the
key itself stays (for tokens), so PII table copies taken before that rotation (backups; files left by
earlier rewrites, until the regular vacuum) stay readable with it; from the second rotation on, the
retired data key is destroyed outright. Destroying the tenant (`destroy_key`) shreds all of its keys.

Each rotation holds an exclusive lease (the PII table's for a tenant; the keystore's for the master), so it
waits for an erasure or a landing that holds the lease, and gives up with `LeaseBusyError`, having changed
nothing, after `SHIRONZI_LEASE_TIMEOUT_SECONDS`. Each writes an audit event.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pyarrow as pa

from shironzi.audit.erasure import _remove_files_removed_by
from shironzi.audit.log import audit
from shironzi.errors import ConfigurationError, InvalidStateError, LeaseBusyError
from shironzi.lake.delta import overwrite, read_polars, table_exists, table_version
from shironzi.lake.leases import lake_relative, table_lease
from shironzi.lake.predicates import sql_literal
from shironzi.observability import stage
from shironzi.privacy.pii_table import PII_TABLE_SCHEMA, data_ciphers, pii_table_uri
from shironzi.settings import get_settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.keystore import DataKeystore, LocalKeystore, TenantKeystore, get_keystore

# Crash tests stop a rotation at a point by setting this hook in the rotating process (the CLI has no crash
# switch): ("master_batch", keys re-wrapped so far) after each committed batch, ("tenant_rewritten", rows)
# once the PII rows are committed under the new key and before the old key is destroyed.
rotation_hook: Callable[[str, int], None] | None = None

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class MasterRotation:
    generation: int
    rewrapped: int
    retired_generations: list[int]
    seconds: float


@dataclass(frozen=True)
class TenantRotation:
    tenant_id: str
    version: int
    retired_versions: list[int]
    rows: int
    files_removed: int
    resumed: bool
    table_version: int | None


def _hook(point: str, count: int) -> None:
    if rotation_hook is not None:
        rotation_hook(point, count)


@contextmanager
def _rotation_lease(uri: str, what: str) -> Iterator[None]:
    """The exclusive lease of `uri` for a rotation; a clear error if an erasure (or another job) keeps it."""
    try:
        with table_lease(uri, mode="exclusive"):
            yield
    except LeaseBusyError as exc:
        raise LeaseBusyError(
            f"{what} did not start: {lake_relative(uri)} stayed leased by another job (an erasure, a vacuum, a "
            f"landing or another rotation) for {get_settings().lease_timeout_seconds:g}s; nothing was changed. "
            "Retry when it has finished (or raise SHIRONZI_LEASE_TIMEOUT_SECONDS)",
            table=lake_relative(uri),
        ) from exc


def rotate_master(
    ctx: TenantContext,
    *,
    keystore: TenantKeystore | None = None,
    batch_size: int = 500,
    progress: Progress | None = None,
) -> MasterRotation:
    """Re-wrap every key under the current master's generation (created if new); resumable, see above."""
    store = keystore or get_keystore()
    if not isinstance(store, LocalKeystore):
        raise ConfigurationError(
            "the tenant keys live in Vault, which has no Shironzi master key: rotate Vault's own keys "
            "(`vault operator rotate`, and rekey the unseal keys) as docs/compliance/vault.md describes"
        )
    if batch_size < 1:
        raise ConfigurationError(f"batch size must be at least 1, got {batch_size}")
    with (
        _rotation_lease(f"{store.directory}/{store.FILE_NAME}", "the master key rotation"),
        stage("keys.rotate_master") as summary,
    ):
        generation = store.begin_master_rotation()
        total = store.keys_to_rewrap(generation)
        done = 0
        if progress is not None:
            progress(0, total)
        while batch := store.rewrap_batch(generation, limit=batch_size):  # until none is left, new ones too
            done += batch
            if progress is not None:
                progress(done, max(total, done))
            _hook("master_batch", done)
        retired = store.retire_generations(keep=generation)
        summary.rows = done
        summary.extra.update(generation=generation, retired_generations=retired)
    audit(
        ctx,
        "master_key_rotation",
        resource=f"keystore:{store.path}",
        details={"generation": generation, "rewrapped": done, "retired_generations": retired},
        durable=True,
    )
    return MasterRotation(generation, done, retired, summary.seconds)


def rotate_tenant(
    ctx: TenantContext, tenant_id: str, *, keystore: TenantKeystore | None = None, table_uri: str | None = None
) -> TenantRotation:
    """A new data key for the tenant, its PII rows re-encrypted under it, then the older keys destroyed."""
    ctx.require_tenant(tenant_id)
    store = keystore or get_keystore()
    if not isinstance(store, DataKeystore):
        raise ConfigurationError(f"the keystore {type(store).__name__} keeps no data keys: it cannot rotate them")
    store.get_key(tenant_id)  # an unknown or shredded tenant fails here, before any lease or change
    uri = table_uri or pii_table_uri()
    with (
        _rotation_lease(uri, f"the key rotation of tenant {tenant_id}"),
        stage("keys.rotate_tenant", tenant_id=tenant_id) as summary,
    ):
        live = store.data_keys(tenant_id)
        resumed = len(live) > 1 and live[0][0] > 0  # a rotation that stopped before destroying the old key
        version = live[0][0] if resumed else store.add_data_key(tenant_id)
        rows, removed = _reencrypt_rows(store, tenant_id, uri)
        _hook("tenant_rewritten", rows)
        retired = store.retire_data_keys(tenant_id, keep=version)
        committed = table_version(uri) if table_exists(uri) else None
        summary.rows, summary.table_version = rows, committed
        summary.extra.update(version=version, retired_versions=retired, files_removed=removed, resumed=resumed)
    audit(
        ctx,
        "tenant_key_rotation",
        tenant_id=tenant_id,
        resource=uri,
        details={"version": version, "retired_versions": retired, "rows": rows, "files_removed": removed,
                 "resumed": resumed},
        durable=True,
    )
    return TenantRotation(tenant_id, version, retired, rows, removed, resumed, committed)


def _reencrypt_rows(store: TenantKeystore, tenant_id: str, uri: str) -> tuple[int, int]:
    """Rewrite the tenant's PII rows under its newest data key in one commit (the caller holds the exclusive
    lease); then remove the files that commit replaced. Returns (rows, files removed)."""
    if not table_exists(uri):
        return 0, 0
    where = f"tenant_id = {sql_literal(tenant_id)}"
    # polars, not Arrow: files rewritten by an erasure hold string_view columns Arrow filters cannot compare.
    rows = read_polars(uri, filters=[("tenant_id", "=", tenant_id)]).to_arrow()
    if rows.num_rows == 0:
        return 0, 0
    newest, any_live = data_ciphers(store, tenant_id)
    from cryptography.fernet import InvalidToken

    try:
        ciphertexts = [newest.encrypt(any_live.decrypt(c)) for c in rows.column("ciphertext").to_pylist()]
    except InvalidToken as exc:
        raise InvalidStateError(
            f"a PII row of tenant {tenant_id!r} is under none of its live data keys; nothing was changed",
            tenant=tenant_id,
        ) from exc
    table = _as_pii_table(rows).set_column(
        PII_TABLE_SCHEMA.get_field_index("ciphertext"), PII_TABLE_SCHEMA.field("ciphertext"),
        pa.array(ciphertexts, pa.binary()),
    )
    before = table_version(uri)
    overwrite(uri, table, predicate=where, lease=False, metadata={"writer": "shironzi.key_rotation"})
    removed = _remove_files_removed_by(uri, before + 1)
    return table.num_rows, len(removed)


def _as_pii_table(rows: pa.Table) -> pa.Table:
    """The rows in the PII table's own schema (files rewritten by an erasure may read back as string views)."""
    return pa.table(
        {name: rows.column(name).cast(PII_TABLE_SCHEMA.field(name).type) for name in PII_TABLE_SCHEMA.names},
        schema=PII_TABLE_SCHEMA,
    )
