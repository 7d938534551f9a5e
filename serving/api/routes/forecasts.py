"""KPI forecasts: the newest forecast, cut to the tenant's horizon, with its interval at the tenant's level
(`trend_forecast` settings: 28 days and 80 % by default)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter

from serving.api.docs import tenant_op
from serving.deps import ForecastDep
from serving.errors import ERROR_RESPONSES
from serving.predictions import forecast_for_settings, latest_forecast
from serving.schemas import ForecastPublic

router = APIRouter(prefix="/v1/forecasts", tags=["forecasts"], responses=ERROR_RESPONSES)


@router.get("/{kpi}", response_model=ForecastPublic, openapi_extra=tenant_op("read", module="trend_forecast"))
def get_forecast(kpi: Literal["active_customers", "revenue"], caller: ForecastDep) -> ForecastPublic:
    """The caller's newest forecast of `kpi`, one point per day up to its `horizon_days` (at most the model's 28),
    with intervals at its `interval_level`."""
    wanted = caller.services.registry.effective_module_settings(caller.tenant_id, "trend_forecast")
    forecast = forecast_for_settings(latest_forecast(caller.services, caller.tenant, kpi),
                                     horizon_days=wanted.horizon_days, interval_level=wanted.interval_level)
    caller.audit_read(kpi=kpi, generated_date=str(forecast["generated_date"]))
    return ForecastPublic.model_validate(forecast)
