"""`at_risk` notifications after a scoring run: only customers that crossed their tenant's threshold (from
below, or scored for the first time) since their previous score are sent, to subscribed tenants only."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from pathlib import Path

import pyarrow as pa

from models.at_risk import at_risk_crossings, at_risk_subscribers, previous_scores
from shironzi.lake import append, platform_uri
from shironzi.settings import get_settings
from shironzi.tenancy import TenantContext, get_registry, reset_registries
from shironzi.webhooks.notify import notify_many
from tests.shironzi.webhooks._fixtures import webhook_receiver

ADMIN = TenantContext.admin(actor="ops@test", purpose="at-risk tests")
TODAY, EARLIER, OLDEST = date(2026, 11, 20), date(2026, 11, 13), date(2026, 11, 6)


def _scores(rows: list[tuple[str, str, date, float]]) -> pa.Table:
    return pa.Table.from_pylist([{"tenant_id": t, "customer_id": c, "score_date": d, "churn_probability": p,
                                  "scored_at": datetime.now(UTC)} for t, c, d, p in rows])


def test_only_crossings_of_subscribed_tenants_are_notified(home: Path) -> None:
    reset_registries()
    settings = get_settings()
    registry = get_registry()
    with webhook_receiver() as hook:
        shop, _ = registry.provision_tenant(ADMIN, slug="watched", name="W", industry="ecommerce", plan="standard")
        deaf, _ = registry.provision_tenant(ADMIN, slug="deaf", name="D", industry="ecommerce", plan="standard")
        registry.set_module_settings(ADMIN, shop.id, "notifications", {"webhook_urls": [hook.url]})
        registry.set_module_settings(ADMIN, shop.id, "churn_prediction", {"at_risk_threshold": 0.7})
        uri = platform_uri(settings.resolved_lake_uri, "test_churn_scores")
        append(uri, _scores([(shop.id, "was-low", EARLIER, 0.2), (shop.id, "was-high", EARLIER, 0.9),
                             (shop.id, "was-low", OLDEST, 0.95), (shop.id, "stays-low", EARLIER, 0.1),
                             (shop.id, "was-low", TODAY, 0.99)]))  # today's own row never counts as previous

        listening = at_risk_subscribers([shop.id, deaf.id], settings)
        assert listening == {shop.id: 0.7}  # the tenant without a webhook costs nothing more
        before = previous_scores(uri, list(listening), TODAY, settings)
        today = _scores([(shop.id, "was-low", TODAY, 0.8), (shop.id, "was-high", TODAY, 0.95),
                         (shop.id, "stays-low", TODAY, 0.3), (shop.id, "new-customer", TODAY, 0.75),
                         (deaf.id, "was-low", TODAY, 0.99)])
        events = at_risk_crossings(today, before, listening, TODAY)
        assert len(notify_many(events, settings=settings).delivered) == 1
    (request,) = hook.requests
    data = json.loads(request.body)["data"]
    assert data["threshold"] == 0.7 and data["customers_crossed"] == 2
    assert [c["customer_id"] for c in data["customers"]] == ["was-low", "new-customer"]  # riskiest first
    assert [c["previous_probability"] for c in data["customers"]] == [0.2, None]
