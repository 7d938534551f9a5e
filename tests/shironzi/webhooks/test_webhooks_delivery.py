"""Webhook delivery against real HTTP receivers: signatures a receiver can verify (and a rotated secret),
retries with backoff recorded attempt by attempt, dead letters after the retry window, redelivery with the
same idempotency key, and the tenant notifications that follow the `notifications` module settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shironzi.settings import get_settings
from shironzi.tenancy import Registry, TenantContext, get_registry, reset_registries
from shironzi.webhooks.delivery import (
    NewDelivery,
    attempts_of,
    dead_letters,
    delivery_log,
    dispatch_until_settled,
    redeliver,
    send,
)
from shironzi.webhooks.notify import notify
from shironzi.webhooks.signing import IDEMPOTENCY_HEADER, SIGNATURE_HEADER, verify_signature
from tests.shironzi.webhooks._fixtures import webhook_receiver

ADMIN = TenantContext.admin(actor="ops@test", purpose="webhook tests")


@pytest.fixture
def registry(home: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.setenv("SHIRONZI_WEBHOOK_BACKOFF_SECONDS", "0.05")
    get_settings.cache_clear()
    reset_registries()
    return get_registry()


def _shop(registry: Registry, slug: str, url: str, **extra: object) -> str:
    tenant, _ = registry.provision_tenant(ADMIN, slug=slug, name=slug, industry="ecommerce", plan="standard")
    registry.set_module_settings(ADMIN, tenant.id, "notifications", {"webhook_urls": [url], **extra})
    return tenant.id


def test_receivers_verify_the_signature_and_a_rotated_secret(registry: Registry) -> None:
    tenant, _ = registry.provision_tenant(ADMIN, slug="signed", name="S", industry="ecommerce", plan="standard")
    (secret,) = registry.webhook_secrets_of([tenant.id])[tenant.id]
    with webhook_receiver(secret=secret) as receiver:
        registry.set_module_settings(ADMIN, tenant.id, "notifications", {"webhook_urls": [receiver.url]})
        result = notify(tenant.id, "erasure_completed", {"erasure_id": "e1"}, idempotency_key="erasure-e1")
        assert result.delivered and receiver.requests[0].signature_ok is True
        first = receiver.requests[0]
        assert first.headers[IDEMPOTENCY_HEADER] == "erasure-e1"
        assert json.loads(first.body)["data"] == {"erasure_id": "e1"}
        with pytest.raises(Exception, match="does not match"):  # a tampered body fails the check
            verify_signature(first.headers[SIGNATURE_HEADER], first.body + b" ", secret)

        new_secret = registry.rotate_webhook_secret(ADMIN, tenant.id)
        assert new_secret != secret
        notify(tenant.id, "erasure_completed", {"erasure_id": "e2"})
        header, body = receiver.requests[1].headers[SIGNATURE_HEADER], receiver.requests[1].body
        verify_signature(header, body, new_secret)  # the new secret signs ...
        verify_signature(header, body, secret)  # ... and the old one still does during the grace period
        other, _ = registry.provision_tenant(ADMIN, slug="other", name="O", industry="ecommerce", plan="standard")
        with pytest.raises(Exception, match="does not match"):  # another tenant's secret never verifies
            verify_signature(header, body, registry.webhook_secrets_of([other.id])[other.id][0])


def test_three_failures_then_delivered_on_the_fourth_attempt(registry: Registry) -> None:
    with webhook_receiver(failures=[500, 503, 502]) as receiver:
        tenant_id = _shop(registry, "flaky", receiver.url)
        first = notify(tenant_id, "pipeline_failure", {"stage": "dbt"})
        assert first.retrying and not first.delivered
        (delivery_id,) = first.retrying
        settled = dispatch_until_settled(timeout=30)
        assert settled.delivered == [delivery_id]
    attempts = [r for r in attempts_of(delivery_id) if r["attempt"] > 0]
    assert [r["status"] for r in attempts] == ["retrying", "retrying", "retrying", "delivered"]
    assert [r["http_status"] for r in attempts] == [500, 503, 502, 200]
    stamps = [r["attempted_at"] for r in attempts]
    gaps = [(later - earlier).total_seconds() for earlier, later in zip(stamps, stamps[1:], strict=False)]
    assert gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2  # exponential backoff: 0.05, 0.1, 0.2 s
    keys = {r.headers[IDEMPOTENCY_HEADER] for r in receiver.requests}
    assert len(receiver.requests) == 4 and len(keys) == 1  # one idempotency key for every attempt
    assert delivery_log(tenant_id=tenant_id)[0]["attempts"] == 4


def test_dead_letter_after_the_retry_window_then_redelivery(registry: Registry,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIRONZI_WEBHOOK_RETRY_WINDOW_SECONDS", "1.0")
    get_settings.cache_clear()
    with webhook_receiver(failures=[500] * 50) as receiver:
        result = send([NewDelivery(None, receiver.url, "alert", {"x": 1}, "alert-key")])
        (delivery_id,) = result.retrying
        settled = dispatch_until_settled(timeout=30)
        assert settled.dead == [delivery_id]
        attempts = len(receiver.requests)
        assert attempts >= 2
        (letter,) = dead_letters()
        assert letter["delivery_id"] == delivery_id and letter["attempt"] == attempts
        # the last attempt was scheduled inside the window; the one after it (a doubled wait) would be past it
        last_retry = attempts_of(delivery_id)[-2]
        assert (last_retry["next_attempt_at"] - letter["created_at"]).total_seconds() <= 1.0
        wait = 0.05 * 2 ** (attempts - 1)
        assert (letter["attempted_at"] - letter["created_at"]).total_seconds() + wait > 1.0
        assert letter["next_attempt_at"] is None and letter["status"] == "dead"
        assert "HTTP 500" in letter["error"]
        assert dispatch_until_settled(timeout=5).attempted == 0  # nothing is retried after the dead letter

        receiver.failures.clear()
        again = redeliver(delivery_id)
        assert len(again.delivered) == 1
        assert receiver.requests[-1].headers[IDEMPOTENCY_HEADER] == "alert-key"
        assert delivery_log(delivery_id=again.delivered[0])[0]["redelivery_of"] == delivery_id


def test_notifications_follow_the_module_settings(registry: Registry) -> None:
    with webhook_receiver() as receiver:
        subscribed = _shop(registry, "wants-anomalies", receiver.url, event_types=["anomaly"])
        assert notify(subscribed, "at_risk", {"customers": []}).attempted == 0  # not subscribed to at_risk
        assert len(notify(subscribed, "anomaly", {"score": 9.0}).delivered) == 1
        registry.disable_module(ADMIN, subscribed, "notifications")
        assert notify(subscribed, "anomaly", {"score": 9.0}).attempted == 0  # module off: nothing sent
        with pytest.raises(Exception, match="unknown notification event"):
            notify(subscribed, "gossip", {})
    assert len(receiver.requests) == 1
    with pytest.raises(Exception, match="not found"):  # a tenant cannot redeliver another tenant's delivery
        other = _shop(registry, "someone-else", "https://example.org/hook")
        redeliver(delivery_log(tenant_id=subscribed)[0]["delivery_id"], tenant_id=other)


def test_pipeline_failures_reach_the_affected_subscribed_tenants_without_the_error_text(registry: Registry) -> None:
    from shironzi.webhooks.notify import notify_pipeline_failure

    with webhook_receiver() as receiver:
        hit = _shop(registry, "hit-by-failure", receiver.url)
        spared = _shop(registry, "spared", receiver.url)
        result = notify_pipeline_failure("dbt_build", [hit, hit], run_id="run-7")
        assert len(result.delivered) == 1
    (request,) = receiver.requests
    body = json.loads(request.body)
    assert body["tenant_id"] == hit and body["tenant_id"] != spared
    assert body["data"]["pipeline"] == "dbt_build"
    assert request.headers[IDEMPOTENCY_HEADER] == f"pipeline_failure:dbt_build:run-7:{hit}"


def test_a_delivery_being_sent_is_held_back_from_the_dispatcher(registry: Registry) -> None:
    from shironzi.webhooks.delivery import dispatch_due, queue

    with webhook_receiver() as receiver:
        ids = queue([NewDelivery(None, receiver.url, "alert", {"x": 1})], hold_seconds=60)
        assert dispatch_due().attempted == 0  # the sender's own first attempt is not duplicated by a pass
        assert dispatch_due(only=ids).delivered == ids
        assert dispatch_due(only=ids).attempted == 0  # delivered: never sent twice
    assert len(receiver.requests) == 1


def test_a_notification_that_carries_customers_is_in_their_accounting_of_disclosures(registry: Registry) -> None:
    from shironzi.audit.disclosures import disclosures
    from shironzi.audit.log import get_audit_log

    with webhook_receiver() as receiver:
        shop = _shop(registry, "notified-shop", receiver.url, event_types=["at_risk"])
        payload = {"score_date": "2026-12-01", "threshold": 0.7, "customers_crossed": 1,
                   "customers": [{"customer_id": "c-42", "churn_probability": 0.81, "previous_probability": 0.4}]}
        assert len(notify(shop, "at_risk", payload).delivered) == 1
    get_audit_log().flush()
    report = disclosures(ADMIN, shop, "c-42")
    assert [(d["channel"], d["what"]) for d in report["disclosures"]] == [("notification", "notification:at_risk")]
    assert disclosures(ADMIN, shop, "c-43")["count"] == 0
