"""The registry store: the database engine, tenant and event reads, the one write path (events first, the
projection from the same fold), cache invalidation and the replay that rebuilds the projections."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from shironzi.errors import InvalidInputError, InvalidStateError, PermissionDeniedError, TenantNotFoundError
from shironzi.observability import StageSummary, log_stage_summary
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import catalog
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
    write_diff,
)
from shironzi.tenancy.invalidation import Invalidation, invalidation_of
from shironzi.tenancy.invalidation import publish as publish_invalidation
from shironzi.tenancy.models import PROJECTION_TABLES, api_keys, tenant_events, tenant_modules, tenants
from shironzi.tenancy.records import Tenant, TenantInfo

MAX_PAGE_SIZE = 10_000
# keyed reads of more ids than this read the whole directory (100k tenants: 10k ids by key 0.05 s, 100k ids 0.6 s,
# the whole directory 0.4 s)
DIRECTORY_SCAN = 50_000
KEYED_READ_BATCH = 500  # ids per `IN` of a keyed read (under every backend's bound-parameter limit)
TENANT_SEARCH_LIMIT = 20  # tenants a picker shows per search
MAX_SEARCH_LIMIT = 200
WRITE_ATTEMPTS = 3
_INFO_COLUMNS = (tenants.c.id, tenants.c.slug, tenants.c.industry, tenants.c.region, tenants.c.plan,
                 tenants.c.placement, tenants.c.status)  # TenantInfo's fields, in its order


@dataclass(frozen=True, slots=True)
class RebuildResult:
    events: int
    tenants: int
    modules: int
    keys: int
    seconds: float


def keyed_rows(conn: Connection, query: Any, column: Any, ids: Sequence[str]) -> Iterator[Any]:
    """The rows of `query` whose `column` is one of `ids`, read by key: KEYED_READ_BATCH ids per `IN` (under every
    backend's bound-parameter limit), in `ids` order batch by batch."""
    for start in range(0, len(ids), KEYED_READ_BATCH):
        yield from conn.execute(query.where(column.in_(ids[start:start + KEYED_READ_BATCH])))


class RegistryStore:
    """Engine + session factory for one registry database: tenant reads, the write path and the replay.

    The module and key parts of `Registry` extend it; each adds its own cache in `__init__` and drops it in
    `apply_invalidation` (both call `super()`).
    """

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
        self._directory_cache: tuple[float, dict[str, TenantInfo]] | None = None

    @classmethod
    def from_settings(cls, settings: Settings | None = None, *, run_migrations: bool = True) -> Self:
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

    def search_tenants(
        self,
        query: str = "",
        *,
        limit: int = TENANT_SEARCH_LIMIT,
        statuses: Sequence[str] | None = ("active", "suspended"),
    ) -> list[Tenant]:
        """At most `limit` tenants for a picker, without reading every tenant: an exact id (`t_...`), then slugs
        starting with `query` (a range on the slug's unique index), then slugs or names containing it
        (case-insensitive; the scan stops at the limit). An empty query gives the first slugs. `statuses` limits
        the lifecycle states (default: the live ones; None: all)."""
        if not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise InvalidInputError(f"limit must be between 1 and {MAX_SEARCH_LIMIT}, got {limit}", field="limit")
        text = " ".join(str(query or "").split()).lower()[:200]
        live = [tenants.c.status.in_(list(statuses))] if statuses is not None else []
        found: dict[str, Any] = {}
        escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        with self.engine.connect() as conn:
            if text.startswith("t_"):
                for row in conn.execute(sa.select(tenants).where(tenants.c.id == text, *live)).mappings():
                    found[row["id"]] = row
            prefix = sa.select(tenants).where(
                tenants.c.slug >= text, tenants.c.slug < text + "\x7f",
                tenants.c.slug.like(escaped + "%", escape="\\"), *live,
            )
            for row in conn.execute(prefix.order_by(tenants.c.slug).limit(limit)).mappings():
                found.setdefault(row["id"], row)
            if text and len(found) < limit:
                pattern = f"%{escaped}%"
                contains = sa.select(tenants).where(
                    sa.or_(sa.func.lower(tenants.c.slug).like(pattern, escape="\\"),
                           sa.func.lower(tenants.c.name).like(pattern, escape="\\")),
                    *live,
                ).limit(limit + len(found))
                for row in conn.execute(contains).mappings():
                    found.setdefault(row["id"], row)
        rows = list(found.values())[:limit]
        return [Tenant.from_row(r) for r in rows]

    def tenant_directory(self, *, fresh: bool = False) -> dict[str, TenantInfo]:
        """Every tenant's id -> TenantInfo, for vectorised validation (cached like module toggles)."""
        ttl = self.settings.module_cache_ttl_seconds
        cached = self._directory_cache
        if not fresh and cached is not None and cached[0] >= time.monotonic():
            return dict(cached[1])
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(*_INFO_COLUMNS)).all()
        directory = {row[0]: TenantInfo._make(row) for row in rows}
        if ttl > 0:
            self._directory_cache = (time.monotonic() + ttl, directory)
        return dict(directory)

    def tenant_infos(self, tenant_ids: Iterable[str]) -> dict[str, TenantInfo]:
        """The current TenantInfo of `tenant_ids` (unknown ids are absent), never cached: a job's chunk of 500
        tenants reads their 500 rows by key, not the directory of 100,000 (a read of every row per chunk made
        chunked scoring quadratic in tenants). Past DIRECTORY_SCAN ids one read of the directory is cheaper."""
        wanted = sorted(set(tenant_ids))
        if len(wanted) > DIRECTORY_SCAN:
            directory = self.tenant_directory(fresh=True)
            return {t: directory[t] for t in wanted if t in directory}
        with self.engine.connect() as conn:
            return {row[0]: TenantInfo._make(row)
                    for row in keyed_rows(conn, sa.select(*_INFO_COLUMNS), tenants.c.id, wanted)}

    def events(self, tenant_id: str | None = None, *, limit: int | None = None) -> list[TenantEvent]:
        """The event log in order (one tenant's when given, else every event including platform keys)."""
        query = sa.select(tenant_events).order_by(tenant_events.c.sequence)
        with self.engine.connect() as conn:
            if tenant_id is not None:
                query = query.where(tenant_events.c.tenant_id == self._tenant_row(conn, tenant_id)["id"])
            if limit is not None:
                query = query.limit(limit)
            return [row_to_event(r) for r in conn.execute(query)]

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
        for attempt in range(WRITE_ATTEMPTS):
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
                audit_registry_events(ctx, events)
                return after, events
            except IntegrityError:
                if attempt == WRITE_ATTEMPTS - 1:
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

    def _event(self, ctx: TenantContext, type_: Any, tenant_id: str | None, **payload: Any) -> TenantEvent:
        return new_event(type_, tenant_id=tenant_id, actor=ctx.actor, purpose=ctx.purpose, payload=payload)

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

    # --- replay -------------------------------------------------------------------------------------

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


def audit_registry_events(ctx: TenantContext, events: Sequence[TenantEvent]) -> None:
    """Every committed registry change also goes to the tamper-evident audit log, written synchronously."""
    # Lazy by design: the audit log loads pyarrow, numpy and cloudpickle, which would double `import shironzi.tenancy`.
    from shironzi.audit.admin import audit_registry_events as write_audit_events

    write_audit_events(ctx, events)


def require_live(tenant_id: str, row: dict[str, Any], *, allow_suspended: bool = True) -> None:
    """Refuse changes to an offboarding or deleted tenant (and to a suspended one unless allowed)."""
    if row["status"] in {"offboarding", "deleted"} or (row["status"] == "suspended" and not allow_suspended):
        raise InvalidStateError(
            f"tenant {tenant_id!r} is {row['status']}: it cannot be changed",
            tenant=tenant_id,
            status=row["status"],
        )
