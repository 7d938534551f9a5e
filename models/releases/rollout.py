"""Model rollouts in waves, in the manner of a Spinnaker canary pipeline (analysis: `monitoring.canary`).

    rollout = start_rollout("churn", "7", ctx=admin)         # wave 0 (the canary tenants) gets version 7
    pass_wave(rollout.id, 0, figures, ctx=admin)            # next wave: 10 % of the stable tenants ...
    fail_wave(rollout.id, 1, figures, ctx=admin)            # ... or every tenant back on the baseline

A rollout's waves (default `settings.release_waves`: canary, 10 %, 50 %, 100 %) are exposed one at a time; a wave
is `pending`, `analysing` (serving the candidate, waiting for its analysis), `passed`, `failed` or `rolled_back`.
When the last wave passes, the candidate becomes the champion (recorded in the champion history, so
`shironzi models rollback` can undo it). The state lives in the registry (`model_rollouts`), so `status` works
from any process, and every change reaches the API workers through the registry invalidation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from models.common import CHAMPION
from models.promotion import promote_version
from models.releases.routing import (
    BUCKETS,
    bucket,
    full_model_name,
    route_table,
    wave_bounds,
)
from models.tracking import aliases, champion_aliases, configure_mlflow
from shironzi.audit.log import audit_admin_action
from shironzi.errors import InvalidInputError, InvalidStateError, ModelNotFoundError, NotFoundError
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import TenantContext, get_registry
from shironzi.tenancy.channels import CANARY
from shironzi.tenancy.events import new_event_id, utcnow

ROLLOUT_PREFIX = "ro_"
FINISHED = ("completed", "rolled_back")


@dataclass(frozen=True)
class Rollout:
    """A rollout as stored: its waves (dicts: name, kind, percent, state, started_at, finished_at, analysis)."""

    id: str
    model: str
    candidate: str
    baseline: str
    status: str
    waves: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    created_by: str
    reason: str | None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Rollout:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    @property
    def current_wave(self) -> int | None:
        """The index of the wave waiting for its analysis (None when none is)."""
        return next((i for i, w in enumerate(self.waves) if w["state"] == "analysing"), None)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "candidate": self.candidate, "baseline": self.baseline,
                "status": self.status, "current_wave": self.current_wave, "waves": self.waves,
                "created_at": self.created_at.isoformat(), "updated_at": self.updated_at.isoformat(),
                "created_by": self.created_by, "reason": self.reason}


def parse_waves(spec: Sequence[str | int]) -> list[dict[str, Any]]:
    """`["canary", "10", "50", "100"]` -> wave dicts; percentages rise strictly and end at 100."""
    waves: list[dict[str, Any]] = []
    last = 0
    for position, raw in enumerate(spec):
        text = str(raw).strip().removesuffix("%")
        if text == CANARY:
            if position != 0:
                raise InvalidInputError("the canary wave can only come first", field="waves")
            waves.append({"name": CANARY, "kind": CANARY, "percent": None})
            continue
        try:
            percent = int(text)
        except ValueError:
            raise InvalidInputError(f"wave {raw!r} is neither `canary` nor a percentage", field="waves") from None
        if not last < percent <= 100:
            raise InvalidInputError(f"wave percentages must rise within 1..100; got {percent} after {last}",
                                    field="waves")
        last = percent
        waves.append({"name": f"{percent}%", "kind": "percent", "percent": percent})
    if last != 100:
        raise InvalidInputError("the last wave must reach 100 % of the tenants", field="waves")
    for wave in waves:
        wave.update(state="pending", started_at=None, finished_at=None, analysis=None)
    return waves


def check_version(model: str, version: str, *, settings: Settings | None = None) -> str:
    """The version as a string when `model` has it registered; ModelNotFoundError otherwise."""
    from mlflow.exceptions import MlflowException

    name = full_model_name(model)
    if not str(version).isdigit():
        raise InvalidInputError(f"model version must be a number, got {version!r}", field="version")
    try:
        configure_mlflow(settings or get_settings()).get_model_version(name, str(version))
    except MlflowException:
        raise ModelNotFoundError(f"{name} has no version {version}", model=name, version=str(version)) from None
    return str(version)


def check_pinned_version(model: str, version: str) -> None:
    """The registry's pin check (entry point `shironzi.channel_checks`): a pinned model and version must exist."""
    check_version(model, version)


