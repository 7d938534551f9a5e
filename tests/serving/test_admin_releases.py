"""Release channels and rollouts through the admin API: a tenant put on `canary` is served a started rollout's
candidate by the live churn route at once and the baseline again after a rollback; bad input answers in the one
error shape and changes nothing; tenant keys are refused."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.models._fixtures import register_shifted_version
from tests.serving._fixtures import A_ONLY_CUSTOMER, B_ONLY_CUSTOMER, ApiWorld, TrainedModel, build_world, isolated_home

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def releases_world(tmp_path_factory: pytest.TempPathFactory, trained_model: TrainedModel) -> Iterator[ApiWorld]:
    """An API world on a private copy of the trained registry (this module registers versions and moves aliases),
    with a second churn version: the champion's trees and calibration registered again."""
    own = trained_model.copy_registry(tmp_path_factory.mktemp("releases-registry"))
    with isolated_home(tmp_path_factory.mktemp("releases") / "home", MLFLOW_TRACKING_URI=own) as settings:
        world = build_world(settings, expired_key=False, seed_tables=False)
        world.keys["candidate"] = register_shifted_version(settings, trained_model.version, shift=0.0)
        yield world


@pytest.fixture(scope="module")
def api(releases_world: ApiWorld) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from serving.app import create_app

    with TestClient(create_app(releases_world.settings), raise_server_exceptions=False) as client:
        yield client


def _state(world: ApiWorld) -> tuple[list[Any], list[Any]]:
    from shironzi.tenancy import get_registry

    registry = get_registry(world.settings)
    return [(t.id, t.channel) for t in registry.list_tenants(limit=100)[0]], registry.rollouts()


def _served(api: Any, world: ApiWorld, key: str, customer: str) -> str:
    response = api.get(f"/v1/customers/{customer}/churn", headers=world.auth(key))
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


def test_a_canary_tenant_follows_a_rollout_and_back(api: Any, releases_world: ApiWorld,
                                                     trained_model: TrainedModel) -> None:
    world, admin = releases_world, releases_world.auth("admin")
    candidate = world.keys["candidate"]
    response = api.put(f"/v1/admin/tenants/{world.slug_a}/channel", json={"channel": "canary"}, headers=admin)
    assert response.status_code == 200 and response.json()["channel"] == "canary"
    started = api.post("/v1/admin/releases", json={"model": "churn", "version": candidate}, headers=admin)
    assert started.status_code == 201, started.text
    rollout = started.json()
    assert (rollout["baseline"], rollout["candidate"], rollout["status"]) == (trained_model.version, candidate,
                                                                              "running")
    assert [w["name"] for w in rollout["waves"]] == ["canary", "10%", "50%", "100%"]
    assert _served(api, world, "own", A_ONLY_CUSTOMER) == candidate  # the canary tenant, at once
    assert _served(api, world, "other", B_ONLY_CUSTOMER) == trained_model.version  # a stable tenant

    rid = rollout["id"]
    assert api.get("/v1/admin/releases", headers=admin).json()["items"][0]["id"] == rid
    assert api.post(f"/v1/admin/releases/{rid}/pause", headers=admin).json()["status"] == "paused"
    assert _served(api, world, "own", A_ONLY_CUSTOMER) == candidate  # a pause holds the exposure
    assert api.post(f"/v1/admin/releases/{rid}/resume", headers=admin).json()["status"] == "running"
    back = api.post(f"/v1/admin/releases/{rid}/rollback", json={"reason": "test"}, headers=admin)
    assert back.status_code == 200 and back.json()["status"] == "rolled_back"
    assert back.json()["waves"][0]["state"] == "rolled_back"
    assert _served(api, world, "own", A_ONLY_CUSTOMER) == trained_model.version
    assert api.get(f"/v1/admin/releases/{rid}", headers=admin).json()["reason"] == "test"


def test_bad_release_input_is_refused_in_the_error_shape_and_changes_nothing(
    api: Any, releases_world: ApiWorld, trained_model: TrainedModel,
) -> None:
    world, admin = releases_world, releases_world.auth("admin")
    before = _state(world)
    cases = [
        ("put", f"/v1/admin/tenants/{world.slug_b}/channel", {"channel": "beta"}, 422, "unknown channel"),
        ("put", f"/v1/admin/tenants/{world.slug_b}/channel", {"channel": "pinned:churn@99"}, 404, "no version 99"),
        ("put", "/v1/admin/tenants/t_nobody/channel", {"channel": "canary"}, 404, "t_nobody"),
        ("post", "/v1/admin/releases", {"model": "churn", "version": "99"}, 404, "no version 99"),
        ("post", "/v1/admin/releases", {"model": "churn", "version": trained_model.version}, 409,
         "already the champion"),
        ("post", "/v1/admin/releases", {"model": "churn", "version": world.keys["candidate"], "waves": ["50", "10"]},
         422, "rise"),
        ("post", "/v1/admin/releases", {"model": "fraud", "version": "2"}, 422, ""),
        ("post", "/v1/admin/releases/ro_0123456789abcdef/pause", None, 404, "no rollout"),
        ("get", "/v1/admin/releases/churn", None, 404, "no rollout 'churn'"),
    ]
    for method, path, body, status, message in cases:
        response = getattr(api, method)(path, headers=admin, **({"json": body} if body is not None else {}))
        assert response.status_code == status, (path, body, response.text)
        error = response.json()["error"]
        assert set(error) >= {"code", "message", "request_id"} and message in error["message"], (path, error)
    rid = api.post("/v1/admin/releases", json={"model": "churn", "version": world.keys["candidate"]},
                   headers=admin).json()["id"]
    during = _state(world)
    again = api.post("/v1/admin/releases", json={"model": "churn", "version": world.keys["candidate"]}, headers=admin)
    assert again.status_code == 409 and "already has an active rollout" in again.json()["error"]["message"]
    assert _state(world) == during
    api.post(f"/v1/admin/releases/{rid}/rollback", json={"reason": "done"}, headers=admin)
    refused = api.post(f"/v1/admin/releases/{rid}/pause", headers=admin)
    assert refused.status_code == 409 and "rolled_back" in refused.json()["error"]["message"]
    assert _state(world)[0] == before[0]
    for key in ("own", "read_only"):
        assert api.get("/v1/admin/releases", headers=world.auth(key)).status_code == 403
        assert api.put(f"/v1/admin/tenants/{world.slug_a}/channel", json={"channel": "canary"},
                       headers=world.auth(key)).status_code == 403
