"""Alerts end to end against real HTTP receivers: Alertmanager-format delivery, de-duplication by fingerprint,
silences, resolution, the tenant's own webhook, the `_platform/alerts` table and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from shironzi.alerts.engine import active_silences, add_silence, alerts_uri, evaluate, list_alerts
from shironzi.alerts.inputs import ANOMALIES, collect_inputs
from shironzi.alerts.rules import AlertInputs, AnomalyRule, ThresholdRule
from shironzi.lake import append, platform_uri, read_polars
from shironzi.settings import get_settings
from shironzi.tenancy import TenantContext, get_registry, reset_registries
from tests.shironzi.webhooks._fixtures import webhook_receiver

ADMIN = TenantContext.admin(actor="ops@test", purpose="alert tests")
LAG = ThresholdRule("StreamLagHigh", "stream_lag", ">", 1000, "critical")


def _use(monkeypatch: pytest.MonkeyPatch, receiver_url: str) -> None:
    monkeypatch.setenv("SHIRONZI_ALERT_WEBHOOK_URLS", json.dumps([receiver_url]))
    get_settings.cache_clear()
    reset_registries()


def _payloads(receiver: object) -> list[dict]:
    return [json.loads(r.body) for r in receiver.requests]  # type: ignore[attr-defined]


def test_threshold_alert_is_delivered_once_then_resolved(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with webhook_receiver() as alertmanager:
        _use(monkeypatch, alertmanager.url)
        high = AlertInputs(metrics={"stream_lag": 5000})
        first = evaluate(rules=[LAG], inputs=high)
        again = evaluate(rules=[LAG], inputs=high)  # the same condition: the same alert, not delivered again
        assert len(first.firing) == 1 and again.firing == [] and again.still_open == first.firing
        (payload,) = _payloads(alertmanager)
        assert payload["version"] == "4" and payload["status"] == "firing"
        (alert,) = payload["alerts"]
        assert alert["labels"] == {"alertname": "StreamLagHigh", "severity": "critical", "metric": "stream_lag"}
        assert alert["fingerprint"] == first.firing[0] and alert["endsAt"] == "0001-01-01T00:00:00Z"
        (row,) = list_alerts()
        assert (row["rule"], row["status"], row["tenant_id"]) == ("StreamLagHigh", "firing", None)

        resolved = evaluate(rules=[LAG], inputs=AlertInputs(metrics={"stream_lag": 10}))
        assert resolved.resolved == first.firing
        assert _payloads(alertmanager)[-1]["status"] == "resolved"
        assert list_alerts() == []
        table = read_polars(alerts_uri(get_settings()))
        assert set(table.columns) >= {"fingerprint", "rule", "severity", "tenant_id", "status", "started_at",
                                      "summary"}
        assert table.height == 1 and table["status"].to_list() == ["resolved"]


def test_tenant_anomalies_silences_and_the_tenants_own_webhook(home: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with webhook_receiver() as alertmanager, webhook_receiver() as tenant_hook:
        _use(monkeypatch, alertmanager.url)
        registry = get_registry()
        loud, _ = registry.provision_tenant(ADMIN, slug="loud", name="L", industry="ecommerce", plan="standard")
        quiet, _ = registry.provision_tenant(ADMIN, slug="quiet", name="Q", industry="ecommerce", plan="standard")
        registry.set_module_settings(ADMIN, loud.id, "notifications", {"webhook_urls": [tenant_hook.url]})
        now = datetime.now(UTC)
        anomalies = pa.Table.from_pylist([  # as the per-tenant data monitors write them
            {"tenant_id": loud.id, "kind": "volume_spike", "score": 7.5, "detected_at": now},
            {"tenant_id": quiet.id, "kind": "volume_spike", "score": 6.0, "detected_at": now},
            {"tenant_id": quiet.id, "kind": "volume_spike", "score": 4.0, "detected_at": now - timedelta(days=3)},
        ])
        append(platform_uri(get_settings().resolved_lake_uri, *ANOMALIES), anomalies)
        add_silence(tenant_id=quiet.id, duration=timedelta(hours=1), created_by="test", comment="known outage")

        rule = AnomalyRule("TenantDataAnomaly")
        inputs = collect_inputs(get_settings())
        assert len(inputs.anomalies) == 2  # the three-day-old row is past the window
        result = evaluate(rules=[rule], inputs=inputs)
        assert len(result.firing) == 1 and len(result.silenced) == 1
        (payload,) = _payloads(alertmanager)
        assert [a["labels"]["tenant_id"] for a in payload["alerts"]] == [loud.id]  # the silenced one is not sent
        (own,) = _payloads(tenant_hook)  # the tenant gets its own alert (and only its own) on its webhook
        assert own["type"] == "alert" and [a["labels"]["tenant_id"] for a in own["data"]["alerts"]] == [loud.id]
        statuses = {r["tenant_id"]: r["status"] for r in list_alerts()}
        assert statuses == {loud.id: "firing", quiet.id: "silenced"}

        evaluate(rules=[rule], inputs=inputs)  # still the same anomalies: nothing new anywhere
        assert len(alertmanager.requests) == 1 and len(tenant_hook.requests) == 1


def test_cli_lists_and_silences(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reset_registries()
    evaluate(rules=[LAG], inputs=AlertInputs(metrics={"stream_lag": 5000}))
    cli = Path(sys.executable).with_name("shironzi")
    env = {**os.environ, "COLUMNS": "250"}
    listed = subprocess.run([str(cli), "alerts", "list"], capture_output=True, text=True, timeout=120, env=env)
    assert listed.returncode == 0 and "StreamLagHigh" in listed.stdout
    bad = subprocess.run([str(cli), "alerts", "silence", "--for", "soon"], capture_output=True, text=True,
                         timeout=120, env=env)
    assert bad.returncode != 0 and "duration" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    ok = subprocess.run([str(cli), "alerts", "silence", "--rule", "StreamLagHigh", "--for", "2h"],
                        capture_output=True, text=True, timeout=120, env=env)
    assert ok.returncode == 0 and "silence" in ok.stdout
    assert [s["rule"] for s in active_silences()] == ["StreamLagHigh"]
