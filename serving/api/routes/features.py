"""Online features of one customer (read scope)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from feature_store.materialize import get_online_features
from feature_store.registry import list_feature_views, resolve_features
from serving.api.docs import tenant_op
from serving.deps import TenantReadDep
from serving.errors import ERROR_RESPONSES
from serving.phi import phi_view
from serving.predictions import customer_level_names, customer_not_found, has_customer_row
from serving.schemas import FeaturesPublic

router = APIRouter(prefix="/v1/features", tags=["features"], responses=ERROR_RESPONSES)


def _default_refs() -> list[str]:
    return [view.name for view in list_feature_views() if view.entity.name != "tenant"]


@router.get("/{customer_id}", response_model=FeaturesPublic, openapi_extra=tenant_op("read"))
def get_customer_features(
    customer_id: Annotated[str, Path(min_length=1, max_length=128)],
    caller: TenantReadDep,
    features: Annotated[
        list[str] | None,
        Query(max_length=200, description="Feature refs (`view` or `view:feature`); default: every customer view."),
    ] = None,
) -> FeaturesPublic:
    """The latest online feature values of one of the caller's customers."""

    refs = features or _default_refs()
    phi = phi_view(caller)
    (stored,) = phi.stored([customer_id])  # a PHI id is looked up encrypted, and audited that way
    # only customer-keyed features prove the customer exists: add them when just tenant views were asked for
    lookup = refs if customer_level_names(tuple(refs)) else [*refs, *_default_refs()]
    with caller.services.tracer.start_as_current_span("feature_lookup") as span:
        span.set_attribute("shironzi.tenant_id", caller.tenant_id)
        (record,) = get_online_features(caller.tenant_id, [stored], lookup, store=caller.services.online_store)
    found = has_customer_row(record, customer_level_names(tuple(lookup)))
    asked = {name for names in resolve_features(refs).values() for name in names}
    values = {k: v for k, v in record.items() if k in asked}
    caller.audit_read(customer_id=stored, features=len(values), found=found,
                      subjects=[stored] if found else [])
    if not found:
        raise customer_not_found(caller.tenant, stored, what="online features")
    return FeaturesPublic(customer_id=phi.shown(stored), features=values)
