"""The API app factory: `create_app(settings)` wires routes, errors, auth, limits, metrics and tracing."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Response
from fastapi.openapi.utils import get_openapi
from prometheus_client import CONTENT_TYPE_LATEST

import shironzi.lake.delta  # noqa: F401 - loaded before gc.freeze() (see _settle_heap), not mid-traffic
from serving.api.routes import (
    admin_audit,
    admin_keys,
    admin_models,
    admin_releases,
    admin_tenants,
    admin_webhooks,
    churn,
    events,
    exports,
    features,
    forecasts,
    health,
    tenant,
    tenant_modules,
    webhooks,
)
from serving.errors import install_error_handlers
from serving.services import ApiServices
from serving.telemetry import ApiMetrics, ServingMiddleware, make_tracer
from shironzi.audit.log import flush_all
from shironzi.observability import configure_logging, stage
from shironzi.settings import Settings, get_settings
from shironzi.tenancy.registry import get_registry

API_TITLE = "Shironzi platform API"
API_VERSION = "1.0.0"


def create_app(
    settings: Settings | None = None, *, span_exporter: Any = None, load_model: bool = True, freeze_gc: bool = False
) -> FastAPI:
    """A new API app. `span_exporter` (tests) receives every span; `load_model=False` defers the model
    to the first request that needs it (the background refresher still starts). `freeze_gc=True` (the
    served process, one app per worker) moves everything startup allocated out of the cyclic GC's reach."""

    settings = settings or get_settings()
    metrics = ApiMetrics(settings.prometheus_multiproc_dir)
    tracer = make_tracer(settings, span_exporter)
    services = ApiServices(settings, metrics=metrics, tracer=tracer, registry=get_registry(settings))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        from starlette.concurrency import run_in_threadpool

        configure_logging(settings.log_level, settings.log_format)
        with stage("api_startup", model_loaded=False) as summary:
            if load_model:
                await run_in_threadpool(services.model.refresh)
            summary.extra["model_loaded"] = services.model.loaded
            summary.extra["model_version"] = services.model.version
            summary.extra["rate_limit_backend"] = services.limiter.backend
            summary.extra["registry_watch"] = services.registry_watch.backend
            if freeze_gc:
                _settle_heap()
        services.model.start()
        services.registry_watch.start()
        try:
            yield
        finally:
            services.close()

            flush_all()

    app = FastAPI(
        title=API_TITLE,
        version=API_VERSION,
        description="Predictions, forecasts, features, event intake and tenant management. "
        "Send keys as `Authorization: Bearer shz_...`.",
        lifespan=lifespan,
    )
    app.state.services = services
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(
        ServingMiddleware, metrics=metrics, tracer=tracer, max_body_bytes=settings.api_max_body_bytes
    )
    _include_routes(app)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics() -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _settle_heap() -> None:
    """Freeze the startup heap (what the audit writer's first flush needs is imported at module top).

    A worker holds ~400k long-lived objects after loading mlflow, xgboost and the model; every full
    collection walked all of them (~200 ms with the GIL held, several times a minute under load: the p99
    and max latency). Frozen objects are never scanned, so collections only see request garbage."""
    import gc

    gc.collect()
    gc.freeze()


def _include_routes(app: FastAPI) -> None:
    for module in (health, tenant, churn, forecasts, features, events, admin_tenants, admin_keys, admin_models,
                   admin_releases, admin_audit, tenant_modules, webhooks, admin_webhooks, exports):
        app.include_router(module.router)


def _openapi(app: FastAPI) -> dict[str, Any]:
    if app.openapi_schema:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
    schema.setdefault("components", {}).setdefault("securitySchemes", {})["bearerAuth"] = {
        "type": "http",
        "scheme": "bearer",
        "description": "A Shironzi API key `shz_<prefix>_<secret>` (tenant or platform admin).",
    }
    app.openapi_schema = schema
    return schema


def app_from_env() -> FastAPI:
    """Uvicorn factory target (`serving.app:app_from_env`): settings from the environment."""
    return create_app(freeze_gc=True)
