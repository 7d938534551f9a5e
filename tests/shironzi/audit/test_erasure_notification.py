"""A finished, verified erasure sends the tenant's `erasure_completed` webhook (when it subscribes)."""

from __future__ import annotations

import json
from pathlib import Path

from shironzi.audit.erasure import erase_subject
from shironzi.lake.delta import append
from shironzi.tenancy import TenantContext, get_registry, reset_registries
from shironzi.webhooks.signing import IDEMPOTENCY_HEADER
from tests.shironzi.audit._fixtures import customers, uri
from tests.shironzi.webhooks._fixtures import webhook_receiver

ADMIN = TenantContext.admin(actor="dpo@platform", purpose="gdpr_erasure")


def test_erasure_completion_is_notified(audit_home: Path) -> None:
    reset_registries()
    registry = get_registry()
    shop, _ = registry.provision_tenant(ADMIN, slug="erasing", name="E", industry="ecommerce", plan="standard")
    append(uri("gold", "dim_customers"), customers([(shop.id, "c_1"), (shop.id, "c_2")]))
    with webhook_receiver() as hook:
        registry.set_module_settings(ADMIN, shop.id, "notifications",
                                     {"webhook_urls": [hook.url], "event_types": ["erasure_completed"]})
        receipt = erase_subject(ADMIN, shop.id, "c_1")
    (request,) = hook.requests
    body = json.loads(request.body)
    assert body["type"] == "erasure_completed" and body["tenant_id"] == shop.id
    assert body["data"]["request_id"] == receipt.request_id and body["data"]["rows_deleted"] == 1
    assert request.headers[IDEMPOTENCY_HEADER] == f"erasure:{receipt.request_id}"
    assert "c_1" not in request.body.decode()  # the subject never travels in the notification
