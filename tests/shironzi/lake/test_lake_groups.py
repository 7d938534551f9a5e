"""Tenant -> table routing: pooled tenants share their region's tables, a dedicated tenant has its own root,
and every caller (training, scoring, features, dashboards, the API) gets the same answer from the registry."""

from __future__ import annotations

import pytest

from shironzi.errors import TenantNotFoundError
from shironzi.lake.groups import LakeGroup, lake_groups, region_groups, tenant_group
from shironzi.settings import Settings
from shironzi.tenancy import TenantContext, get_registry


def _provision(settings: Settings) -> dict[str, str]:
    """slug -> id of four tenants: two pooled in eu-west, one dedicated in eu-west, one pooled in us-east."""
    registry = get_registry(settings)
    ctx = TenantContext.admin(actor="test", purpose="lake groups test")
    ids = {}
    for slug, region, placement in (("shop-a", "eu-west", "pooled"), ("shop-b", "eu-west", "pooled"),
                                    ("big", "eu-west", "dedicated"), ("far", "us-east", "pooled")):
        tenant, _ = registry.provision_tenant(ctx, slug=slug, name=slug, industry="ecommerce", plan="standard",
                                              region=region, placement=placement)
        ids[slug] = tenant.id
    return ids


def test_lake_groups_route_each_tenant_to_its_tables(settings: Settings) -> None:
    ids = _provision(settings)
    lake = settings.resolved_lake_uri
    groups = lake_groups([ids["far"], ids["shop-b"], ids["big"], ids["shop-a"], ids["shop-a"]], settings)
    assert groups == [
        LakeGroup("eu-west", "dedicated", ids["big"], (ids["big"],)),
        LakeGroup("eu-west", "pooled", None, tuple(sorted((ids["shop-a"], ids["shop-b"])))),
        LakeGroup("us-east", "pooled", None, (ids["far"],)),
    ]
    assert groups[0].uri(settings, layer="predictions", table="forecasts") == (
        f"{lake}/eu-west/tenants/{ids['big']}/predictions/forecasts")
    assert groups[1].uri(settings, layer="gold", table="fct_tenant_daily_kpis") == (
        f"{lake}/eu-west/gold/fct_tenant_daily_kpis")
    with pytest.raises(TenantNotFoundError):
        lake_groups([ids["far"], "no-such-tenant"], settings)


def test_one_tenant_and_one_region(settings: Settings) -> None:
    ids = _provision(settings)
    lake = settings.resolved_lake_uri
    own = tenant_group(ids["big"], region="eu-west", settings=settings)
    assert own.table_uri(lake, layer="bronze", table="events") == f"{lake}/eu-west/tenants/{ids['big']}/bronze/events"
    pooled = tenant_group(ids["shop-a"], region="eu-west", settings=settings)
    assert pooled.table_uri(lake, layer="bronze", table="events") == f"{lake}/eu-west/bronze/events"
    # an unknown tenant reads the pooled tables (it has no rows there either)
    assert tenant_group("no-such-tenant", region="eu-west", settings=settings).placement == "pooled"
    assert region_groups("eu-west", settings) == [
        LakeGroup.pooled("eu-west", sorted((ids["shop-a"], ids["shop-b"]))),
        LakeGroup.of_tenant(ids["big"], region="eu-west", placement="dedicated"),
    ]
    assert region_groups("ap-south", settings) == [LakeGroup.pooled("ap-south")]
