"""Model rollouts (platform admin key): list, start, read, pause, resume, roll back. The canary analysis that
passes or fails a wave runs in `shironzi releases advance` (monitoring); these routes change the rollout's state,
and every change re-routes this worker at once and the others through the registry invalidation."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from starlette.concurrency import run_in_threadpool

from models.releases.rollout import (
    ROLLOUT_PREFIX,
    Rollout,
    find_rollout,
    list_rollouts,
    pause_rollout,
    resume_rollout,
    rollback_rollout,
    start_rollout,
)
from serving.api.docs import admin_op
from serving.deps import AdminAccess, AdminDep
from serving.errors import ERROR_RESPONSES
from serving.schemas import RolloutCreate, RolloutPublic, RolloutRollback, RolloutsPage
from shironzi.errors import NotFoundError

router = APIRouter(prefix="/v1/admin/releases", tags=["admin: releases"], responses=ERROR_RESPONSES)

RolloutPath = Annotated[str, Path(min_length=1, max_length=64, description="Rollout id (`ro_...`).")]


def _rollout_id(rollout_id: str) -> str:
    """Only rollout ids here (the CLI also takes a model name for its newest rollout)."""
    if not rollout_id.startswith(ROLLOUT_PREFIX):
        raise NotFoundError(f"no rollout {rollout_id!r}", rollout=rollout_id)
    return rollout_id


def _public(rollout: Rollout) -> RolloutPublic:
    return RolloutPublic.model_validate(rollout.as_dict())


async def _changed(admin: AdminAccess, action: str, rollout: Rollout, **details: Any) -> RolloutPublic:
    admin.audit_write(action, tenant_id=None, rollout=rollout.id, model=rollout.model, status=rollout.status,
                      **details)
    await run_in_threadpool(admin.services.model.refresh)  # this worker re-routes now, the others within ~1 s
    return _public(rollout)


@router.get("", response_model=RolloutsPage, openapi_extra=admin_op(write=False))
async def get_rollouts(
    admin: AdminDep,
    model: Annotated[str | None, Query(pattern=r"^(shironzi-)?(churn|trend)$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> RolloutsPage:
    """Recent rollouts, newest first."""
    found = await run_in_threadpool(lambda: list_rollouts(model=model, limit=limit, settings=admin.services.settings))
    admin.audit_read("api_admin_read", tenant_id=None, rollouts=len(found))
    return RolloutsPage(items=[_public(r) for r in found])


@router.post("", status_code=201, response_model=RolloutPublic, openapi_extra=admin_op(write=True))
async def create_rollout(body: RolloutCreate, admin: AdminDep) -> RolloutPublic:
    """Start rolling a version out in waves; the first wave (the canary tenants) is served it at once."""
    rollout = await run_in_threadpool(lambda: start_rollout(body.model, body.version, ctx=admin.ctx, waves=body.waves,
                                                            settings=admin.services.settings))
    return await _changed(admin, "api_rollout_started", rollout, candidate=rollout.candidate)


@router.get("/{rollout_id}", response_model=RolloutPublic, openapi_extra=admin_op(write=False))
async def get_rollout(rollout_id: RolloutPath, admin: AdminDep) -> RolloutPublic:
    """A rollout's waves and the figures of their canary analyses."""
    rollout = await run_in_threadpool(lambda: find_rollout(_rollout_id(rollout_id), settings=admin.services.settings))
    admin.audit_read("api_admin_read", tenant_id=None, rollout=rollout.id)
    return _public(rollout)


@router.post("/{rollout_id}/pause", response_model=RolloutPublic, openapi_extra=admin_op(write=True))
async def pause(rollout_id: RolloutPath, admin: AdminDep) -> RolloutPublic:
    """Hold the waves where they are (the exposed tenants keep the candidate)."""
    rollout = await run_in_threadpool(lambda: pause_rollout(_rollout_id(rollout_id), ctx=admin.ctx,
                                                            settings=admin.services.settings))
    return await _changed(admin, "api_rollout_paused", rollout)


@router.post("/{rollout_id}/resume", response_model=RolloutPublic, openapi_extra=admin_op(write=True))
async def resume(rollout_id: RolloutPath, admin: AdminDep) -> RolloutPublic:
    rollout = await run_in_threadpool(lambda: resume_rollout(_rollout_id(rollout_id), ctx=admin.ctx,
                                                             settings=admin.services.settings))
    return await _changed(admin, "api_rollout_resumed", rollout)


@router.post("/{rollout_id}/rollback", response_model=RolloutPublic, openapi_extra=admin_op(write=True))
async def rollback(rollout_id: RolloutPath, body: RolloutRollback, admin: AdminDep) -> RolloutPublic:
    """Send every tenant of the rollout back to the baseline version."""
    rollout = await run_in_threadpool(lambda: rollback_rollout(_rollout_id(rollout_id), ctx=admin.ctx,
                                                               reason=body.reason, settings=admin.services.settings))
    return await _changed(admin, "api_rollout_rolled_back", rollout, reason=body.reason)
