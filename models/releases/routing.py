"""Which registered version serves a tenant: its pinned version, else the candidate of an active rollout whose
exposed waves include it, else the champion (`champion_<tenant>` first, then `champion`).

    table = route_table(get_registry(settings), CHURN_MODEL)
    table.version_for(tenant_id)      # "7" (pinned or in a live wave) or None (follow the champion aliases)

The table is built from the registry's cached channel and rollout reads and is rebuilt only when a routing
invalidation arrives (see `shironzi.tenancy.invalidation`): per request it costs a dict lookup (the first
lookup of a tenant also one hash).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from models.common import CHURN_MODEL, TREND_MODEL
from shironzi.errors import InvalidInputError
from shironzi.tenancy.channels import CANARY, PINNED, STABLE, parse_channel

MODEL_SHORT_NAMES: Mapping[str, str] = {"churn": CHURN_MODEL, "trend": TREND_MODEL}
BUCKETS = 10_000  # a stable tenant's place in a rollout: a bucket in [0, BUCKETS), exposed while < percent * 100
LIVE_WAVE_STATES = ("analysing", "passed")


def full_model_name(name: str) -> str:
    """`churn` or `shironzi-churn` -> `shironzi-churn` (InvalidInputError for anything else)."""
    if name in MODEL_SHORT_NAMES.values():
        return name
    if name in MODEL_SHORT_NAMES:
        return MODEL_SHORT_NAMES[name]
    known = ", ".join([*MODEL_SHORT_NAMES, *MODEL_SHORT_NAMES.values()])
    raise InvalidInputError(f"unknown model {name!r}; expected one of {known}", field="model")


def bucket(rollout_id: str, tenant_id: str) -> int:
    """A tenant's deterministic bucket in one rollout (another rollout draws its waves afresh)."""
    digest = hashlib.blake2b(f"{rollout_id}:{tenant_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % BUCKETS


def wave_bounds(waves: list[dict[str, Any]], index: int) -> tuple[int, int]:
    """The bucket range [low, high) of percentage wave `index` (the stable tenants it adds)."""
    low = 0
    for wave in waves[:index]:
        if wave["kind"] == "percent":
            low = int(wave["percent"]) * BUCKETS // 100
    return low, int(waves[index]["percent"]) * BUCKETS // 100


@dataclass(frozen=True)
class LiveRollout:
    """What routing needs of an active rollout: its candidate, whether the canary tenants get it, and the
    bucket below which stable tenants get it."""

    id: str
    candidate: str
    canary: bool
    exposed_below: int

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> LiveRollout:
        canary, below = False, 0
        for index, wave in enumerate(row["waves"]):
            if wave["state"] not in LIVE_WAVE_STATES:
                continue
            if wave["kind"] == CANARY:
                canary = True
            else:
                below = max(below, wave_bounds(row["waves"], index)[1])
        return cls(str(row["id"]), str(row["candidate"]), canary, below)


@dataclass
class RouteTable:
    """One model's routing: pinned tenants, canary tenants and the live rollout (if any)."""

    model: str
    pinned: dict[str, str]
    canary: frozenset[str]
    rollout: LiveRollout | None
    _memo: dict[str, str | None] = field(default_factory=dict, repr=False, compare=False)

    @property
    def key(self) -> tuple[Any, ...]:
        """Equal keys route every tenant the same way."""
        return (tuple(sorted(self.pinned.items())), tuple(sorted(self.canary)), self.rollout)

    def versions(self) -> set[str]:
        """Every version this table may route to (to load before serving)."""
        return {*self.pinned.values(), *([self.rollout.candidate] if self.rollout else [])}

    def version_for(self, tenant_id: str) -> str | None:
        """The version that serves `tenant_id`, or None for the champion aliases."""
        try:
            return self._memo[tenant_id]
        except KeyError:
            pass
        version = self.pinned.get(tenant_id)
        live = self.rollout
        if version is None and live is not None:
            if tenant_id in self.canary:
                version = live.candidate if live.canary else None
            elif live.exposed_below and bucket(live.id, tenant_id) < live.exposed_below:
                version = live.candidate
        if len(self._memo) < 1_000_000:
            self._memo[tenant_id] = version
        return version

    def stable(self, tenant_ids: Iterable[str]) -> list[str]:
        """The tenants among `tenant_ids` that follow `stable` (neither canary nor pinned to this model)."""
        return [t for t in tenant_ids if t not in self.canary and t not in self.pinned]


def build_route_table(model: str, channels: Mapping[str, str], rollouts: Iterable[Mapping[str, Any]]) -> RouteTable:
    """The routing of `model` from the non-stable channels (tenant -> channel) and the active rollouts."""
    pinned: dict[str, str] = {}
    canary: set[str] = set()
    for tenant_id, text in channels.items():
        if text == STABLE:
            continue
        parsed = parse_channel(text)
        if parsed.kind == CANARY:
            canary.add(tenant_id)
        elif parsed.kind == PINNED and MODEL_SHORT_NAMES.get(str(parsed.model), str(parsed.model)) == model:
            pinned[tenant_id] = str(parsed.version)  # a tenant pinned to another model is stable for this one
    live = next((LiveRollout.of(r) for r in rollouts if r["model"] == model and r["status"] == "running"), None)
    if live is None:  # a paused rollout keeps its exposure: pausing stops the waves, not the traffic
        live = next((LiveRollout.of(r) for r in rollouts if r["model"] == model), None)
    return RouteTable(model, pinned, frozenset(canary), live)


def route_table(registry: Any, model: str) -> RouteTable:
    """`build_route_table` from the registry's cached reads (a `shironzi.tenancy.Registry`)."""
    return build_route_table(model, registry.tenant_channels(), registry.active_rollouts())
