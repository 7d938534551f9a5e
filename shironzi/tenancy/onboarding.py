"""Onboarding tenants: validating a tenant's fields, provisioning one or many in one transaction with bulk
inserts, and importing a CSV/JSON/JSONL file of them."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from shironzi.errors import DuplicateSlugError
from shironzi.lake.paths import table_uri
from shironzi.observability import StageSummary, log_stage_summary
from shironzi.tenancy import catalog
from shironzi.tenancy.bulk import ImportFormat, read_rows, validate_rows
from shironzi.tenancy.catalog import Placement
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.db import write_transaction
from shironzi.tenancy.events import (
    EventType,
    Progress,
    ProjectionState,
    TenantEvent,
    apply_event,
    new_event,
    utcnow,
)
from shironzi.tenancy.keys import generate_key, random_bytes
from shironzi.tenancy.models import tenants
from shironzi.tenancy.records import ImportResult, ProvisionedTenant, ProvisionSpec, Tenant
from shironzi.tenancy.store import WRITE_ATTEMPTS, RegistryStore, audit_registry_events

INITIAL_KEY_SCOPES: tuple[str, ...] = ("read", "write", "admin")
_B32 = "abcdefghijklmnopqrstuvwxyz234567"


def new_tenant_id() -> str:
    """`t_` + 16 random lowercase base32 characters (80 bits); a valid lake path name."""
    return "t_" + "".join(_B32[b & 31] for b in random_bytes(16))


class TenantOnboarding(RegistryStore):
    """The provisioning part of `Registry`."""

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
        for attempt in range(WRITE_ATTEMPTS):
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
                if attempt == WRITE_ATTEMPTS - 1:
                    raise
        log_stage_summary(
            StageSummary("tenants.provision", rows=len(specs), seconds=time.perf_counter() - started)
        )
        self._directory_cache = None
        audit_registry_events(ctx, events)
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

        def event(type_: EventType, tid: str, payload: dict[str, Any]) -> TenantEvent:
            return new_event(
                type_, tenant_id=tid, actor=ctx.actor, purpose=ctx.purpose, occurred_at=now, payload=payload
            )

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
            created = event(
                "tenant_created",
                tid,
                {
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
            issued = event(
                "key_issued",
                tid,
                {
                    "prefix": key.prefix,
                    "key_hash": key.key_hash,
                    "salt": key.salt,
                    "scopes": list(INITIAL_KEY_SCOPES),
                    "label": "initial",
                    "expires_at": None,
                },
            )
            for stored in (created, issued):
                apply_event(state, stored)
                events.append(stored)
            plaintext[tid] = key.plaintext
        return events, plaintext, state

    def _existing_slugs(self, conn: Connection, slugs: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(slugs), 5000):
            chunk = list(slugs[start : start + 5000])
            found.update(conn.execute(sa.select(tenants.c.slug).where(tenants.c.slug.in_(chunk))).scalars())
        return found

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


def _duplicate_slugs(specs: Sequence[ProvisionSpec], taken: set[str]) -> DuplicateSlugError:
    where = [f"{s.slug!r}" + (f" (line {s.line})" if s.line else "") for s in specs if s.slug in taken]
    return DuplicateSlugError(f"slug already exists: {', '.join(where)}", slugs=sorted(taken))
