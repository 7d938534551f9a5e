"""The promotion gate and rollback of the registry's champion aliases.

A challenger becomes champion when it beats the champion on the challenger's own holdout by a margin and
regresses on no tenant-size bucket. The gate is model-agnostic: the caller passes a model name -> evaluator map
(`models.registry` binds the churn and trend evaluators). Every champion move is recorded in the registered
model's `champion_history` tag (so `rollback` restores the previous champion aliases) and as a durable audit event.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from models.common import CHALLENGER, CHAMPION
from models.tracking import (
    TENANT_CHALLENGER_PREFIX,
    aliases,
    champion_aliases,
    check_model_name,
    configure_mlflow,
    tenant_champion_alias,
    version_run_id,
    version_run_parent,
)
from shironzi.audit.log import audit_admin_action
from shironzi.errors import InvalidInputError, InvalidStateError, ModelNotFoundError
from shironzi.observability import stage
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import TenantContext

if TYPE_CHECKING:
    from mlflow import MlflowClient

HISTORY_TAG = "champion_history"
HISTORY_KEEP = 20
AUDIT_ACTOR = "models"


@dataclass
class PromotionDecision:
    """The outcome of a promotion gate (or a rollback)."""

    name: str
    promoted: bool
    reason: str
    champion_version: str | None
    challenger_version: str | None
    champion_metrics: dict[str, float] = field(default_factory=dict)
    challenger_metrics: dict[str, float] = field(default_factory=dict)
    tenant_aliases: dict[str, str | None] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "promoted": self.promoted, "reason": self.reason,
            "champion_version": self.champion_version, "challenger_version": self.challenger_version,
            "champion_metrics": self.champion_metrics, "challenger_metrics": self.challenger_metrics,
            "tenant_aliases": self.tenant_aliases,
        }


@dataclass(frozen=True)
class HoldoutScores:
    """A model's figures on one holdout: the primary metric and the same metric per tenant-size bucket."""

    primary: float
    buckets: dict[str, float]
    higher_is_better: bool
    metric: str


class Evaluator(Protocol):
    """Scores a registered `version` of one model on the holdout saved by the training run `holdout_run_id`."""

    def __call__(self, version: str, holdout_run_id: str, *, settings: Settings | None = None) -> HoldoutScores: ...


def _evaluate(evaluators: Mapping[str, Evaluator], name: str, version: str, holdout_run_id: str,
              settings: Settings) -> HoldoutScores:
    evaluator = evaluators.get(name)
    if evaluator is None:
        raise InvalidInputError(f"no holdout evaluator for model {name!r}")
    return evaluator(version, holdout_run_id, settings=settings)


def _history(client: MlflowClient, name: str) -> list[dict[str, str]]:
    model = client.get_registered_model(name)
    raw = model.tags.get(HISTORY_TAG)
    return json.loads(raw) if raw else []


def _set_champion_aliases(client: MlflowClient, name: str, wanted: Mapping[str, str | None]) -> None:
    for alias, version in wanted.items():
        if version is None:
            with contextlib.suppress(Exception):  # already absent
                client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, str(version))


def _audit(action: str, name: str, details: Mapping[str, Any]) -> None:
    ctx = TenantContext.admin(actor=AUDIT_ACTOR, purpose=f"model registry: {action}")
    audit_admin_action(ctx, action, tenant_id=None, resource=f"model:{name}", details=dict(details))


def _record_move(client: MlflowClient, name: str, before: Mapping[str, str]) -> None:
    history = _history(client, name)
    history.append(dict(before))
    client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history[-HISTORY_KEEP:]))


def _gate(challenger: HoldoutScores, champion: HoldoutScores, margin: float, tolerance: float) -> tuple[bool, str]:
    sign = 1.0 if challenger.higher_is_better else -1.0
    gain = sign * (challenger.primary - champion.primary)
    if not math.isfinite(challenger.primary):
        return False, f"challenger has no {challenger.metric} on the holdout"
    if gain < margin:
        return False, (f"challenger {challenger.metric} {challenger.primary:.4f} does not beat champion "
                       f"{champion.primary:.4f} by the margin {margin:g}")
    for bucket, value in sorted(champion.buckets.items()):
        mine = challenger.buckets.get(bucket)
        if mine is None or not math.isfinite(mine):
            continue
        if sign * (mine - value) < -tolerance:
            return False, (f"challenger regresses on the {bucket} tenant bucket: {challenger.metric} {mine:.4f} "
                           f"vs champion {value:.4f} (tolerance {tolerance:g})")
    return True, (f"challenger {challenger.metric} {challenger.primary:.4f} beats champion {champion.primary:.4f} "
                  f"by {gain:.4f} with no bucket regression")