def _audit(ctx: TenantContext, action: str, rollout: Rollout, **details: Any) -> None:
    audit_admin_action(ctx, action, tenant_id=None, resource=f"rollout:{rollout.id}",
                       details={"model": rollout.model, "candidate": rollout.candidate,
                                "baseline": rollout.baseline, **details})


def start_rollout(
    model: str, candidate: str, *, ctx: TenantContext, waves: Sequence[str | int] | None = None,
    settings: Settings | None = None,
) -> Rollout:
    """Start moving `candidate` through the tenants in waves; the first wave serves it at once."""
    ctx.require_admin("starting a model rollout")
    settings = settings or get_settings()
    name = full_model_name(model)
    planned = parse_waves(list(waves) if waves is not None else settings.release_waves)
    candidate = check_version(name, candidate, settings=settings)
    baseline = aliases(name, settings=settings).get(CHAMPION)
    if baseline is None:
        raise InvalidStateError(f"{name} has no champion to roll out against: promote one first", model=name)
    if baseline == candidate:
        raise InvalidStateError(f"version {candidate} is already the champion of {name}", model=name)
    now = utcnow()
    planned[0].update(state="analysing", started_at=now.isoformat())
    with stage("releases:start", model=name, candidate=candidate) as summary:
        row = {"id": ROLLOUT_PREFIX + new_event_id()[:24], "model": name, "candidate": candidate,
               "baseline": baseline, "status": "running", "waves": planned, "created_at": now, "updated_at": now,
               "created_by": ctx.actor, "reason": None}
        rollout = Rollout.of(get_registry(settings).create_rollout(ctx, row))
        summary.extra.update(rollout=rollout.id, waves=len(planned))
    _audit(ctx, "model_rollout_started", rollout, waves=[w["name"] for w in planned])
    return rollout


def find_rollout(ref: str, *, settings: Settings | None = None) -> Rollout:
    """A rollout by id, or the newest rollout of a model (`churn`, `shironzi-churn`)."""
    registry = get_registry(settings)
    if ref.startswith(ROLLOUT_PREFIX):
        return Rollout.of(registry.get_rollout(ref))
    found = registry.rollouts(model=full_model_name(ref), limit=1)
    if not found:
        raise NotFoundError(f"{full_model_name(ref)} has no rollout yet", model=full_model_name(ref))
    return Rollout.of(found[0])


def list_rollouts(*, model: str | None = None, limit: int = 20, settings: Settings | None = None) -> list[Rollout]:
    name = None if model is None else full_model_name(model)
    return [Rollout.of(r) for r in get_registry(settings).rollouts(model=name, limit=limit)]


def _change(ref: str, ctx: TenantContext, settings: Settings | None, change: Any) -> Rollout:
    registry = get_registry(settings)
    rollout_id = find_rollout(ref, settings=settings).id
    return Rollout.of(registry.update_rollout(ctx, rollout_id, change))


def _require_status(row: Mapping[str, Any], *allowed: str, doing: str) -> None:
    if row["status"] not in allowed:
        raise InvalidStateError(f"rollout {row['id']} is {row['status']}: cannot {doing}", rollout=row["id"],
                                status=row["status"])


def pause_rollout(ref: str, *, ctx: TenantContext, settings: Settings | None = None) -> Rollout:
    """Stop the waves where they are (the exposed tenants keep the candidate; no analysis advances)."""
    def change(row: dict[str, Any]) -> dict[str, Any]:
        _require_status(row, "running", doing="pause it")
        return {"status": "paused"}

    rollout = _change(ref, ctx, settings, change)
    _audit(ctx, "model_rollout_paused", rollout)
    return rollout


def resume_rollout(ref: str, *, ctx: TenantContext, settings: Settings | None = None) -> Rollout:
    def change(row: dict[str, Any]) -> dict[str, Any]:
        _require_status(row, "paused", doing="resume it")
        return {"status": "running"}

    rollout = _change(ref, ctx, settings, change)
    _audit(ctx, "model_rollout_resumed", rollout)
    return rollout


def _rolled_back(row: Mapping[str, Any], reason: str, failed: int | None = None,
                 analysis: Mapping[str, Any] | None = None) -> dict[str, Any]:
    now = utcnow().isoformat()
    waves = [dict(w) for w in row["waves"]]
    for index, wave in enumerate(waves):
        if index == failed:
            wave.update(state="failed", finished_at=now, analysis=dict(analysis or {}))
        elif wave["state"] in ("analysing", "passed"):
            wave.update(state="rolled_back", finished_at=wave["finished_at"] or now)
    return {"status": "rolled_back", "waves": waves, "reason": reason[:2000]}


