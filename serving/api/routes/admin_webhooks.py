"""Webhook operations for platform admins: any tenant's (or the alert receivers') deliveries, and redelivery."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from serving.api.docs import admin_op
from serving.api.routes.webhooks import delivery_public
from serving.deps import AdminDep
from serving.errors import ERROR_RESPONSES
from serving.schemas import WebhookDeliveriesPage
from shironzi.webhooks.delivery import delivery_log, redeliver

router = APIRouter(prefix="/v1/admin/webhooks", tags=["admin: webhooks"], responses=ERROR_RESPONSES)

DeliveryPath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[0-9a-f]+$")]


@router.get("/deliveries", response_model=WebhookDeliveriesPage, openapi_extra=admin_op(write=False))
def list_deliveries(admin: AdminDep, tenant_id: Annotated[str | None, Query(max_length=100)] = None,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50) -> WebhookDeliveriesPage:
    """The newest deliveries (one tenant's when given), each with its state and attempts."""
    rows = delivery_log(settings=admin.services.settings, tenant_id=tenant_id, limit=limit)
    admin.audit_read("api_webhook_deliveries_listed", tenant_id=tenant_id, returned=len(rows))
    return WebhookDeliveriesPage(items=[delivery_public(r) for r in rows])


@router.post("/deliveries/{delivery_id}/redeliver", response_model=WebhookDeliveriesPage,
             openapi_extra=admin_op(write=True))
def redeliver_delivery(delivery_id: DeliveryPath, admin: AdminDep) -> WebhookDeliveriesPage:
    """Send a delivery again (same body and idempotency key) as a new delivery; answers the new one."""
    settings = admin.services.settings
    result = redeliver(delivery_id, settings=settings)
    new_id = (result.delivered + result.retrying + result.dead)[0]
    rows = delivery_log(settings=settings, delivery_id=new_id, limit=1)
    admin.audit_write("api_webhook_redelivered", tenant_id=rows[0]["tenant_id"], delivery=delivery_id,
                      redelivery=new_id)
    return WebhookDeliveriesPage(items=[delivery_public(r) for r in rows])
