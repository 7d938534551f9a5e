"""The tenant registry: event-sourced tenants, modules and API keys on SQLite or PostgreSQL."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shironzi.errors import (
    DuplicateSlugError,
    ExpiredKeyError,
    InvalidInputError,
    InvalidKeyError,
    InvalidStateError,
    NotFoundError,
    PermissionDeniedError,
    RevokedKeyError,
    TenantInactiveError,
    TenantNotFoundError,
    TenantSuspendedError,
)
from shironzi.observability import StageSummary, log_stage_summary
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import catalog
from shironzi.tenancy.bulk import ImportFormat, read_rows, validate_rows
from shironzi.tenancy.catalog import Placement
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.db import create_registry_engine, migrate, write_transaction
from shironzi.tenancy.events import (
    Progress,
    ProjectionState,
    TenantEvent,
    append_events,
    apply_event,
    insert_rows,
    load_state,
    new_event,
    replay,
    row_to_event,
    utcnow,
    write_diff,
)
from shironzi.tenancy.invalidation import Invalidation, invalidation_of
from shironzi.tenancy.invalidation import publish as publish_invalidation
from shironzi.tenancy.keys import (
    CachedCheck,
    KeyCheckCache,
    KeyPrincipal,
    KeyRecord,
    Outcome,
    cache_key,
    generate_key,
    parse_key,
    random_bytes,
    secret_matches,
)
from shironzi.tenancy.models import PROJECTION_TABLES, api_keys, tenant_events, tenant_modules, tenants
from shironzi.tenancy.records import ImportResult, ProvisionedTenant, ProvisionSpec, Tenant, TenantInfo

INITIAL_KEY_SCOPES: tuple[str, ...] = ("read", "write", "admin")
MAX_PAGE_SIZE = 10_000
_WRITE_ATTEMPTS = 3
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def new_tenant_id() -> str:
    """`t_` + 16 random lowercase base32 characters (80 bits); a valid lake path name."""
    return "t_" + "".join(_B32[b & 31] for b in random_bytes(16))


@dataclass(frozen=True, slots=True)
class RebuildResult:
    events: int
    tenants: int
    modules: int
    keys: int
    seconds: float


class Registry:
    """Engine + session factory for one registry database, with the tenancy operations on top."""

    def __init__(self, engine: Engine, *, settings: Settings | None = None) -> None:
        self.engine = engine
        self.settings = settings or get_settings()
        self.session_factory: sessionmaker[Session] = sessionmaker(engine, expire_on_commit=False)
        # Hot single-statement reads (key checks, module toggles) run in autocommit on PostgreSQL: one
        # round trip each, with no BEGIN/ROLLBACK around them.
        self._hot_reads = (
            engine.execution_options(isolation_level="AUTOCOMMIT")
            if engine.dialect.name == "postgresql"
            else engine
        )
        self.key_cache = KeyCheckCache(self.settings.key_cache_ttl_seconds)
        self._module_cache: dict[str, tuple[float, frozenset[str]]] = {}
        self._directory_cache: tuple[float, dict[str, TenantInfo]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, run_migrations: bool = True) -> Registry:
        """A new registry for settings.resolved_database_url (a fresh instance: its own caches)."""
        settings = settings or get_settings()
        if settings.database_url is None:
            settings.ensure_home()
        registry = cls(create_registry_engine(settings.resolved_database_url), settings=settings)
        if run_migrations:
            registry.init_schema()
        return registry

    def init_schema(self) -> None:
        """Run the Alembic migrations up to head."""
        migrate(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    @property
    def url(self) -> str:
        return self.engine.url.render_as_string(hide_password=True)

    # --- reads ----------------------------------------------------------------------------------------

    def get_tenant(self, id_or_slug: str) -> Tenant:
        """A tenant by id (`t_...`) or slug."""
        with self.engine.connect() as conn:
            return Tenant.from_row(self._tenant_row(conn, id_or_slug))

    def _tenant_row(self, conn: Connection, id_or_slug: str, *, lock: bool = False) -> Any:
        if not isinstance(id_or_slug, str) or not id_or_slug:
            raise TenantNotFoundError(str(id_or_slug))
        column = tenants.c.id if id_or_slug.startswith("t_") else tenants.c.slug
        query = sa.select(tenants).where(column == id_or_slug)
        row = conn.execute(query.with_for_update() if lock else query).mappings().first()
        if row is None:
            raise TenantNotFoundError(id_or_slug)
        return row

    def list_tenants(
        self,
        *,
        status: str | None = None,
        industry: str | None = None,
        plan: str | None = None,
        region: str | None = None,
        module: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Tenant], int]:
        """One page of tenants ordered by slug, and the total that match the filters."""
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise InvalidInputError(
                f"limit must be between 1 and {MAX_PAGE_SIZE}, got {limit}", field="limit"
            )
        if offset < 0:
            raise InvalidInputError(f"offset must not be negative, got {offset}", field="offset")
        conditions: list[Any] = []
        if status is not None:
            conditions.append(tenants.c.status == catalog._one_of("status", status, catalog.STATUSES))
        if industry is not None:
            conditions.append(tenants.c.industry == catalog.check_industry(industry))
        if plan is not None:
            conditions.append(tenants.c.plan == catalog.check_plan(plan))
        if region is not None:
            conditions.append(tenants.c.region == catalog.check_region(region, self.settings.regions))
        if module is not None:
            catalog.check_module(module)
            conditions.append(
                tenants.c.id.in_(
                    sa.select(tenant_modules.c.tenant_id).where(tenant_modules.c.module == module)
                )
            )
        with self.engine.connect() as conn:
            total = conn.execute(
                sa.select(sa.func.count()).select_from(tenants).where(*conditions)
            ).scalar_one()
            rows = conn.execute(
                sa.select(tenants).where(*conditions).order_by(tenants.c.slug).limit(limit).offset(offset)
            ).mappings()
            return [Tenant.from_row(r) for r in rows], int(total)

    def modules(self, tenant_id: str) -> list[str]:
        """The modules switched on for a tenant, in catalogue order."""
        return [m for m in catalog.MODULES if m in self._enabled_set(tenant_id, fresh=True)]

    def is_enabled(self, tenant_id: str, module: str) -> bool:
        """Whether a module is on for a tenant (cached for settings.module_cache_ttl_seconds)."""
        if module not in catalog.MODULES:
            catalog.check_module(module)
        return module in self._enabled_set(tenant_id)

    def _enabled_set(self, tenant_id: str, *, fresh: bool = False) -> frozenset[str]:
        ttl = self.settings.module_cache_ttl_seconds
        if not fresh and ttl > 0:
            hit = self._module_cache.get(tenant_id)
            if hit is not None and hit[0] >= time.monotonic():
                return hit[1]
        with self._hot_reads.connect() as conn:
            tid = self._tenant_row(conn, tenant_id)["id"]
            enabled: frozenset[str] = frozenset(
                conn.execute(
                    sa.select(tenant_modules.c.module).where(tenant_modules.c.tenant_id == tid)
                ).scalars()
            )
        if ttl > 0:
            self._module_cache[tenant_id] = (time.monotonic() + ttl, enabled)
        return enabled

    def tenants_with_module(self, module: str, *, statuses: Iterable[str] = ("active",)) -> list[str]:
        """Ids of the tenants (by default only active ones) that have `module` on: pipelines skip the rest."""
        catalog.check_module(module)
        wanted = [catalog._one_of("status", s, catalog.STATUSES) for s in statuses]
        query = (
            sa.select(tenant_modules.c.tenant_id)
            .join(tenants, tenants.c.id == tenant_modules.c.tenant_id)
            .where(tenant_modules.c.module == module, tenants.c.status.in_(wanted))
            .order_by(tenant_modules.c.tenant_id)
        )
        with self.engine.connect() as conn:
            return list(conn.execute(query).scalars())

    def tenant_directory(self, *, fresh: bool = False) -> dict[str, TenantInfo]:
        """Every tenant's id -> TenantInfo, for vectorised validation (cached like module toggles)."""
        ttl = self.settings.module_cache_ttl_seconds
        cached = self._directory_cache
        if not fresh and cached is not None and cached[0] >= time.monotonic():
            return dict(cached[1])
        columns = (
            tenants.c.id,
            tenants.c.slug,
            tenants.c.industry,
            tenants.c.region,
            tenants.c.plan,
            tenants.c.placement,
            tenants.c.status,
        )
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*columns)).all()
        directory = {row[0]: TenantInfo._make(row) for row in rows}
        if ttl > 0:
            self._directory_cache = (time.monotonic() + ttl, directory)
        return dict(directory)

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

    def get_key(self, prefix: str) -> KeyRecord:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.prefix == prefix)).mappings().first()
        if row is None:
            raise NotFoundError(f"API key {prefix!r} not found", prefix=prefix)
        return _key_record(row)

    def events(self, tenant_id: str | None = None, *, limit: int | None = None) -> list[TenantEvent]:
        """The event log in order (one tenant's when given, else every event including platform keys)."""
        query = sa.select(tenant_events).order_by(tenant_events.c.sequence)
        with self.engine.connect() as conn:
            if tenant_id is not None:
                query = query.where(tenant_events.c.tenant_id == self._tenant_row(conn, tenant_id)["id"])
            if limit is not None:
                query = query.limit(limit)
            return [row_to_event(r) for r in conn.execute(query)]

    # --- API key verification ------------------------------------------------------------------------

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

    # --- writes: one transaction each, events first, projection from the same fold -------------------

    def _commit(
        self,
        decide: Callable[[Connection, ProjectionState], list[TenantEvent]],
        *,
        tenant: str | None = None,
        ctx: TenantContext,
        prefixes: Sequence[str] = (),
    ) -> tuple[ProjectionState, list[TenantEvent]]:
        """Lock and load what a command touches, let it decide its events, store them and the projection."""
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with write_transaction(self.engine) as conn:
                    tenant_ids: list[str] = []
                    if tenant is not None:
                        tenant_ids.append(self._locked_tenant_id(conn, tenant, ctx))
                    before = load_state(conn, tenant_ids=tenant_ids, prefixes=prefixes, lock=True)
                    events = decide(conn, before)
                    after = before.copy()
                    for event in events:
                        apply_event(after, event)
                    append_events(conn, events)
                    write_diff(conn, before, after)
                self._forget(after, events)
                _audit_registry_events(ctx, events)
                return after, events
            except IntegrityError:
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")

    def _locked_tenant_id(self, conn: Connection, id_or_slug: str, ctx: TenantContext) -> str:
        try:
            tid = self._tenant_row(conn, id_or_slug, lock=True)["id"]
        except TenantNotFoundError:
            if not ctx.is_admin:  # do not tell a tenant context which other tenants exist
                raise PermissionDeniedError(
                    f"context for tenant {ctx.tenant_id!r} may not act on {id_or_slug!r}",
                    tenant=id_or_slug,
                    actor=ctx.actor,
                ) from None
            raise
        ctx.require_tenant(tid)
        return str(tid)

    def _forget(self, state: ProjectionState, events: Iterable[TenantEvent]) -> None:
        """Cache invalidation after a committed change: here at once, elsewhere through `invalidation`."""
        change = invalidation_of(events, lambda tid: state.tenants.get(tid, {}).get("slug"))
        self.apply_invalidation(change)
        publish_invalidation(self.settings, change)

    def apply_invalidation(self, change: Invalidation) -> None:
        """Drop what a change (made here or in another process) made stale."""
        self._directory_cache = None
        if change.everything:
            self._module_cache.clear()
            self.key_cache.clear()
            return
        for name in (*change.tenants, *change.slugs):
            self._module_cache.pop(name, None)
        for tenant_id in change.key_tenants:
            self.key_cache.forget_tenant(tenant_id)
        for prefix in change.prefixes:
            self.key_cache.forget_prefix(prefix)

    def _event(self, ctx: TenantContext, type_: Any, tenant_id: str | None, **payload: Any) -> TenantEvent:
        return new_event(type_, tenant_id=tenant_id, actor=ctx.actor, purpose=ctx.purpose, payload=payload)

    # provisioning

    def provision_tenant(
        self,
        ctx: TenantContext,
        *,
        slug: str,
        name: str,
        industry: str,
        region: str | None = None,
        plan: str = "standard",
        placement: str | None = None,
    ) -> tuple[Tenant, str]:
        """Create a tenant with its lake namespace, its plan's modules and its first API key (shown once)."""
        ctx.require_admin("provisioning a tenant")
        spec = self.validate_spec(
            slug=slug, name=name, industry=industry, region=region, plan=plan, placement=placement
        )
        provisioned = self.provision_many(ctx, [spec])
        return provisioned[0].tenant, provisioned[0].api_key

    def validate_spec(
        self,
        *,
        slug: object,
        name: object,
        industry: object,
        region: object = None,
        plan: object = "standard",
        placement: object = None,
    ) -> ProvisionSpec:
        """Check one tenant's fields and fill in the region and placement defaults."""
        slug = catalog.check_slug(slug)
        name = catalog.check_name(name)
        industry = catalog.check_industry(industry)
        region = catalog.check_region(
            region if region is not None else self.settings.default_region, self.settings.regions
        )
        plan = catalog.check_plan(plan)
        placement = (
            catalog.check_placement(placement)
            if placement is not None
            else catalog.default_placement(plan=plan, industry=industry)
        )
        return ProvisionSpec(slug, name, industry, region, plan, placement)

    def lake_namespace(
        self, *, tenant_id: str, region: str, placement: str, lake_uri: str | None = None
    ) -> str:
        """The lake root a tenant's tables live under (the shared region root for pooled tenants)."""
        from shironzi.lake.paths import table_uri

        probe = table_uri(
            lake_uri or self.settings.resolved_lake_uri,
            layer="bronze",
            table="events",
            region=region,
            placement=cast(Placement, placement),
            tenant_id=tenant_id,
        )
        return probe.removesuffix("/bronze/events")

    def provision_many(
        self, ctx: TenantContext, specs: Sequence[ProvisionSpec], *, progress: Progress | None = None
    ) -> list[ProvisionedTenant]:
        """Provision validated tenants in ONE transaction with bulk inserts; all or nothing."""
        ctx.require_admin("provisioning tenants")
        if not specs:
            return []
        started = time.perf_counter()
        # The stage line is logged only on success: a failure is reported once, as its error.
        for attempt in range(_WRITE_ATTEMPTS):
            events, keys, state = self._provisioning_events(ctx, specs)
            try:
                with write_transaction(self.engine) as conn:
                    taken = self._existing_slugs(conn, [s.slug for s in specs])
                    if taken:
                        raise _duplicate_slugs(specs, taken)
                    self._insert_state(conn, state, events, progress=progress)
                break
            except IntegrityError:
                with self.engine.connect() as conn:
                    taken = self._existing_slugs(conn, [s.slug for s in specs])
                if taken:
                    raise _duplicate_slugs(specs, taken) from None
                if attempt == _WRITE_ATTEMPTS - 1:
                    raise
        log_stage_summary(
            StageSummary("tenants.provision", rows=len(specs), seconds=time.perf_counter() - started)
        )
        self._directory_cache = None
        _audit_registry_events(ctx, events)
        return [ProvisionedTenant(Tenant.from_row(state.tenants[tid]), keys[tid]) for tid in state.tenants]

    def _provisioning_events(
        self, ctx: TenantContext, specs: Sequence[ProvisionSpec]
    ) -> tuple[list[TenantEvent], dict[str, str], ProjectionState]:
        events: list[TenantEvent] = []
        plaintext: dict[str, str] = {}
        prefixes: set[str] = set()
        state = ProjectionState()
        now = utcnow()
        lake_uri = self.settings.resolved_lake_uri
        pooled_roots: dict[str, str] = {}
        for spec in specs:
            tid = new_tenant_id()
            while tid in state.tenants:
                tid = new_tenant_id()
            key = generate_key()
            while key.prefix in prefixes:
                key = generate_key()
            prefixes.add(key.prefix)
            if spec.placement == "pooled":
                if spec.region not in pooled_roots:
                    pooled_roots[spec.region] = self.lake_namespace(
                        tenant_id=tid, region=spec.region, placement="pooled", lake_uri=lake_uri
                    )
                namespace = pooled_roots[spec.region]
            else:
                namespace = self.lake_namespace(
                    tenant_id=tid, region=spec.region, placement=spec.placement, lake_uri=lake_uri
                )
            created = new_event(
                "tenant_created",
                tenant_id=tid,
                actor=ctx.actor,
                purpose=ctx.purpose,
                occurred_at=now,
                payload={
                    "slug": spec.slug,
                    "name": spec.name,
                    "industry": spec.industry,
                    "region": spec.region,
                    "plan": spec.plan,
                    "placement": spec.placement,
                    "lake_namespace": namespace,
                    "modules": list(catalog.PLAN_DEFAULT_MODULES[spec.plan]),
                },
            )
            issued = new_event(
                "key_issued",
                tenant_id=tid,
                actor=ctx.actor,
                purpose=ctx.purpose,
                occurred_at=now,
                payload={
                    "prefix": key.prefix,
                    "key_hash": key.key_hash,
                    "salt": key.salt,
                    "scopes": list(INITIAL_KEY_SCOPES),
                    "label": "initial",
                    "expires_at": None,
                },
            )
            for event in (created, issued):
                apply_event(state, event)
                events.append(event)
            plaintext[tid] = key.plaintext
        return events, plaintext, state

    def _existing_slugs(self, conn: Connection, slugs: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(slugs), 5000):
            chunk = list(slugs[start : start + 5000])
            found.update(conn.execute(sa.select(tenants.c.slug).where(tenants.c.slug.in_(chunk))).scalars())
        return found

    def _insert_state(
        self,
        conn: Connection,
        state: ProjectionState,
        events: Sequence[TenantEvent],
        *,
        progress: Progress | None,
    ) -> None:
        # In primary-key order: B-tree inserts stay local, which matters at 100,000s of rows.
        rows = {
            "tenants": [state.tenants[k] for k in sorted(state.tenants)],
            "modules": [state.modules[k] for k in sorted(state.modules)],
            "keys": [state.keys[k] for k in sorted(state.keys)],
        }
        total = sum(len(r) for r in rows.values()) + len(events)
        done = 0

        def advance(n: int) -> None:
            nonlocal done
            done += n
            if progress:
                progress("writing", done, total)

        insert_rows(conn, tenants, rows["tenants"], progress=advance)
        insert_rows(conn, tenant_modules, rows["modules"], progress=advance)
        insert_rows(conn, api_keys, rows["keys"], progress=advance)
        if events:
            append_events(conn, events, progress=advance)

    def import_tenants(
        self,
        ctx: TenantContext,
        path: str | Path,
        *,
        fmt: ImportFormat | None = None,
        progress: Progress | None = None,
    ) -> ImportResult:
        """Provision every tenant of a CSV/JSON/JSONL file; one bad row rejects it all (with line numbers)."""
        ctx.require_admin("importing tenants")
        started = time.perf_counter()
        path = Path(path)
        rows = read_rows(path, fmt=fmt)
        checked = 0

        def validated(n: int) -> None:
            nonlocal checked
            checked += n
            if progress:
                progress("validating", checked, len(rows))

        def existing(slugs: list[str]) -> set[str]:
            with self.engine.connect() as conn:
                return self._existing_slugs(conn, slugs)

        specs = validate_rows(
            str(path),
            rows,
            regions=self.settings.regions,
            default_region=self.settings.default_region,
            existing_slugs=existing,
            progress=validated,
        )
        provisioned = self.provision_many(ctx, specs, progress=progress)
        return ImportResult(provisioned, time.perf_counter() - started)

    # plan, status

    def change_plan(self, ctx: TenantContext, tenant_id: str, plan: str) -> Tenant:
        """Move a tenant to another plan and switch on that plan's default modules it lacks."""
        ctx.require_admin("changing a tenant's plan")
        plan = catalog.check_plan(plan)

        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            ((tid, row),) = state.tenants.items()
            _require_live(tid, row)
            if row["plan"] == plan:
                raise InvalidStateError(
                    f"tenant {tid!r} is already on the {plan} plan", tenant=tid, plan=plan
                )
            events = [self._event(ctx, "plan_changed", tid, **{"from": row["plan"], "to": plan})]
            enabled = state.enabled_modules(tid)
            for module in catalog.PLAN_DEFAULT_MODULES[plan]:
                if module not in enabled:
                    catalog.check_can_enable(tid, module, enabled)
                    enabled.add(module)
                    events.append(self._event(ctx, "module_enabled", tid, module=module))
            return events

        state, _ = self._commit(decide, tenant=tenant_id, ctx=ctx)
        return Tenant.from_row(next(iter(state.tenants.values())))

    def _transition(
        self, ctx: TenantContext, tenant_id: str, *, event_type: Any, target: str, **payload: Any
    ) -> Tenant:
        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            ((tid, row),) = state.tenants.items()
            catalog.check_transition(tid, row["status"], target)
            return [self._event(ctx, event_type, tid, **{k: v for k, v in payload.items() if v is not None})]

        state, _ = self._commit(decide, tenant=tenant_id, ctx=ctx)
        return Tenant.from_row(next(iter(state.tenants.values())))

    def suspend(self, ctx: TenantContext, tenant_id: str, *, reason: str | None = None) -> Tenant:
        """Suspend an active tenant: its keys stop authenticating (in running API workers within ~1 s)."""
        ctx.require_admin("suspending a tenant")
        return self._transition(ctx, tenant_id, event_type="suspended", target="suspended", reason=reason)

    def resume(self, ctx: TenantContext, tenant_id: str) -> Tenant:
        """Reactivate a suspended tenant, or cancel an offboarding; a deleted tenant cannot come back."""
        ctx.require_admin("resuming a tenant")
        return self._transition(ctx, tenant_id, event_type="resumed", target="active")

    def offboard(self, ctx: TenantContext, tenant_id: str, *, reason: str | None = None) -> Tenant:
        """Start offboarding: keys stop working, data is kept until erasure completes."""
        ctx.require_admin("offboarding a tenant")
        return self._transition(
            ctx, tenant_id, event_type="offboarding_started", target="offboarding", reason=reason
        )

    def complete_offboarding(self, ctx: TenantContext, tenant_id: str) -> Tenant:
        """Mark an offboarding tenant deleted (after its data has been erased elsewhere); final."""
        ctx.require_admin("completing an offboarding")
        return self._transition(ctx, tenant_id, event_type="tenant_deleted", target="deleted")

    # modules

    def enable_module(self, ctx: TenantContext, tenant_id: str, module: str) -> list[str]:
        """Switch a module on; its dependencies must already be on. Returns the enabled modules."""
        module = catalog.check_module(module)

        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            ((tid, row),) = state.tenants.items()
            _require_live(tid, row)
            enabled = state.enabled_modules(tid)
            if module in enabled:
                raise InvalidStateError(
                    f"module {module!r} is already enabled for tenant {tid!r}", tenant=tid, module=module
                )
            catalog.check_can_enable(tid, module, enabled)
            return [self._event(ctx, "module_enabled", tid, module=module)]

        state, _ = self._commit(decide, tenant=tenant_id, ctx=ctx)
        return _catalogue_order(m for (_, m) in state.modules)

    def disable_module(self, ctx: TenantContext, tenant_id: str, module: str) -> list[str]:
        """Switch a module off; refused while enabled modules depend on it. Returns the enabled modules."""
        module = catalog.check_module(module)

        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            ((tid, row),) = state.tenants.items()
            _require_live(tid, row)
            enabled = state.enabled_modules(tid)
            if module not in enabled:
                raise InvalidStateError(
                    f"module {module!r} is not enabled for tenant {tid!r}", tenant=tid, module=module
                )
            catalog.check_can_disable(tid, module, enabled)
            return [self._event(ctx, "module_disabled", tid, module=module)]

        state, _ = self._commit(decide, tenant=tenant_id, ctx=ctx)
        return _catalogue_order(m for (_, m) in state.modules)

    # keys

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
                _require_live(tid, state.tenants[tid], allow_suspended=True)
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

    # replay

    def rebuild(self, ctx: TenantContext) -> RebuildResult:
        """Replay the whole event log into fresh projections (one transaction)."""
        ctx.require_admin("rebuilding the registry projections")
        started = time.perf_counter()
        with write_transaction(self.engine) as conn:
            state = replay(conn)
            events = conn.execute(sa.select(sa.func.count()).select_from(tenant_events)).scalar_one()
            for table in reversed(PROJECTION_TABLES):
                conn.execute(table.delete())
            self._insert_state(conn, state, [], progress=None)
        log_stage_summary(
            StageSummary("tenants.rebuild", rows=int(events), seconds=time.perf_counter() - started)
        )
        self.apply_invalidation(Invalidation(everything=True))
        publish_invalidation(self.settings, Invalidation(everything=True))
        return RebuildResult(
            events=int(events),
            tenants=len(state.tenants),
            modules=len(state.modules),
            keys=len(state.keys),
            seconds=time.perf_counter() - started,
        )


