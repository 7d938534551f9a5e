"""Tenant notifications: the events a tenant subscribes to in its `notifications` module settings.

A tenant gets an event when it has the `notifications` module on, lists the event type in `event_types` and
has at least one webhook URL; everyone else is skipped without I/O. `notify_many` serves a pipeline: one
registry query for every tenant's settings, one queue commit and one dispatch pass for all the events.

    notify(tenant_id, "anomaly", {"date": "2026-12-01", "metric": "volume", "score": 9.1})
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from shironzi.audit.disclosures import record_disclosure
from shironzi.errors import InvalidInputError
from shironzi.settings import Settings, get_settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.module_settings import NOTIFICATION_EVENTS, NotificationsSettings
from shironzi.tenancy.registry import get_registry
from shironzi.webhooks.delivery import DispatchResult, NewDelivery, send

MODULE = "notifications"


@dataclass(frozen=True, slots=True)
class Notification:
    tenant_id: str
    event_type: str
    payload: Mapping[str, Any]
    idempotency_key: str | None = None


def notify(tenant_id: str, event_type: str, payload: Mapping[str, Any], *, idempotency_key: str | None = None,
           settings: Settings | None = None) -> DispatchResult:
    """Deliver one event to a tenant's webhooks (a no-op when the tenant does not subscribe to it)."""
    return notify_many([Notification(tenant_id, event_type, payload, idempotency_key)], settings=settings)


def notify_many(events: Sequence[Notification], *, settings: Settings | None = None) -> DispatchResult:
    """Deliver many tenants' events: the subscribed ones are queued together and attempted once now."""
    settings = settings or get_settings()
    for event in events:
        if event.event_type not in NOTIFICATION_EVENTS:
            raise InvalidInputError(f"unknown notification event {event.event_type!r}; one of "
                                    f"{', '.join(NOTIFICATION_EVENTS)}", field="event_type")
    subscribers = subscriptions({e.tenant_id for e in events}, settings=settings)
    deliveries = []
    sent_at = datetime.now(UTC).isoformat()
    for event in events:
        wanted = subscribers.get(event.tenant_id)
        if wanted is None or event.event_type not in wanted.event_types:
            continue
        body = {"type": event.event_type, "tenant_id": event.tenant_id, "created_at": sent_at,
                "data": dict(event.payload)}
        deliveries += [NewDelivery(event.tenant_id, url, event.event_type, body, event.idempotency_key)
                       for url in wanted.webhook_urls]
        _record_disclosure(event, wanted.webhook_urls)
    return send(deliveries, settings=settings) if deliveries else DispatchResult()


def subjects_of(payload: Mapping[str, Any]) -> list[str]:
    """The data subjects (customer ids) a notification's payload carries, e.g. an `at_risk` event's customers."""
    customers = payload.get("customers")
    if not isinstance(customers, list):
        return []
    return [str(c["customer_id"]) for c in customers if isinstance(c, Mapping) and c.get("customer_id")]


def _record_disclosure(event: Notification, urls: Sequence[str]) -> None:
    """A notification that carries customers discloses them to the tenant's receivers: one audit event naming
    the subjects (pseudonymised), for the accounting of disclosures."""
    subjects = subjects_of(event.payload)
    if subjects:
        ctx = TenantContext.admin(actor="webhooks:notify", purpose=f"notification:{event.event_type}")
        record_disclosure(ctx, "notification_sent", tenant_id=event.tenant_id, subject_ids=subjects,
                          resource=f"notification:{event.event_type}",
                          details={"receivers": sorted({urlsplit(u).netloc for u in urls})})


def notify_pipeline_failure(pipeline: str, tenant_ids: Sequence[str], *, run_id: str | None = None,
                            settings: Settings | None = None) -> DispatchResult:
    """Tell the tenants a failed pipeline run left behind (their data is stale until a retry succeeds). The
    error text stays on the platform side: it may name hosts and paths."""
    payload = {"pipeline": pipeline, "run_id": run_id, "failed_at": datetime.now(UTC).isoformat()}
    key = f"pipeline_failure:{pipeline}:{run_id}" if run_id else None
    events = [Notification(tid, "pipeline_failure", payload, f"{key}:{tid}" if key else None)
              for tid in sorted(set(tenant_ids))]
    return notify_many(events, settings=settings)


def subscriptions(tenant_ids: set[str], *, settings: Settings | None = None) -> dict[str, NotificationsSettings]:
    """The notification settings of those tenants that have the module on and a webhook URL (two queries)."""
    registry = get_registry(settings)
    enabled = set(registry.tenants_with_module(MODULE, among=tenant_ids))
    overrides = registry.module_settings_of(MODULE, sorted(enabled)) if enabled else {}
    found = {tid: NotificationsSettings.model_validate(overrides.get(tid, {})) for tid in enabled}
    return {tid: value for tid, value in found.items() if value.webhook_urls}
