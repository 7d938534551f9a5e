"""Release channels in the registry: `channel_changed` events folded into `tenants.channel` (a replay rebuilds it),
one active rollout per model, routing invalidations, and bad input that changes nothing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa

from shironzi.errors import ConflictError, InvalidInputError, InvalidStateError, NotFoundError, PermissionDeniedError
from shironzi.tenancy import Registry, TenantContext
from shironzi.tenancy.channels import parse_channel
from shironzi.tenancy.invalidation import Invalidation, invalidation_of
from shironzi.tenancy.models import model_rollouts
from tests.shironzi.tenancy._fixtures import ALL_TABLES, snapshot

TABLES = (*ALL_TABLES, model_rollouts)


def _tenant(registry: Registry, admin: TenantContext, slug: str = "acme") -> str:
    tenant, _ = registry.provision_tenant(admin, slug=slug, name=slug.title(), industry="ecommerce", plan="standard")
    return tenant.id


def _rollout(rollout_id: str, model: str = "shironzi-churn") -> dict[str, Any]:
    now = datetime.now(UTC)
    return {"id": rollout_id, "model": model, "candidate": "3", "baseline": "2", "status": "running",
            "waves": [{"name": "canary", "kind": "canary", "percent": None, "state": "analysing"}],
            "created_at": now, "updated_at": now, "created_by": "test", "reason": None}


def test_parse_channel() -> None:
    assert str(parse_channel("stable")) == "stable" and str(parse_channel("canary")) == "canary"
    pinned = parse_channel("pinned:churn@3")
    assert (pinned.kind, pinned.model, pinned.version) == ("pinned", "churn", "3")
    for bad in ("", "beta", "pinned:churn", "pinned:churn@0", "pinned:@3", "pinned:Churn@3", "pinned:churn@x", 3):
        with pytest.raises(InvalidInputError, match="unknown channel"):
            parse_channel(bad)


def test_channel_changes_are_events_and_a_replay_rebuilds_them(registry: Registry, admin: TenantContext) -> None:
    tid = _tenant(registry, admin)
    assert registry.get_tenant(tid).channel == "stable" and registry.tenant_channels(fresh=True) == {}
    assert registry.set_channel(admin, tid, "canary").channel == "canary"
    checked: list[tuple[str, str]] = []
    tenant = registry.set_channel(admin, "acme", "pinned:churn@7", check_pin=lambda m, v: checked.append((m, v)))
    assert tenant.channel == "pinned:churn@7" and checked == [("churn", "7")]
    events = [e for e in registry.events(tid) if e.type == "channel_changed"]
    assert [(e.payload["from"], e.payload["to"]) for e in events] == [("stable", "canary"),
                                                                        ("canary", "pinned:churn@7")]
    assert registry.tenant_channels() == {tid: "pinned:churn@7"}
    before = snapshot(registry)
    registry.rebuild(admin)
    assert snapshot(registry) == before


def test_bad_channel_input_changes_nothing(registry: Registry, admin: TenantContext) -> None:
    tid = _tenant(registry, admin)
    registry.set_channel(admin, tid, "canary")
    before = snapshot(registry, TABLES)

    def unknown_version(model: str, version: str) -> None:
        raise NotFoundError(f"{model} has no version {version}")

    with pytest.raises(InvalidInputError, match="unknown channel"):
        registry.set_channel(admin, tid, "beta")
    with pytest.raises(NotFoundError, match="no version 99"):
        registry.set_channel(admin, tid, "pinned:churn@99", check_pin=unknown_version)
    with pytest.raises(NotFoundError, match="t_nope"):
        registry.set_channel(admin, "t_nope", "canary")
    with pytest.raises(InvalidStateError, match="already follows the canary channel"):
        registry.set_channel(admin, tid, "canary")
    with pytest.raises(PermissionDeniedError):
        registry.set_channel(TenantContext.for_tenant(tid, actor="t", purpose="t"), tid, "stable")
    registry.offboard(admin, tid)
    after_offboarding = snapshot(registry, TABLES)
    with pytest.raises(InvalidStateError, match="offboarding"):
        registry.set_channel(admin, tid, "stable")
    assert snapshot(registry, TABLES) == after_offboarding
    assert before["model_rollouts"] == after_offboarding["model_rollouts"]


def test_one_active_rollout_per_model_and_every_change_invalidates_routing(
    registry: Registry, admin: TenantContext,
) -> None:
    generation = registry.routing_generation
    registry.create_rollout(admin, _rollout("ro_1"))
    assert registry.routing_generation == generation + 1
    assert [r["id"] for r in registry.active_rollouts()] == ["ro_1"]
    before = snapshot(registry, TABLES)
    with pytest.raises(ConflictError, match="already has an active rollout 'ro_1'"):
        registry.create_rollout(admin, _rollout("ro_2"))
    assert snapshot(registry, TABLES) == before
    registry.create_rollout(admin, _rollout("ro_3", model="shironzi-trend"))  # another model: allowed

    def finish(row: dict[str, Any]) -> dict[str, Any]:
        return {"status": "completed"}

    done = registry.update_rollout(admin, "ro_1", finish)
    assert done["status"] == "completed" and done["active_model"] is None
    assert {r["id"] for r in registry.active_rollouts()} == {"ro_3"}  # the cache was dropped by the change
    registry.create_rollout(admin, _rollout("ro_4"))  # the model is free again
    with pytest.raises(NotFoundError, match="no rollout 'ro_x'"):
        registry.update_rollout(admin, "ro_x", finish)
    events = [e for e in registry.events() if e.type == "rollout_changed"]
    assert [e.payload["rollout"] for e in events] == ["ro_1", "ro_3", "ro_1", "ro_4"]
    assert all(e.tenant_id is None for e in events)
    with registry.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(model_rollouts)).scalar_one() == 3
    with pytest.raises(PermissionDeniedError):
        registry.create_rollout(TenantContext.for_tenant("t_x", actor="t", purpose="t"), _rollout("ro_5"))


def test_routing_events_make_a_routing_invalidation() -> None:
    from shironzi.tenancy.events import new_event

    change = invalidation_of([new_event("rollout_changed", tenant_id=None, actor="a", purpose="p", payload={})],
                             lambda _: None)
    assert change.routing and bool(change)
    assert Invalidation.from_json(change.to_json()) == change
    plain = invalidation_of([new_event("plan_changed", tenant_id="t_1", actor="a", purpose="p", payload={})],
                            lambda _: "acme")
    assert not plain.routing
