"""An end-to-end check of the API for `shironzi demo`: real uvicorn, a real tenant key, a real prediction."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from feature_store.online import open_online_store
from serving.app import create_app
from shironzi.errors import ServiceUnavailableError
from shironzi.settings import Settings
from shironzi.tenancy import TenantContext, get_registry


@dataclass(frozen=True)
class ApiSmoke:
    tenant_slug: str
    tenant_key: str
    customer_id: str
    prediction: dict[str, Any]
    checked_url: str

    def curl(self, base_url: str) -> str:
        return (f"curl -s -H 'Authorization: Bearer {self.tenant_key}' "
                f"{base_url}/v1/customers/{self.customer_id}/churn")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _customer_with_features(settings: Settings, exclude: set[str]) -> tuple[str, str]:
    """(tenant id, customer id): a churn-enabled tenant's customer that has online features."""

    eligible = [t for t in get_registry(settings).tenants_with_module("churn_prediction") if t not in exclude]
    store = open_online_store(settings=settings)
    try:
        for tenant_id in eligible:
            keys = sorted({row.entity_key for row in store.iter_rows(tenant_id=tenant_id) if row.entity_key})
            if keys:
                return tenant_id, keys[-1]
    finally:
        store.close()
    raise ServiceUnavailableError("no churn-enabled tenant has online features yet: run the features stage")


def check_api(settings: Settings, *, exclude_tenants: Iterable[str] = ()) -> ApiSmoke:
    """Serve the API on a free port for a moment, call one live churn prediction with a new tenant key."""
    import httpx
    import uvicorn

    registry = get_registry(settings)
    tenant_id, customer_id = _customer_with_features(settings, set(exclude_tenants))
    ctx = TenantContext.admin(actor="demo", purpose="demo: API example key")
    _, key = registry.issue_key(ctx, tenant_id, scopes=["read"], label="demo curl example")
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="shironzi-demo-api", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}/v1/customers/{customer_id}/churn"
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise ServiceUnavailableError("the API did not start for the demo check")
            time.sleep(0.05)
        try:
            response = httpx.get(url, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(f"demo prediction failed: {exc}") from exc
        if response.status_code != 200:
            raise ServiceUnavailableError(f"demo prediction failed: {response.status_code} {response.text[:300]}")
        body = response.json()
    finally:
        server.should_exit = True
        thread.join(timeout=15)
    return ApiSmoke(registry.get_tenant(tenant_id).slug, key, customer_id, body, url)