def rollback_rollout(
    ref: str, *, ctx: TenantContext, reason: str = "rolled back by an operator", settings: Settings | None = None,
) -> Rollout:
    """Send every tenant of the rollout back to the baseline version at once."""
    def change(row: dict[str, Any]) -> dict[str, Any]:
        _require_status(row, "running", "paused", doing="roll it back")
        return _rolled_back(row, reason)

    rollout = _change(ref, ctx, settings, change)
    _audit(ctx, "model_rollout_rolled_back", rollout, reason=reason, automatic=False)
    return rollout


def _check_wave(row: Mapping[str, Any], index: int) -> None:
    _require_status(row, "running", doing="judge a wave")
    if not 0 <= index < len(row["waves"]) or row["waves"][index]["state"] != "analysing":
        raise InvalidStateError(f"wave {index} of rollout {row['id']} is not waiting for its analysis",
                                rollout=row["id"], wave=index)


def fail_wave(
    rollout_id: str, index: int, analysis: Mapping[str, Any], *, ctx: TenantContext,
    settings: Settings | None = None,
) -> Rollout:
    """A failed canary analysis: the whole rollout is rolled back and the figures go to the audit log."""
    reason = f"canary analysis failed on wave {index}: " + ("; ".join(analysis.get("failures", ())) or "failed")

    def change(row: dict[str, Any]) -> dict[str, Any]:
        _check_wave(row, index)
        return _rolled_back(row, reason, failed=index, analysis=analysis)

    rollout = _change(rollout_id, ctx, settings, change)
    _audit(ctx, "model_rollout_rolled_back", rollout, reason=reason, automatic=True, wave=index,
           analysis=dict(analysis))
    return rollout


def pass_wave(
    rollout_id: str, index: int, analysis: Mapping[str, Any], *, ctx: TenantContext,
    settings: Settings | None = None,
) -> Rollout:
    """A passed canary analysis: the next wave serves the candidate; after the last, it becomes the champion."""
    settings = settings or get_settings()
    now = utcnow().isoformat()

    def change(row: dict[str, Any]) -> dict[str, Any]:
        _check_wave(row, index)
        waves = [dict(w) for w in row["waves"]]
        waves[index].update(state="passed", finished_at=now, analysis=dict(analysis))
        if index + 1 < len(waves):
            waves[index + 1].update(state="analysing", started_at=now)
            return {"waves": waves}
        return {"waves": waves, "status": "completed", "reason": "every wave passed its canary analysis"}

    # Promote first: when the champion moves before the rollout ends, no request sees the baseline in between.
    rollout = find_rollout(rollout_id, settings=settings)
    if index + 1 == len(rollout.waves) and rollout.status == "running" and rollout.current_wave == index:
        _promote_candidate(rollout, ctx=ctx, settings=settings)
    rollout = _change(rollout_id, ctx, settings, change)
    _audit(ctx, "model_rollout_wave_passed", rollout, wave=index, analysis=dict(analysis),
           completed=rollout.status == "completed")
    return rollout


def _promote_candidate(rollout: Rollout, *, ctx: TenantContext, settings: Settings) -> None:
    promote_version(rollout.model, rollout.candidate, reason=f"rollout {rollout.id} completed", settings=settings)


def wave_tenants(rollout: Rollout, index: int, *, settings: Settings | None = None) -> list[str]:
    """The tenants wave `index` moves onto the candidate: the canary tenants, or the stable tenants whose bucket
    falls in the wave's range (active tenants only)."""
    registry = get_registry(settings)
    table = route_table(registry, rollout.model)
    wave = rollout.waves[index]
    if wave["kind"] == CANARY:
        return sorted(table.canary)
    low, high = wave_bounds(rollout.waves, index)
    assert high <= BUCKETS
    live = [tid for tid, info in registry.tenant_directory().items() if info.status == "active"]
    return sorted(t for t in table.stable(live) if low <= bucket(rollout.id, t) < high)


def champion_versions(name: str, *, settings: Settings | None = None) -> dict[str, str]:
    """The champion aliases of `name` (alias -> version)."""
    return champion_aliases(aliases(name, settings=settings))
