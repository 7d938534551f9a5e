"""The caller's webhooks (`notifications` module): the delivery log and the signing secret.

The secret is read or rotated with a write key; after a rotation the previous secret keeps signing alongside
the new one for a day, so a receiver can switch without dropping a delivery.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query

from serving.api.docs import tenant_op
from serving.deps import TenantAccess, module_gate
from serving.errors import ERROR_RESPONSES
from serving.schemas import WebhookDeliveriesPage, WebhookDeliveryPublic, WebhookSecretPublic
from shironzi.webhooks.delivery import delivery_log

router = APIRouter(prefix="/v1/tenant/webhooks", tags=["tenant"], responses=ERROR_RESPONSES)

NotificationsReader = Annotated[TenantAccess, Depends(module_gate("notifications"))]
NotificationsWriter = Annotated[TenantAccess, Depends(module_gate("notifications", scope="write"))]


def delivery_public(row: dict[str, Any]) -> WebhookDeliveryPublic:
    return WebhookDeliveryPublic(**{name: row[name] for name in WebhookDeliveryPublic.model_fields})


@router.get("/deliveries", response_model=WebhookDeliveriesPage,
            openapi_extra=tenant_op("read", module="notifications"))
def list_deliveries(caller: NotificationsReader,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50) -> WebhookDeliveriesPage:
    """The tenant's newest webhook deliveries with their state and attempts."""
    rows = delivery_log(settings=caller.services.settings, tenant_id=caller.tenant_id, limit=limit)
    caller.audit_read(resource_kind="webhook_deliveries", returned=len(rows))
    return WebhookDeliveriesPage(items=[delivery_public(r) for r in rows])


@router.get("/secret", response_model=WebhookSecretPublic, openapi_extra=tenant_op("write", module="notifications"))
def get_secret(caller: NotificationsWriter) -> WebhookSecretPublic:
    """The current signing secret (a write key: whoever holds it can forge the tenant's webhooks)."""
    secrets = caller.services.registry.webhook_secrets_of([caller.tenant_id])[caller.tenant_id]
    caller.audit_write("api_webhook_secret_read")
    return WebhookSecretPublic(secret=secrets[0])


@router.post("/secret/rotate", response_model=WebhookSecretPublic,
             openapi_extra=tenant_op("write", module="notifications"))
def rotate_secret(caller: NotificationsWriter) -> WebhookSecretPublic:
    """Start a new signing secret (the previous one co-signs for 24 h)."""
    secret = caller.services.registry.rotate_webhook_secret(caller.ctx, caller.tenant_id)
    caller.audit_write("api_webhook_secret_rotated")
    return WebhookSecretPublic(secret=secret)
