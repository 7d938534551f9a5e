"""The tenant registry (PostgreSQL) going away under a running API: requests that need it get a 503 in the one
JSON error shape with `Retry-After` (retry later), not a 500 (a bug to report), and the API answers again as
soon as the registry is back, without a restart."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests._services import FaultProxy, fault_proxy
from tests.serving._fixtures import isolated_home

pytestmark = pytest.mark.integration


@pytest.fixture
def registry_behind_proxy(pg_database_url: str, tmp_path: Path) -> Iterator[tuple[Any, FaultProxy, str]]:
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from shironzi.tenancy import TenantContext, get_registry

    host_port = pg_database_url.split("@", 1)[1].split("/", 1)[0]
    database = pg_database_url.rsplit("/", 1)[1]
    with fault_proxy(int(host_port.rsplit(":", 1)[1])) as proxy:
        proxied = f"postgresql+psycopg://shironzi@127.0.0.1:{proxy.port}/{database}"
        with isolated_home(tmp_path / "home", SHIRONZI_DATABASE_URL=proxied) as settings:
            registry = get_registry(settings)
            ctx = TenantContext.admin(actor="test", purpose="registry outage test")
            registry.provision_tenant(ctx, slug="outage-shop", name="Outage", industry="ecommerce",
                                      plan="standard", placement="pooled")
            _, admin_key = registry.issue_key(ctx, None, scopes=["admin"], label="test admin")
            with TestClient(create_app(settings), raise_server_exceptions=False) as client:
                yield client, proxy, admin_key


def test_a_registry_outage_is_a_503_with_retry_after_and_the_api_recovers_by_itself(
    registry_behind_proxy: tuple[Any, FaultProxy, str],
) -> None:
    client, proxy, admin_key = registry_behind_proxy
    auth = {"Authorization": f"Bearer {admin_key}"}
    assert client.get("/v1/admin/tenants", headers=auth).status_code == 200

    proxy.cut()
    try:
        down = client.get("/v1/admin/tenants", headers=auth)
        assert down.status_code == 503, down.text
        error = down.json()["error"]
        assert error["code"] == "registry_unavailable"
        assert error["request_id"] == down.headers["X-Request-ID"]
        assert int(down.headers["Retry-After"]) >= 1
        assert "postgresql" not in down.text.lower() and "psycopg" not in down.text.lower()  # no internals
        assert proxy.refused > 0  # the request really went to the dead registry
    finally:
        proxy.restore()

    back = client.get("/v1/admin/tenants", headers=auth)
    assert back.status_code == 200, back.text
    assert [t["slug"] for t in back.json()["items"]] == ["outage-shop"]
