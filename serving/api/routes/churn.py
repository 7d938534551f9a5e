"""Churn predictions: one customer (live or latest batch score) and batches of up to 1,000 customers."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query

from serving.api.docs import tenant_op
from serving.deps import ChurnDep
from serving.errors import ERROR_RESPONSES
from serving.predictions import batch_scores, customer_not_found, live_scores
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
    source: Annotated[Literal["live", "batch"], Query(description="live: online features + champion")] = "live",
) -> dict[str, Any]:
    """Churn probability, risk band, top reasons and model version of one of the caller's customers."""
    score_fn = live_scores if source == "live" else batch_scores
    scores, _ = score_fn(caller.services, caller.tenant, [customer_id])
    caller.audit_read(customer_id=customer_id, source=source, found=bool(scores),
                      subjects=[s.customer_id for s in scores])
    if not scores:
        raise customer_not_found(caller.tenant, customer_id, what="features" if source == "live" else "batch score")
    return scores[0].public()  # validated once, by the response model


@router.post(
    "/churn:batch",
    response_model=ChurnBatchPublic,
    openapi_extra=tenant_op("read", module="churn_prediction"),
)
def score_churn_batch(body: ChurnBatchCreate, caller: ChurnDep) -> ChurnBatchPublic:
    """Churn for up to 1,000 of the caller's customers at once; unknown ids are listed in `not_found`."""
    ids = list(dict.fromkeys(body.customer_ids))
    score_fn = live_scores if body.source == "live" else batch_scores
    scores, missing = score_fn(caller.services, caller.tenant, ids)
    caller.audit_read(customers=len(ids), source=body.source, found=len(scores),
                      subjects=[s.customer_id for s in scores])
    return ChurnBatchPublic(
        results=[ChurnPublic.model_validate(s.public()) for s in scores], not_found=missing
    )
