"""The caller's own tenant: profile, plan, enabled modules and usage."""

from __future__ import annotations

from fastapi import APIRouter

from serving.api.docs import tenant_op
from serving.deps import TenantReadDep
from serving.errors import ERROR_RESPONSES
from serving.schemas import MeteredUsagePublic, OwnTenantPublic, UsagePublic
from shironzi.metering.cost import month_to_date

router = APIRouter(prefix="/v1/tenant", tags=["tenant"], responses=ERROR_RESPONSES)


@router.get("", response_model=OwnTenantPublic, openapi_extra=tenant_op("read"))
def get_own_tenant(caller: TenantReadDep) -> OwnTenantPublic:
    """Who the key belongs to: profile, plan, modules, today's requests, the plan's rate limit and the metered
    usage of the month to date (events landed, bytes stored, API requests, compute seconds)."""
    services = caller.services
    registry = services.registry
    tenant = registry.get_tenant(caller.tenant_id)
    keys = registry.list_keys(caller.tenant_id)
    usage = UsagePublic(
        requests_today=services.limiter.usage_today(caller.tenant_id),
        rate_limit_per_second=services.rate_for(tenant.plan),
        active_keys=sum(1 for k in keys if k.revoked_at is None),
        month_to_date=MeteredUsagePublic(**month_to_date(caller.tenant_id, settings=services.settings)),
    )
    caller.audit_read(resource_kind="tenant_profile")
    return OwnTenantPublic(**tenant.to_dict(), modules=registry.modules(caller.tenant_id), usage=usage)
