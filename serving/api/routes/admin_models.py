"""Model aliases (platform admin key): read `champion`/`challenger`, roll the champion back."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from models.promotion import rollback
from models.tracking import aliases
from serving.api.docs import admin_op
from serving.deps import AdminDep
from serving.errors import ERROR_RESPONSES
from serving.schemas import ModelAliasesPublic, RollbackPublic
from shironzi.errors import ServiceUnavailableError, ShironziError
from shironzi.settings import Settings

router = APIRouter(prefix="/v1/admin/models", tags=["admin: models"], responses=ERROR_RESPONSES)

ModelName = Literal["shironzi-churn", "shironzi-trend"]


def _aliases(name: str, settings: Settings) -> dict[str, str]:
    try:
        return {str(k): str(v) for k, v in aliases(name, settings=settings).items()}
    except ShironziError:
        raise
    except Exception as exc:  # MLflow's own errors: the registry is unreachable or empty
        raise ServiceUnavailableError(f"model registry error for {name!r}: {type(exc).__name__}") from exc


@router.get("/{name}/aliases", response_model=ModelAliasesPublic, openapi_extra=admin_op(write=False))
async def get_model_aliases(name: ModelName, admin: AdminDep) -> ModelAliasesPublic:
    """The model's aliases (alias -> version)."""
    found = await run_in_threadpool(_aliases, name, admin.services.settings)
    admin.audit_read("api_admin_read", tenant_id=None, model=name)
    return ModelAliasesPublic(name=name, aliases=found)


@router.post("/{name}/rollback", response_model=RollbackPublic, openapi_extra=admin_op(write=True))
async def rollback_model(name: ModelName, admin: AdminDep) -> RollbackPublic:
    """Point `champion` back at the previous champion; this worker follows at once, others within the
    refresh interval."""
    settings = admin.services.settings

    def run() -> object:
        try:
            return rollback(name, settings=settings)
        except ShironziError:
            raise
        except Exception as exc:
            raise ServiceUnavailableError(f"rollback of {name!r} failed: {type(exc).__name__}") from exc

    before = await run_in_threadpool(_aliases, name, settings)
    outcome = await run_in_threadpool(run)
    after = await run_in_threadpool(_aliases, name, settings)
    admin.audit_write(
        "api_model_rollback", tenant_id=None, model=name, before=before.get("champion"), after=after.get("champion")
    )
    if name == "shironzi-churn":
        await run_in_threadpool(admin.services.model.refresh)
    return RollbackPublic(name=name, aliases=after, detail=str(getattr(outcome, "reason", "") or "rolled back"))
