"""Liveness and readiness (no key): `/healthz` answers while the process runs; `/readyz` checks the model,
the tenant registry and the online store (and the rate-limit store when Redis is configured)."""

from __future__ import annotations

from fastapi import APIRouter, Response
from starlette.concurrency import run_in_threadpool

from serving.api.docs import PUBLIC_OP
from serving.deps import ServicesDep
from serving.errors import public_text
from serving.schemas import HealthPublic, ReadinessPublic
from serving.services import ApiServices
from shironzi.errors import ShironziError

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=HealthPublic, openapi_extra=PUBLIC_OP)
async def healthz() -> HealthPublic:
    return HealthPublic(status="ok")


def readiness(services: ApiServices) -> dict[str, str]:
    checks: dict[str, str] = {}
    try:
        services.model.get()
        checks["model"] = f"ok: {services.model.version}"
    except ShironziError as exc:
        checks["model"] = f"failed: {public_text(exc.message)}"
    try:
        import sqlalchemy as sa

        with services.registry.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        checks["registry"] = "ok"
    except Exception as exc:  # noqa: BLE001 - any failure means not ready
        checks["registry"] = f"failed: {type(exc).__name__}"
    try:
        services.online_store.read("__readyz__", ["__readyz__"], ["__readyz__"])
        checks["online_store"] = "ok"
    except Exception as exc:  # noqa: BLE001
        checks["online_store"] = f"failed: {type(exc).__name__}"
    if services.limiter.backend == "redis":
        try:
            services.limiter.ping()
            checks["rate_limit_store"] = "ok"
        except ShironziError:  # the limiter falls back to in-process buckets: degraded, still serving
            checks["rate_limit_store"] = "ok: degraded, in-process rate limits until the store answers"
    return checks


@router.get(
    "/readyz",
    response_model=ReadinessPublic,
    responses={503: {"model": ReadinessPublic, "description": "Not ready"}},
    openapi_extra=PUBLIC_OP,
)
async def readyz(services: ServicesDep, response: Response) -> ReadinessPublic:
    checks = await run_in_threadpool(readiness, services)
    ready = all(v == "ok" or v.startswith("ok:") for v in checks.values())
    response.status_code = 200 if ready else 503
    return ReadinessPublic(status="ready" if ready else "not_ready", checks=checks)
