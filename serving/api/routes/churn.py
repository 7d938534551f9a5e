"""Churn predictions: one customer (live or latest batch score) and batches of up to 1,000 customers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response

from serving.api.docs import tenant_op
from serving.breaker import DEGRADED_HEADER
from serving.deps import ChurnDep
from serving.errors import ERROR_RESPONSES
from serving.predictions import customer_not_found, scores_with_fallback
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
    scores, _, degraded = scores_with_fallback(caller.services, caller.tenant, [customer_id], source=source)
    if degraded:
        response.headers[DEGRADED_HEADER] = degraded
    caller.audit_read(customer_id=customer_id, source=source, found=bool(scores))
    if not scores:
        live = source == "live" and not degraded
        raise customer_not_found(caller.tenant, customer_id, what="features" if live else "batch score")
    return scores[0].public()  # validated once, by the response model


@router.post(
    "/churn:batch",
    response_model=ChurnBatchPublic,
    openapi_extra=tenant_op("read", module="churn_prediction"),
)
def score_churn_batch(body: ChurnBatchCreate, caller: ChurnDep, response: Response) -> ChurnBatchPublic:
    """Churn for up to 1,000 of the caller's customers at once; unknown ids are listed in `not_found`."""
    ids = list(dict.fromkeys(body.customer_ids))
    scores, missing, degraded = scores_with_fallback(caller.services, caller.tenant, ids, source=body.source)
    if degraded:
        response.headers[DEGRADED_HEADER] = degraded
    caller.audit_read(customers=len(ids), source=body.source, found=len(scores))
    return ChurnBatchPublic(
        results=[ChurnPublic.model_validate(s.public()) for s in scores], not_found=missing
    )
