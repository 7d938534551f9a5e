"""The Platform health page (operators): stage metrics from a real monitor process, open alerts only, the tenants
with anomalies today, and each such tenant's button opening its own Data health page."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from shironzi.observability import stage
from shironzi.settings import get_settings
from shironzi.tenancy import TenantContext, get_registry
from tests.monitoring._fixtures import running_monitor, write_platform_health_tables

APP = str(Path(__file__).resolve().parents[2] / "apps" / "app.py")


def test_operators_see_stages_alerts_and_anomalous_tenants_linked_to_their_data_health(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = get_registry()
    admin = TenantContext.admin(actor="dashboard-tests", purpose="platform health")
    anomalous, _ = registry.provision_tenant(admin, slug="noisy-co", name="Noisy Co", industry="education",
                                             plan="enterprise")
    quiet, _ = registry.provision_tenant(admin, slug="quiet-co", name="Quiet Co", industry="education",
                                         plan="enterprise")
    _, admin_key = registry.issue_key(admin, None, scopes=["admin"])
    settings = get_settings()
    write_platform_health_tables(settings, today=dt.datetime.now(dt.UTC).date(), tenants=(anomalous.id, quiet.id))
    with running_monitor(settings) as (url, _):
        monkeypatch.setenv("SHIRONZI_MONITOR_URL", url)
        get_settings.cache_clear()
        with stage("features:offline") as summary:
            summary.rows = 3
        at = AppTest.from_file(APP, default_timeout=60).run()
        at.text_input(key="api_key_input").input(admin_key)
        at.button[0].click().run()
        at.switch_page("pages/platform_health.py").run()
        assert not at.exception, [e.value for e in at.exception]
        tiles = {m.label: m.value for m in at.metric}
        assert tiles["Open alerts"] == "1" and tiles["Tenants with anomalies today"] == "1"
        stages = at.dataframe[0].value
        assert "features:offline" in set(stages["Stage"])
        assert list(at.dataframe[1].value["fingerprint"]) == ["fp-open"]
        buttons = [b for b in at.button if b.key and b.key.startswith("health-")]
        assert [b.key for b in buttons] == [f"health-{anomalous.id}"]
        buttons[0].click().run()
        assert not at.exception, [e.value for e in at.exception]
        assert any("Noisy Co: data health" in t.value for t in at.title), [t.value for t in at.title]
    get_settings.cache_clear()
