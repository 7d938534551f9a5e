"""Event intake for apps (write scope): validate against the industry contract, produce to Kafka."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from serving.api.docs import tenant_op
from serving.deps import TenantWriteDep
from serving.errors import ERROR_RESPONSES
from serving.intake import TENANT_MISMATCH, check_events, produce_events
from serving.schemas import EventsAccepted, EventsCreate

router = APIRouter(prefix="/v1/events", tags=["events"], responses=ERROR_RESPONSES)


@router.post("", status_code=202, response_model=EventsAccepted, openapi_extra=tenant_op("write"))
async def post_events(body: EventsCreate, caller: TenantWriteDep) -> EventsAccepted:
    """Accept events for the caller's tenant; the answer says, per event, whether it was accepted and why not."""
    services = caller.services
    topic = services.settings.api_events_topic
    result, payloads = await run_in_threadpool(check_events, caller.tenant, body.events, topic=topic)
    if payloads:
        await run_in_threadpool(produce_events, services, caller.tenant, payloads, topic=topic)
    services.metrics.events.labels(outcome="accepted").inc(result.accepted)
    services.metrics.events.labels(outcome="rejected").inc(result.rejected)
    mismatched = sum(1 for o in result.outcomes if o["reason_code"] == TENANT_MISMATCH)
    caller.audit_write(
        "api_events_received",
        outcome="denied" if mismatched else "success",
        accepted=result.accepted,
        rejected=result.rejected,
        tenant_mismatch=mismatched,
        topic=topic,
    )
    return EventsAccepted(accepted=result.accepted, rejected=result.rejected, topic=topic, results=result.outcomes)
