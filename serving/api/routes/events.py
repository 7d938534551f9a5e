"""Event intake for apps (write scope): validate against the industry contract, produce to Kafka."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from serving.api.docs import tenant_op
from serving.deps import TenantWriteDep
from serving.errors import ERROR_RESPONSES
from serving.intake import TENANT_MISMATCH, check_events, produce_events
from serving.schemas import EventsAccepted, EventsCreate
from shironzi.errors import IngestQuotaExceededError
from shironzi.tenancy.quotas import plan_quota

router = APIRouter(prefix="/v1/events", tags=["events"], responses=ERROR_RESPONSES)


@router.post("", status_code=202, response_model=EventsAccepted, openapi_extra=tenant_op("write"))
async def post_events(body: EventsCreate, caller: TenantWriteDep) -> EventsAccepted:
    """Accept events for the caller's tenant; the answer says, per event, whether it was accepted and why not."""
    services = caller.services
    topic = services.settings.api_events_topic
    result, payloads = await run_in_threadpool(check_events, caller.tenant, body.events, topic=topic)
    if payloads and services.settings.ingest_quotas:
        _take_ingest_quota(caller, len(payloads))
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


def _take_ingest_quota(caller: TenantWriteDep, events: int) -> None:
    """The plan's ingest quota, as the stream ingestor applies it: a token bucket of `ingest_rate` events/s
    holding `ingest_burst`, in the API's rate limiter (Redis when configured: one bucket across workers and
    replicas). A request is admitted while a token is left and takes one per event (the bucket may go into
    debt); above the quota it is refused whole with 429 and `Retry-After`, and nothing is produced."""
    tenant, services = caller.tenant, caller.services
    quota = plan_quota(tenant.plan, services.settings)
    decision = services.limiter.hit(f"ingest:{tenant.id}", quota.ingest_rate, burst=quota.ingest_burst,
                                    cost=float(events), count_usage=False)
    if not decision.allowed:
        services.metrics.rate_limited.labels(plan=tenant.plan).inc()
        exc = IngestQuotaExceededError(
            f"ingest quota of the {tenant.plan} plan ({quota.ingest_rate:g} events/s) exceeded; "
            f"retry after {decision.retry_after:.2f}s",
            retry_after=round(decision.retry_after, 3), plan=tenant.plan, ingest_rate=quota.ingest_rate,
        )
        caller.audit_failure(exc.code, exc.message)
        raise exc
