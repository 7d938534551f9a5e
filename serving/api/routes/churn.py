"""Churn predictions: one customer (live or latest batch score) and batches of up to 1,000 customers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response

from serving.api.docs import tenant_op
from serving.breaker import DEGRADED_HEADER
from serving.deps import ChurnDep
from serving.errors import ERROR_RESPONSES
from serving.phi import phi_view
from serving.predictions import apply_band_overrides, customer_not_found, scores_with_fallback
from serving.schemas import ChurnBatchCreate, ChurnBatchPublic, ChurnPublic

router = APIRouter(prefix="/v1", tags=["churn"], responses=ERROR_RESPONSES)

CustomerPath = Annotated[str, Path(min_length=1, max_length=128, description="The tenant's customer id.")]


@router.get(
    "/customers/{customer_id}/churn",
    response_model=ChurnPublic,
    openapi_extra=tenant_op("read", module="churn_prediction"),
)
def get_customer_churn(
    customer_id: CustomerPath,
    caller: ChurnDep,
    response: Response,
    source: Annotated[Literal["live", "batch"], Query(description="live: online features + champion")] = "live",
) -> dict[str, Any]:
    """Churn probability, risk band, top reasons and model version of one of the caller's customers (while the
    online store is down, live falls back to the latest batch score, marked by `X-Shironzi-Degraded`)."""
    phi = phi_view(caller)
    (stored,) = phi.stored([customer_id])  # a PHI id is looked up encrypted, and audited that way
    scores, _, degraded = scores_with_fallback(caller.services, caller.tenant, [stored], source=source)
    scores = apply_band_overrides(caller.services, caller.tenant, scores)
    if degraded:
        response.headers[DEGRADED_HEADER] = degraded
    caller.audit_read(customer_id=stored, source=source, found=bool(scores),
                      subjects=[s.customer_id for s in scores])
    if not scores:
        live = source == "live" and not degraded
        raise customer_not_found(caller.tenant, stored, what="features" if live else "batch score")
    return {**scores[0].public(), "customer_id": phi.shown(stored)}  # validated once, by the response model


@router.post(
    "/churn:batch",
    response_model=ChurnBatchPublic,
    openapi_extra=tenant_op("read", module="churn_prediction"),
)
def score_churn_batch(body: ChurnBatchCreate, caller: ChurnDep, response: Response) -> ChurnBatchPublic:
    """Churn for up to 1,000 of the caller's customers at once; unknown ids are listed in `not_found`."""
    phi = phi_view(caller)
    sent_as: dict[str, str] = {}  # stored id -> the id as the caller sent it
    for stored, sent in zip(phi.stored(body.customer_ids), body.customer_ids, strict=True):
        sent_as.setdefault(stored, sent)
    ids = list(sent_as)
    scores, missing, degraded = scores_with_fallback(caller.services, caller.tenant, ids, source=body.source)
    scores = apply_band_overrides(caller.services, caller.tenant, scores)
    if degraded:
        response.headers[DEGRADED_HEADER] = degraded
    caller.audit_read(customers=len(ids), source=body.source, found=len(scores),
                      subjects=[s.customer_id for s in scores])
    return ChurnBatchPublic(
        results=[ChurnPublic.model_validate({**s.public(), "customer_id": phi.shown(s.customer_id)}) for s in scores],
        not_found=[phi.shown(cid, sent=sent_as[cid]) for cid in missing],
    )