def promote_if_better(
    name: str, *, evaluators: Mapping[str, Evaluator], margin: float | None = None, settings: Settings | None = None,
) -> PromotionDecision:
    """Move `champion` to the `challenger` version when it beats the champion on the challenger's holdout by
    `margin` (default: settings.model_promotion_margin) and regresses on no tenant-size bucket, both scored by
    `evaluators[name]`. The churn model's dedicated tenant challengers follow the global decision. Audited either
    way."""
    settings = settings or get_settings()
    margin = settings.model_promotion_margin if margin is None else float(margin)
    if margin < 0:
        raise InvalidInputError("margin must be >= 0")
    client = configure_mlflow(settings)
    with stage("models:promote", model=check_model_name(name)) as summary:
        found = aliases(name, settings=settings)
        challenger = found.get(CHALLENGER)
        champion = found.get(CHAMPION)
        if challenger is None:
            raise InvalidStateError(f"{name} has no challenger to promote: train one first (shironzi models train)")
        decision = PromotionDecision(name, False, "", champion, challenger)
        holdout_run = version_run_id(name, challenger, settings=settings)
        mine = _evaluate(evaluators, name, challenger, holdout_run, settings)
        decision.challenger_metrics = {mine.metric: mine.primary, **{f"{mine.metric}_bucket_{b}": v
                                                                     for b, v in mine.buckets.items()}}
        if champion == challenger:
            decision.reason = f"version {challenger} is already the champion"
        elif champion is None:
            decision.promoted, decision.reason = True, "no champion yet: the challenger becomes champion"
        else:
            theirs = _evaluate(evaluators, name, champion, holdout_run, settings)
            decision.champion_metrics = {theirs.metric: theirs.primary, **{f"{theirs.metric}_bucket_{b}": v
                                                                           for b, v in theirs.buckets.items()}}
            decision.promoted, decision.reason = _gate(mine, theirs, margin, settings.model_bucket_tolerance)
        if decision.promoted:
            wanted: dict[str, str | None] = {CHAMPION: challenger}
            # Dedicated tenant models trained with this challenger replace the tenants' previous ones;
            # tenants without one fall back to the global champion.
            for alias in champion_aliases(found):
                if alias != CHAMPION:
                    wanted[alias] = None
            for alias, version in found.items():
                if alias.startswith(TENANT_CHALLENGER_PREFIX):
                    tenant_id = alias[len(TENANT_CHALLENGER_PREFIX):]
                    if version_run_parent(client, name, version) == holdout_run:
                        wanted[tenant_champion_alias(tenant_id)] = version
            _record_move(client, name, champion_aliases(found))
            _set_champion_aliases(client, name, wanted)
            decision.champion_version = challenger
            decision.tenant_aliases = {a: v for a, v in wanted.items() if a != CHAMPION}
        _audit("model_promotion" if decision.promoted else "model_promotion_refused", name, {
            **decision.as_dict(), "previous_champion": champion, "margin": margin,
        })
        summary.extra.update(promoted=decision.promoted, champion=decision.champion_version, challenger=challenger)
    return decision



def rollback(name: str, *, settings: Settings | None = None) -> PromotionDecision:
    """Restore the champion aliases as they were before the last promotion (audited)."""
    settings = settings or get_settings()
    with stage("models:rollback", model=check_model_name(name)) as summary:
        found = aliases(name, settings=settings)
        client = configure_mlflow(settings) if found else None
        if not found or client is None:
            raise ModelNotFoundError(f"{name} is not registered yet: nothing to roll back")
        history = _history(client, name)
        if not history or CHAMPION not in history[-1]:
            raise InvalidStateError(f"{name} has no previous champion to roll back to")
        previous = history.pop()
        current = champion_aliases(found)
        wanted: dict[str, str | None] = {alias: None for alias in current}
        wanted.update(previous)
        _set_champion_aliases(client, name, wanted)
        client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
        decision = PromotionDecision(
            name, True, f"champion rolled back from version {current.get(CHAMPION)} to {previous[CHAMPION]}",
            previous[CHAMPION], current.get(CHAMPION),
            tenant_aliases={a: v for a, v in wanted.items() if a != CHAMPION},
        )
        _audit("model_rollback", name, {**decision.as_dict(), "restored": previous, "replaced": current})
        summary.extra.update(champion=previous[CHAMPION], replaced=current.get(CHAMPION))
    return decision


def promote_version(name: str, version: str, *, reason: str, settings: Settings | None = None) -> PromotionDecision:
    """Make `version` the champion of `name` outright (a rollout whose every wave passed its canary analysis):
    it replaces every champion alias, recorded in the history so that `rollback` restores them (audited)."""
    settings = settings or get_settings()
    with stage("models:promote_version", model=check_model_name(name), version=str(version)) as summary:
        client = configure_mlflow(settings)
        current = champion_aliases(aliases(name, settings=settings))
        wanted: dict[str, str | None] = {alias: None for alias in current if alias != CHAMPION}
        wanted[CHAMPION] = str(version)
        _record_move(client, name, current)
        _set_champion_aliases(client, name, wanted)
        decision = PromotionDecision(name, True, reason, str(version), current.get(CHAMPION),
                                     tenant_aliases={a: v for a, v in wanted.items() if a != CHAMPION})
        _audit("model_promotion", name, {**decision.as_dict(), "previous_champion": current.get(CHAMPION)})
        summary.extra.update(champion=str(version), replaced=current.get(CHAMPION))
    return decision
