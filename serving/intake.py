"""Event intake for apps: the same contract validation as the batch and stream paths, then Kafka.

Each event is checked against the caller's industry contract by the kernel's intake seam
(`shironzi.intake.event_intake()`, the same check the batch and stream paths run);
accepted events are produced to the events topic keyed by tenant (so a tenant's events share a partition)
with an `idempotency-key` header of `tenant_id:event_id` (and the call's W3C `traceparent`), and the call
returns only after the broker acknowledged them. Rejected events are never produced.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from serving.services import ApiServices, TenantFacts
from shironzi.errors import ServiceUnavailableError
from shironzi.intake import event_intake
from shironzi.observability import stage, trace_headers

TENANT_MISMATCH = "tenant_mismatch"
DUPLICATE_IN_REQUEST = "duplicate_in_request"


@dataclass
class IntakeResult:
    topic: str
    outcomes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def accepted(self) -> int:
        return sum(1 for o in self.outcomes if o["accepted"])

    @property
    def rejected(self) -> int:
        return len(self.outcomes) - self.accepted


def _event_id(event: Any) -> str | None:
    value = event.get("event_id") if isinstance(event, dict) else None
    return value if isinstance(value, str) else None


def check_events(tenant: TenantFacts, events: list[dict[str, Any]], *, topic: str) -> tuple[IntakeResult, list[bytes]]:
    """Validate events for `tenant`; returns per-event outcomes and the payloads to produce (accepted only)."""
    result = IntakeResult(topic=topic)
    outcomes: list[dict[str, Any] | None] = [None] * len(events)
    payloads: dict[int, bytes] = {}
    for index, event in enumerate(events):
        claimed = event.get("tenant_id")
        if claimed is not None and claimed != tenant.id:
            outcomes[index] = _rejected(
                index, event, TENANT_MISMATCH, "the event's tenant_id is not the tenant of the API key"
            )
            continue
        payloads[index] = json.dumps({**event, "tenant_id": tenant.id}, separators=(",", ":")).encode()
    if payloads:
        indices = list(payloads)
        rejections = event_intake().rejections(
            list(payloads.values()),
            tenant_id=tenant.id,
            industry=tenant.industry,
            status=tenant.status,
            now=datetime.now(UTC),
            source=f"api:{tenant.id}",
        )
        for rejection in rejections:
            index = indices[rejection.position]
            outcomes[index] = _rejected(index, events[index], rejection.reason_code, rejection.reason)
    seen: set[str] = set()
    accepted_payloads: list[bytes] = []
    for index in payloads:
        if outcomes[index] is not None:
            continue
        event_id = _event_id(events[index]) or ""
        if event_id in seen:
            outcomes[index] = _rejected(
                index, events[index], DUPLICATE_IN_REQUEST, f"event_id {event_id!r} appears earlier in this request"
            )
            continue
        seen.add(event_id)
        outcomes[index] = {"index": index, "event_id": event_id, "accepted": True, "reason_code": None, "reason": None}
        accepted_payloads.append(payloads[index])
    result.outcomes = [o for o in outcomes if o is not None]
    return result, accepted_payloads


def _rejected(index: int, event: Any, code: str, reason: str) -> dict[str, Any]:
    return {"index": index, "event_id": _event_id(event), "accepted": False, "reason_code": code, "reason": reason}


def produce_events(services: ApiServices, tenant: TenantFacts, payloads: list[bytes], *, topic: str) -> int:
    """Produce accepted payloads and wait for the broker's acknowledgement (raises when any was lost).

    Behind the `kafka` circuit breaker: while the broker is down the call fails at once with a 503 and a
    `Retry-After` instead of waiting out the producer's timeout; nothing is answered 202 unless flushed."""
    if not payloads:
        return 0
    breaker = services.kafka_breaker
    if not breaker.allow():
        breaker.degraded()
        raise _broker_down(breaker.retry_after())
    try:
        delivered = _produce(services, tenant, payloads, topic=topic)
    except ServiceUnavailableError:
        services.drop_sink()
        breaker.failed()
        breaker.degraded()
        raise _broker_down(breaker.retry_after() or services.settings.api_breaker_cooldown_seconds) from None
    breaker.succeeded()
    return delivered


def _broker_down(retry_after: float) -> ServiceUnavailableError:
    return ServiceUnavailableError("event intake is unavailable: the broker did not acknowledge the events; "
                                   "none of them was accepted, retry later", retry_after=max(1.0, retry_after))


def _produce(services: ApiServices, tenant: TenantFacts, payloads: list[bytes], *, topic: str) -> int:
    with stage("api_event_intake", tenant_id=tenant.id, topic=topic) as summary:
        sink = services.sink()
        key = tenant.id.encode()
        traced = trace_headers()  # W3C traceparent: the stream ingestor's bronze commit joins this call's trace
        for payload in payloads:
            event_id = json.loads(payload).get("event_id", "")
            sink.produce(topic, key, payload,
                         headers={"idempotency-key": f"{tenant.id}:{event_id}".encode(), **traced})
        delivered = sink.flush(10.0)
        summary.rows = delivered
    return delivered
