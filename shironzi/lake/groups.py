"""Tenant -> table routing: which tables of the lake hold a tenant's rows.

Pooled tenants share their region's tables (`{lake}/{region}/{layer}/{table}`); a dedicated tenant has its own
root (`{lake}/{region}/tenants/{tenant_id}/{layer}/{table}`). A `LakeGroup` is a set of tenants whose rows share
one table per layer, so a pipeline does one read or write per group, not per tenant.

    for group in lake_groups(tenant_ids, settings):
        uri = group.uri(settings, layer="features", table="customer_activity")
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from shironzi.dr.regions import serving_lake
from shironzi.errors import TenantNotFoundError
from shironzi.lake.paths import Layer, Placement, table_uri
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import get_registry


@dataclass(frozen=True)
class LakeGroup:
    """Tenants whose rows share one table per layer: a region's pooled tables, or one dedicated tenant's own."""

    region: str
    placement: Placement
    tenant_id: str | None  # the dedicated tenant; None for the pooled tables
    tenant_ids: tuple[str, ...]

    @classmethod
    def pooled(cls, region: str, tenant_ids: Iterable[str] = ()) -> LakeGroup:
        return cls(region, "pooled", None, tuple(tenant_ids))

    @classmethod
    def of_tenant(cls, tenant_id: str, *, region: str, placement: str) -> LakeGroup:
        """The group holding one tenant's rows: its own root when dedicated, else its region's pooled tables."""
        if placement == "dedicated":
            return cls(region, "dedicated", tenant_id, (tenant_id,))
        return cls.pooled(region, (tenant_id,))

    def table_uri(self, lake_uri: str, *, layer: Layer, table: str) -> str:
        return table_uri(lake_uri, layer=layer, table=table, region=self.region, placement=self.placement,
                         tenant_id=self.tenant_id)

    def uri(self, settings: Settings, *, layer: Layer, table: str) -> str:
        """The table in the lake serving the group's region now (its own, or its replica after a failover)."""
        return self.table_uri(serving_lake(settings, self.region).uri, layer=layer, table=table)


def lake_groups(tenant_ids: Iterable[str], settings: Settings | None = None) -> list[LakeGroup]:
    """Group tenants by their tables (pooled per region, or their own when dedicated): dedicated tenants first,
    then one pooled group per region. An unknown tenant raises TenantNotFoundError."""
    settings = settings or get_settings()
    wanted = sorted(set(tenant_ids))
    directory = get_registry(settings).tenant_infos(wanted)
    pooled: dict[str, list[str]] = defaultdict(list)
    groups: list[LakeGroup] = []
    for tenant_id in wanted:
        info = directory.get(tenant_id)
        if info is None:
            raise TenantNotFoundError(tenant_id)
        if info.placement == "dedicated":
            groups.append(LakeGroup.of_tenant(tenant_id, region=info.region, placement=info.placement))
        else:
            pooled[info.region].append(tenant_id)
    groups += [LakeGroup.pooled(region, ids) for region, ids in sorted(pooled.items())]
    return groups


def tenant_group(tenant_id: str, *, region: str, settings: Settings | None = None) -> LakeGroup:
    """The group holding one tenant's rows in `region`, from the (cached) tenant directory; an unknown tenant
    reads the pooled tables."""
    info = get_registry(settings).tenant_directory().get(tenant_id)
    return LakeGroup.of_tenant(tenant_id, region=region, placement=info.placement if info is not None else "pooled")


def tenant_read_groups(tenant_id: str, *, region: str, placement: str) -> tuple[LakeGroup, ...]:
    """Every group that may hold a tenant's rows: its own (dedicated root or pooled tables), then its region's
    pooled tables, where rows written before a placement move may still live. Reads filter on `tenant_id`."""
    own = LakeGroup.of_tenant(tenant_id, region=region, placement=placement)
    return (own,) if own.placement == "pooled" else (own, LakeGroup.pooled(region))


def region_groups(region: str, settings: Settings | None = None) -> list[LakeGroup]:
    """Every copy of a region's tables: the pooled group, then each dedicated tenant's own (from the cached
    tenant directory)."""
    directory = get_registry(settings).tenant_directory()
    pooled = sorted(t for t, info in directory.items() if info.region == region and info.placement != "dedicated")
    dedicated = sorted(t for t, info in directory.items() if info.region == region and info.placement == "dedicated")
    return [LakeGroup.pooled(region, pooled),
            *(LakeGroup.of_tenant(t, region=region, placement="dedicated") for t in dedicated)]
