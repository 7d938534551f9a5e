"""Fixtures of the serving tests: a session-wide trained churn champion, a module-wide API world (tenants,
keys, features, prediction tables) that serves it, and an in-process app over that world."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.serving.api_world import ApiWorld, build_world, isolated_home
from tests.serving.trained import TrainedModel, train_small_champion


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    """A small real lake and a promoted `shironzi-churn` champion (trained once per session)."""
    return train_small_champion(tmp_path_factory.mktemp("trained") / "home")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, trained_model: TrainedModel) -> Iterator[ApiWorld]:
    with isolated_home(tmp_path_factory.mktemp("api") / "home", MLFLOW_TRACKING_URI=trained_model.tracking_uri) as s:
        yield build_world(s)


@pytest.fixture(scope="module")
def client(world: ApiWorld) -> Iterator[Any]:
    """A TestClient over a fresh app (lifespan run, champion loaded)."""
    from fastapi.testclient import TestClient

    from serving.app import create_app

    app = create_app(world.settings)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client