def _audit_registry_events(ctx: TenantContext, events: Sequence[TenantEvent]) -> None:
    """Every committed registry change also goes to the tamper-evident audit log, written synchronously."""
    from shironzi.audit.admin import audit_registry_events

    audit_registry_events(ctx, events)


def _catalogue_order(modules: Iterable[str]) -> list[str]:
    present = set(modules)
    return [m for m in catalog.MODULES if m in present]


def _require_live(tenant_id: str, row: dict[str, Any], *, allow_suspended: bool = True) -> None:
    if row["status"] in {"offboarding", "deleted"} or (row["status"] == "suspended" and not allow_suspended):
        raise InvalidStateError(
            f"tenant {tenant_id!r} is {row['status']}: it cannot be changed",
            tenant=tenant_id,
            status=row["status"],
        )


def _duplicate_slugs(specs: Sequence[ProvisionSpec], taken: set[str]) -> DuplicateSlugError:
    where = [f"{s.slug!r}" + (f" (line {s.line})" if s.line else "") for s in specs if s.slug in taken]
    return DuplicateSlugError(f"slug already exists: {', '.join(where)}", slugs=sorted(taken))


def _key_record(row: Any) -> KeyRecord:
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


# --- one registry per database URL --------------------------------------------------------------------

_registries: dict[str, Registry] = {}
_registries_lock = threading.Lock()


def get_registry(settings: Settings | None = None) -> Registry:
    """The process's registry for the configured database URL (migrated on first use)."""
    settings = settings or get_settings()
    url = settings.resolved_database_url
    registry = _registries.get(url)
    if registry is None:
        with _registries_lock:
            registry = _registries.get(url)
            if registry is None:
                registry = Registry.from_settings(settings)
                _registries[url] = registry
    return registry


def init_registry(settings: Settings | None = None) -> Registry:
    """Create or upgrade the registry schema and return the registry."""
    registry = get_registry(settings)
    registry.init_schema()
    return registry


def reset_registries() -> None:
    """Dispose every cached registry (tests, forks)."""
    with _registries_lock:
        for registry in _registries.values():
            registry.close()
        _registries.clear()
