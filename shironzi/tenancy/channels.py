"""Release channels and model rollouts in the registry.

Every tenant follows a channel: `stable` (the default), `canary`, or `pinned:<model>@<version>`. A change is a
`channel_changed` event folded into `tenants.channel`. Rollouts (`model_rollouts`, one active per model) are
platform metadata; each change of one appends a `rollout_changed` platform event in the same transaction, so the
registry's invalidation (Redis or the event-log poll) tells every API worker that routing changed. What the rows
mean (waves, analysis, which version a tenant gets) is `models.releases`'s business.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from shironzi.errors import ConflictError, InvalidInputError, InvalidStateError, NotFoundError
from shironzi.settings import Settings
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.events import ProjectionState, TenantEvent, utcnow
from shironzi.tenancy.invalidation import Invalidation
from shironzi.tenancy.models import model_rollouts, tenants
from shironzi.tenancy.records import Tenant
from shironzi.tenancy.store import RegistryStore, require_live

STABLE, CANARY, PINNED = "stable", "canary", "pinned"
_PINNED = re.compile(r"pinned:(?P<model>[a-z][a-z0-9_-]{0,62})@(?P<version>[1-9][0-9]{0,9})")
ACTIVE_ROLLOUT_STATUSES = ("running", "paused")

PinCheck = Callable[[str, str], None]  # (model, version) -> None, or raises when either is unknown
PIN_CHECKS_GROUP = "shironzi.channel_checks"


@cache
def installed_pin_checks() -> tuple[PinCheck, ...]:
    """The pin checks the installed packages provide (`models` checks its registry), loaded once."""
    return tuple(ep.load() for ep in sorted(entry_points(group=PIN_CHECKS_GROUP), key=lambda e: e.name))


@dataclass(frozen=True, slots=True)
class Channel:
    """A parsed channel; `model` and `version` only for `pinned`."""

    kind: str
    model: str | None = None
    version: str | None = None

    def __str__(self) -> str:
        return f"{PINNED}:{self.model}@{self.version}" if self.kind == PINNED else self.kind


def parse_channel(text: object) -> Channel:
    """`stable`, `canary` or `pinned:<model>@<version>` (e.g. `pinned:churn@3`); InvalidInputError otherwise."""
    value = str(text).strip() if isinstance(text, str) else ""
    if value in (STABLE, CANARY):
        return Channel(value)
    match = _PINNED.fullmatch(value)
    if match is None:
        raise InvalidInputError(
            f"unknown channel {text!r}: use stable, canary or pinned:<model>@<version> (e.g. pinned:churn@3)",
            field="channel",
        )
    return Channel(PINNED, match["model"], match["version"])


class ReleaseChannels(RegistryStore):
    """The channel and rollout part of `Registry`, with the cached reads model routing uses per request."""

    def __init__(self, engine: Engine, *, settings: Settings | None = None) -> None:
        super().__init__(engine, settings=settings)
        self._channel_cache: tuple[float, dict[str, str]] | None = None
        self._rollout_cache: tuple[float, list[dict[str, Any]]] | None = None
        self.routing_generation = 0  # bumped by every routing invalidation (cheap staleness check)

    # --- channels -------------------------------------------------------------------------------------

    def set_channel(
        self, ctx: TenantContext, tenant_id: str, channel: str, *, check_pin: PinCheck | None = None
    ) -> Tenant:
        """Move a tenant to another release channel (admin). A pinned model and version must exist: `check_pin`, by
        default the installed checks (`shironzi.channel_checks` entry points)."""
        ctx.require_admin("changing a tenant's release channel")
        parsed = parse_channel(channel)
        if parsed.kind == PINNED:
            for check in (check_pin,) if check_pin is not None else installed_pin_checks():
                check(str(parsed.model), str(parsed.version))

        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            ((tid, row),) = state.tenants.items()
            require_live(tid, row)
            current = row.get("channel") or STABLE
            if current == str(parsed):
                raise InvalidStateError(
                    f"tenant {tid!r} already follows the {current} channel", tenant=tid, channel=current
                )
            return [self._event(ctx, "channel_changed", tid, **{"from": current, "to": str(parsed)})]

        state, _ = self._commit(decide, tenant=tenant_id, ctx=ctx)
        return Tenant.from_row(next(iter(state.tenants.values())))

    def tenant_channels(self, *, fresh: bool = False) -> dict[str, str]:
        """Every tenant not on `stable`: id -> channel (cached until a routing invalidation or the TTL)."""
        cached = self._channel_cache
        if not fresh and cached is not None and cached[0] >= time.monotonic():
            return cached[1]
        with self._hot_reads.connect() as conn:
            rows = conn.execute(
                sa.select(tenants.c.id, tenants.c.channel).where(
                    tenants.c.channel != STABLE, tenants.c.status.in_(("active", "suspended"))
                )
            ).all()
        found = {str(tid): str(channel) for tid, channel in rows}
        self._channel_cache = (time.monotonic() + self.settings.module_cache_ttl_seconds, found)
        return found

    # --- rollouts -------------------------------------------------------------------------------------

    def rollouts(self, *, model: str | None = None, active_only: bool = False, limit: int = 50) -> list[dict[str, Any]]:
        """Rollouts, newest first (one model's, or only the running and paused ones)."""
        query = sa.select(model_rollouts).order_by(model_rollouts.c.created_at.desc()).limit(limit)
        if model is not None:
            query = query.where(model_rollouts.c.model == model)
        if active_only:
            query = query.where(model_rollouts.c.status.in_(ACTIVE_ROLLOUT_STATUSES))
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def active_rollouts(self, *, fresh: bool = False) -> list[dict[str, Any]]:
        """The running and paused rollouts of every model (cached like `tenant_channels`)."""
        cached = self._rollout_cache
        if not fresh and cached is not None and cached[0] >= time.monotonic():
            return cached[1]
        found = self.rollouts(active_only=True, limit=1000)
        self._rollout_cache = (time.monotonic() + self.settings.module_cache_ttl_seconds, found)
        return found

    def get_rollout(self, rollout_id: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(model_rollouts).where(model_rollouts.c.id == rollout_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"no rollout {rollout_id!r}", rollout=rollout_id)
        return dict(row)

    def create_rollout(self, ctx: TenantContext, row: dict[str, Any]) -> dict[str, Any]:
        """Store a new active rollout; ConflictError when its model already has one running or paused."""
        ctx.require_admin("starting a model rollout")

        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            active = conn.execute(
                sa.select(model_rollouts.c.id).where(model_rollouts.c.active_model == row["model"])
            ).scalar()
            if active is not None:
                raise ConflictError(
                    f"model {row['model']!r} already has an active rollout {active!r}: finish, roll back or "
                    "wait for it first", model=row["model"], rollout=active,
                )
            conn.execute(model_rollouts.insert().values(**row, active_model=row["model"]))
            return [self._event(ctx, "rollout_changed", None, rollout=row["id"], model=row["model"],
                                status=row["status"])]

        self._commit(decide, ctx=ctx)
        return self.get_rollout(row["id"])

    def update_rollout(
        self, ctx: TenantContext, rollout_id: str, change: Callable[[dict[str, Any]], dict[str, Any]]
    ) -> dict[str, Any]:
        """Apply `change` (current row -> changed columns; it raises to refuse) to a rollout under a row lock."""
        ctx.require_admin("changing a model rollout")

        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            query = sa.select(model_rollouts).where(model_rollouts.c.id == rollout_id).with_for_update()
            current = conn.execute(query).mappings().first()
            if current is None:
                raise NotFoundError(f"no rollout {rollout_id!r}", rollout=rollout_id)
            values = change(dict(current))
            status = values.get("status", current["status"])
            values["active_model"] = current["model"] if status in ACTIVE_ROLLOUT_STATUSES else None
            values["updated_at"] = utcnow()
            conn.execute(model_rollouts.update().where(model_rollouts.c.id == rollout_id).values(**values))
            return [self._event(ctx, "rollout_changed", None, rollout=rollout_id, model=current["model"],
                                status=status)]

        self._commit(decide, ctx=ctx)
        return self.get_rollout(rollout_id)

    def apply_invalidation(self, change: Invalidation) -> None:
        super().apply_invalidation(change)
        if change.routing or change.everything:
            self._channel_cache = None
            self._rollout_cache = None
            self.routing_generation += 1
