"""Event sourcing: replaying the event log rebuilds exactly the live projections."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from shironzi.errors import ShironziError
from shironzi.tenancy import INDUSTRIES, MODULES, PLANS, Registry, TenantContext
from tests.shironzi.tenancy._fixtures import PROJECTIONS, snapshot


def _random_operations(registry: Registry, admin: TenantContext, *, steps: int, seed: int) -> dict[str, int]:
    """Drive the registry with a long random mix of valid and invalid commands."""
    rng = random.Random(seed)
    tenant_ids: list[str] = []
    prefixes: list[str] = []
    outcome = {"ok": 0, "refused": 0}
    for step in range(steps):
        op = rng.choice(
            [
                "provision",
                "provision",
                "plan",
                "enable",
                "enable",
                "disable",
                "disable",
                "suspend",
                "resume",
                "offboard",
                "delete",
                "issue",
                "issue",
                "revoke",
                "admin_key",
            ]
        )
        tid = rng.choice(tenant_ids) if tenant_ids else None
        actor = (
            TenantContext.for_tenant(tid, actor=f"user{step}", purpose="random")
            if tid and rng.random() < 0.3
            else admin
        )
        try:
            if op == "provision" or tid is None:
                tenant, key = registry.provision_tenant(
                    admin,
                    slug=f"rnd-{step}",
                    name=f"R{step}",
                    industry=rng.choice(INDUSTRIES),
                    plan=rng.choice(PLANS),
                    region=rng.choice(["eu-west", "us-east", "ap-south"]),
                )
                tenant_ids.append(tenant.id)
                prefixes.append(key.split("_")[1])
            elif op == "plan":
                registry.change_plan(admin, tid, rng.choice(PLANS))
            elif op == "enable":
                registry.enable_module(actor, tid, rng.choice(MODULES))
            elif op == "disable":
                registry.disable_module(actor, tid, rng.choice(MODULES))
            elif op == "suspend":
                registry.suspend(admin, tid, reason=rng.choice([None, "billing"]))
            elif op == "resume":
                registry.resume(admin, tid)
            elif op == "offboard":
                registry.offboard(admin, tid)
            elif op == "delete":
                registry.complete_offboarding(admin, tid)
            elif op == "issue":
                expires = (
                    datetime.now(UTC) + timedelta(days=rng.randint(1, 90)) if rng.random() < 0.5 else None
                )
                record, _ = registry.issue_key(
                    actor,
                    tid,
                    scopes=rng.sample(["read", "write", "admin"], 2),
                    expires_at=expires,
                    label=rng.choice([None, "ci"]),
                )
                prefixes.append(record.prefix)
            elif op == "revoke" and prefixes:
                registry.revoke_key(admin, rng.choice(prefixes))
            elif op == "admin_key":
                record, _ = registry.issue_key(admin, None, scopes=["admin"])
                prefixes.append(record.prefix)
            outcome["ok"] += 1
        except ShironziError:
            outcome["refused"] += 1
    return outcome


def test_replay_equals_live_state_after_random_operations(registry: Registry, admin: TenantContext) -> None:
    outcome = _random_operations(registry, admin, steps=250, seed=20240611)
    assert outcome["ok"] > 100 and outcome["refused"] > 10  # both paths were exercised
    live = snapshot(registry, PROJECTIONS)
    events_before = snapshot(registry)["tenant_events"]
    assert len(live["tenants"]) > 20 and len(live["api_keys"]) > len(live["tenants"])

    result = registry.rebuild(admin)
    assert snapshot(registry, PROJECTIONS) == live
    assert result.events == len(events_before) and result.tenants == len(live["tenants"])
    assert snapshot(registry)["tenant_events"] == events_before  # replay never touches the log


def test_rebuild_restores_wiped_projections(registry: Registry, admin: TenantContext) -> None:
    _random_operations(registry, admin, steps=60, seed=7)
    live = snapshot(registry, PROJECTIONS)
    with registry.engine.begin() as conn:
        for table in reversed(PROJECTIONS):
            conn.execute(sa.delete(table))
    assert all(not rows for rows in snapshot(registry, PROJECTIONS).values())
    registry.rebuild(admin)
    assert snapshot(registry, PROJECTIONS) == live
