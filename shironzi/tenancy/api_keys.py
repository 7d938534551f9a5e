"""API keys in the registry: issuing, revoking and listing them, and verifying a presented key through the
key-check cache."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shironzi.errors import (
    ExpiredKeyError,
    InvalidInputError,
    InvalidKeyError,
    InvalidStateError,
    NotFoundError,
    RevokedKeyError,
    TenantInactiveError,
    TenantSuspendedError,
)
from shironzi.settings import Settings
from shironzi.tenancy import catalog
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.events import ProjectionState, TenantEvent, utcnow
from shironzi.tenancy.invalidation import Invalidation
from shironzi.tenancy.keys import (
    CachedCheck,
    KeyCheckCache,
    KeyPrincipal,
    KeyRecord,
    Outcome,
    cache_key,
    generate_key,
    parse_key,
    secret_matches,
)
from shironzi.tenancy.models import api_keys, tenants
from shironzi.tenancy.store import RegistryStore, require_live


class ApiKeys(RegistryStore):
    """The API key part of `Registry`, with the cache of key checks (`key_cache`)."""

    def __init__(self, engine: Engine, *, settings: Settings | None = None) -> None:
        super().__init__(engine, settings=settings)
        self.key_cache = KeyCheckCache(self.settings.key_cache_ttl_seconds)

    def list_keys(self, tenant_id: str | None) -> list[KeyRecord]:
        """A tenant's keys (or, for None, the platform admin keys), newest first; never secrets or hashes."""
        with self.engine.connect() as conn:
            if tenant_id is None:
                condition = api_keys.c.tenant_id.is_(None)
            else:
                condition = api_keys.c.tenant_id == self._tenant_row(conn, tenant_id)["id"]
            rows = conn.execute(
                sa.select(api_keys).where(condition).order_by(api_keys.c.created_at.desc(), api_keys.c.prefix)
            ).mappings()
            return [_key_record(r) for r in rows]

    def list_all_keys(self) -> list[KeyRecord]:
        """Every key of every tenant and the platform (one query, for access reviews); never secrets."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.prefix)).mappings()
            return [_key_record(r) for r in rows]

    def get_key(self, prefix: str) -> KeyRecord:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix)).mappings().first()
        if row is None:
            raise NotFoundError(f"API key {prefix!r} not found", prefix=prefix)
        return _key_record(row)

    # --- verification -------------------------------------------------------------------------------

    def verify_key(self, raw: str) -> KeyPrincipal:
        """Authenticate a presented key; the check is cached (keyed by its SHA-256) for the key-cache TTL."""
        prefix, secret = parse_key(raw)
        fingerprint = cache_key(raw)
        entry = self.key_cache.get(fingerprint)
        if entry is None:
            entry = self._check_key(prefix, secret, fingerprint)
        return _principal_or_raise(entry)

    # Built once: a cold key check is one round trip with a pre-compiled statement and a bound prefix.
    _KEY_LOOKUP = (
        sa.select(api_keys, tenants.c.status.label("tenant_status"))
        .outerjoin(tenants, tenants.c.id == api_keys.c.tenant_id)
        .where(api_keys.c.prefix == sa.bindparam("prefix"))
    )

    def _check_key(self, prefix: str, secret: str, fingerprint: bytes) -> CachedCheck:
        with self._hot_reads.connect() as conn:
            row = conn.execute(self._KEY_LOOKUP, {"prefix": prefix}).mappings().first()
        principal: KeyPrincipal | None = None
        status: str | None = None
        outcome: Outcome
        if row is None or not secret_matches(prefix, secret, key_hash=row["key_hash"], salt=row["salt"]):
            outcome = "invalid"
        else:
            outcome = "revoked" if row["revoked_at"] is not None else "ok"
            status = row["tenant_status"]
            principal = KeyPrincipal(
                key_prefix=prefix,
                tenant_id=row["tenant_id"],
                scopes=tuple(row["scopes"].split(",")),
                is_admin=row["tenant_id"] is None,
                expires_at=row["expires_at"],
            )
        self.key_cache.put(
            fingerprint, outcome=outcome, prefix=prefix, principal=principal, tenant_status=status
        )
        return CachedCheck(0.0, outcome, prefix, principal, status)

    def apply_invalidation(self, change: Invalidation) -> None:
        super().apply_invalidation(change)
        if change.everything:
            self.key_cache.clear()
            return
        for tenant_id in change.key_tenants:
            self.key_cache.forget_tenant(tenant_id)
        for prefix in change.prefixes:
            self.key_cache.forget_prefix(prefix)

    # --- writes -------------------------------------------------------------------------------------

    def issue_key(
        self,
        ctx: TenantContext,
        tenant_id: str | None,
        *,
        scopes: Iterable[str],
        expires_at: datetime | None = None,
        label: str | None = None,
    ) -> tuple[KeyRecord, str]:
        """Issue a key for a tenant (tenant_id None: a platform admin key); the plaintext is shown once."""
        checked_scopes = catalog.check_scopes(scopes)
        if tenant_id is None:
            ctx.require_admin("issuing a platform admin key")
            if checked_scopes != ("admin",):
                raise InvalidInputError(
                    "a platform key (no tenant) must have exactly the admin scope", field="scopes"
                )
        if expires_at is not None:
            if expires_at.tzinfo is None:
                expires_at = expires_at.replace(tzinfo=UTC)
            if expires_at <= utcnow():
                raise InvalidInputError(
                    f"expires_at {expires_at.isoformat()} is in the past", field="expires_at"
                )
        if label is not None and (not label.strip() or len(label) > 200):
            raise InvalidInputError("a key label must be 1-200 characters", field="label")
        generated: list[str] = []

        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            tid = next(iter(state.tenants), None)
            if tid is not None:
                require_live(tid, state.tenants[tid], allow_suspended=True)
            key = generate_key()
            generated[:] = [key.prefix, key.plaintext]
            return [
                self._event(
                    ctx,
                    "key_issued",
                    tid,
                    prefix=key.prefix,
                    key_hash=key.key_hash,
                    salt=key.salt,
                    scopes=list(checked_scopes),
                    label=label,
                    expires_at=expires_at.astimezone(UTC).isoformat() if expires_at else None,
                )
            ]

        state, _ = self._commit(decide, tenant=tenant_id, ctx=ctx)
        return _key_record(state.keys[generated[0]]), generated[1]

    def revoke_key(self, ctx: TenantContext, prefix: str) -> KeyRecord:
        """Revoke a key at once here, and in running API workers within ~1 s (`invalidation`)."""
        with self.engine.connect() as conn:
            owner = conn.execute(sa.select(api_keys.c.tenant_id).where(api_keys.c.prefix == prefix)).first()
        if owner is None:
            raise NotFoundError(f"API key {prefix!r} not found", prefix=prefix)
        ctx.require_tenant(owner.tenant_id)

        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            row = state.keys[prefix]
            if row["revoked_at"] is not None:
                raise InvalidStateError(f"API key {prefix!r} is already revoked", prefix=prefix)
            return [self._event(ctx, "key_revoked", row["tenant_id"], prefix=prefix)]

        state, _ = self._commit(decide, tenant=owner.tenant_id, ctx=ctx, prefixes=[prefix])
        return _key_record(state.keys[prefix])


def _key_record(row: Any) -> KeyRecord:
    """A stored key row as listed: without its hash or salt."""
    return KeyRecord(
        prefix=row["prefix"],
        tenant_id=row["tenant_id"],
        scopes=tuple(row["scopes"].split(",")),
        label=row["label"],
        created_at=row["created_at"],
        created_by=row["created_by"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
    )


def _principal_or_raise(entry: CachedCheck) -> KeyPrincipal:
    if entry.outcome == "invalid" or entry.principal is None:
        raise InvalidKeyError("invalid API key: unknown key or wrong secret")
    principal = entry.principal
    if entry.outcome == "revoked":
        raise RevokedKeyError(
            f"API key {principal.key_prefix!r} has been revoked", prefix=principal.key_prefix
        )
    if principal.expires_at is not None and principal.expires_at <= datetime.now(UTC):
        raise ExpiredKeyError(
            f"API key {principal.key_prefix!r} expired at {principal.expires_at.isoformat()}",
            prefix=principal.key_prefix,
        )
    if entry.tenant_status == "suspended":
        raise TenantSuspendedError(f"tenant {principal.tenant_id!r} is suspended", tenant=principal.tenant_id)
    if entry.tenant_status in {"offboarding", "deleted"}:
        raise TenantInactiveError(
            f"tenant {principal.tenant_id!r} is {entry.tenant_status}",
            tenant=principal.tenant_id,
            status=entry.tenant_status,
        )
    return principal
