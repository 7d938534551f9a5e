"""Storage above the plan's quota: the alert rule fires for that tenant only, its dashboards show a notice
(landing is not refused), and both go away once the quota is raised (real Delta tables, Streamlit AppTest)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from shironzi.alerts.engine import evaluate, list_alerts
from shironzi.alerts.rules import STORAGE_QUOTA_RULE
from shironzi.lake import append, table_uri
from shironzi.settings import get_settings
from shironzi.tenancy import TenantContext, get_registry

ADMIN = TenantContext.admin(actor="test", purpose="storage quota tests")


def _page(tenant_id: str) -> None:
    from apps.auth import show_tenant_notices

    show_tenant_notices(tenant_id)


def _notices(tenant_id: str) -> list[str]:
    st.cache_data.clear()
    at = AppTest.from_function(_page, args=(tenant_id,), default_timeout=30).run()
    assert not at.exception, at.exception
    return [w.value for w in at.warning]


def _quota(monkeypatch: pytest.MonkeyPatch, storage_gb: float) -> None:
    monkeypatch.setenv("SHIRONZI_PLAN_QUOTAS", json.dumps({"free": {"storage_gb": storage_gb}}))
    get_settings.cache_clear()


def test_storage_over_quota_alerts_and_puts_a_notice_on_the_tenants_dashboard(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = get_registry()
    full, _ = registry.provision_tenant(ADMIN, slug="full-shop", name="Full", industry="ecommerce", plan="free")
    fine, _ = registry.provision_tenant(ADMIN, slug="fine-shop", name="Fine", industry="ecommerce", plan="standard")
    bronze = table_uri(get_settings().resolved_lake_uri, layer="bronze", table="events", region="eu-west")
    append(bronze, pa.table({"tenant_id": [full.id] * 200 + [fine.id] * 200, "payload": ["z" * 40] * 400}))

    _quota(monkeypatch, 1e-7)  # 100 bytes: the free tenant is over, the standard one is far under
    evaluate()
    open_alerts = [a for a in list_alerts() if a["rule"] == STORAGE_QUOTA_RULE]
    assert [(a["tenant_id"], a["status"]) for a in open_alerts] == [(full.id, "firing")]
    assert "landing continues" in open_alerts[0]["summary"]
    notices = _notices(full.id)
    assert len(notices) == 1 and "Storage quota" in notices[0] and "above the plan's quota" in notices[0]
    assert _notices(fine.id) == []  # a tenant sees only its own notices

    append(bronze, pa.table({"tenant_id": [full.id] * 10, "payload": ["z"] * 10}))  # landing is not refused
    _quota(monkeypatch, 5.0)
    result = evaluate()
    assert len(result.resolved) == 1 and not [a for a in list_alerts() if a["rule"] == STORAGE_QUOTA_RULE]
    assert _notices(full.id) == []
