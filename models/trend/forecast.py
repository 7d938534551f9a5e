"""Write 28-day KPI forecasts with the trend champion into `predictions/forecasts`."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING

from models.common import CHAMPION, TREND_MODEL
from models.predictions import FORECASTS_TABLE, ScoreResult, forecasts_schema
from models.releases.routing import route_table
from models.tracking import aliases
from models.trend.baselines import companions, statistical_forecast
from models.trend.calibration import quantile_forecast
from models.trend.features import HORIZON, Series, load_series, local_spread, origin_features
from models.trend.train import load_trend_version
from shironzi.errors import ModelUnavailableError
from shironzi.lake.groups import lake_groups
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import get_registry

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger("shironzi.models")


def data_date(series: Sequence[Series]) -> date:
    """The date forecasts made from `series` are stamped with: the newest day of the input (today when empty)."""
    return max((s.end for s in series), default=datetime.now(UTC).date())


def trend_versions(tenant_ids: Sequence[str], champion: str, settings: Settings) -> Mapping[str, str]:
    """The trend version each tenant's release channel resolves to: pinned, or the candidate of a live rollout
    wave, else the champion (for every tenant while the routing cannot be read: degrade, don't fail)."""
    try:
        routes = route_table(get_registry(settings), TREND_MODEL)
    except Exception as exc:  # noqa: BLE001 - the registry is unreadable: forecast with the champion
        logger.warning("release routing unavailable, forecasting with the trend champion: %s", exc)
        return dict.fromkeys(tenant_ids, champion)
    return {t: routes.version_for(t) or champion for t in tenant_ids}


def write_trend_forecasts(
    tenant_ids: Sequence[str], *, settings: Settings | None = None, generated_date: date | None = None,
) -> ScoreResult:
    """Forecast each KPI of `tenant_ids` (already module-gated) from its last day; replace the slice of
    `generated_date`, which defaults to the date of the data the forecasts are made from (the newest event date
    of the input series), not today: a history that ended years ago is stamped with its own last day.
    `yhat` is the champion's point forecast for the KPI (its booster combined with the statistical forecast, see
    its model card), `yhat_lower`/`yhat_upper` the calibrated 80 % interval, sized by the series' local spread at
    its last day."""
    import numpy as np
    import pyarrow as pa

    settings = settings or get_settings()
    result = ScoreResult(score_date=generated_date)
    with stage("models:write_forecasts") as summary:
        if not tenant_ids:
            return result
        version = aliases(TREND_MODEL, settings=settings).get(CHAMPION)
        if version is None:
            raise ModelUnavailableError(f"{TREND_MODEL} has no champion yet: train and promote one first")
        versions = trend_versions(tenant_ids, version, settings)
        loaded = {v: load_trend_version(v, settings=settings) for v in sorted(set(versions.values()))}
        series, inputs = load_series(settings=settings, tenant_ids=tenant_ids)
        generated_date = generated_date or data_date(series)
        result.score_date = generated_date
        summary.extra["generated_date"] = str(generated_date)
        generated_at = datetime.now(UTC)
        schema = forecasts_schema()
        horizons = list(range(1, HORIZON + 1))
        by_tenant: dict[str, list[pa.Table]] = {}
        for s, companion in zip(series, companions(series), strict=True):
            origin = len(s.values) - 1
            made = origin_features(s, origin, horizons)
            if made is None:
                continue
            rows, scale = made
            booster, calibration = loaded[versions[s.tenant_id]]
            spread = np.full(len(horizons), local_spread(s, origin))
            forecast = quantile_forecast(booster, rows, np.full(len(horizons), scale), calibration, spread,
                                         statistical_forecast(s, origin, horizons, companion))
            by_tenant.setdefault(s.tenant_id, []).append(pa.table({
                "tenant_id": [s.tenant_id] * HORIZON, "kpi": [s.kpi] * HORIZON,
                "forecast_date": pa.array([s.end + timedelta(days=h) for h in horizons], pa.date32()),
                "horizon_day": pa.array(horizons, pa.int32()),
                "yhat": forecast[:, 1], "yhat_lower": forecast[:, 0], "yhat_upper": forecast[:, 2],
                "model_name": [TREND_MODEL] * HORIZON, "model_version": [versions[s.tenant_id]] * HORIZON,
                "generated_date": pa.array([generated_date] * HORIZON, pa.date32()),
                "generated_at": pa.array([generated_at] * HORIZON, pa.timestamp("us", tz="UTC")),
            }, schema=schema))
        for group in lake_groups(tenant_ids, settings):
            parts = [t for tenant_id in group.tenant_ids for t in by_tenant.get(tenant_id, [])]
            table = pa.concat_tables(parts) if parts else schema.empty_table()
            result.write(group, FORECASTS_TABLE, table, partition="generated_date", day=generated_date,
                         settings=settings, actor="models:forecast", operation="write_forecasts", inputs=inputs,
                         models=[(TREND_MODEL, v) for v in sorted({versions[t] for t in group.tenant_ids})])
            result.tenants += sorted(t for t in group.tenant_ids if t in by_tenant)
        result.summarise(summary)
        summary.extra.update(tenants=len(result.tenants), model_version=version,
                             routed_tenants=sum(v != version for v in versions.values()))
    return result
