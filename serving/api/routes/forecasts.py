"""KPI forecasts: the newest 28-day forecast with its 80 % interval."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from serving.api.docs import tenant_op
from serving.deps import ForecastDep
from serving.errors import ERROR_RESPONSES
from serving.predictions import latest_forecast
from serving.schemas import ForecastPublic

router = APIRouter(prefix="/v1/forecasts", tags=["forecasts"], responses=ERROR_RESPONSES)


@router.get("/{kpi}", response_model=ForecastPublic, openapi_extra=tenant_op("read", module="trend_forecast"))
def get_forecast(kpi: Literal["active_customers", "revenue"], caller: ForecastDep) -> ForecastPublic:
    """The caller's newest forecast of `kpi`, one point per day for 28 days."""
    forecast = latest_forecast(caller.services, caller.tenant, kpi)
    caller.audit_read(kpi=kpi, generated_date=str(forecast["generated_date"]))
    return ForecastPublic.model_validate(forecast)
