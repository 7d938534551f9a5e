"""Fixtures of the serving tests: a session-wide trained churn champion, a module-wide API world (tenants,
keys, features, prediction tables) that serves it, and an in-process app over that world."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.serving._fixtures import ApiWorld, TrainedModel, build_world, isolated_home, train_small_champion


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


@pytest.fixture(scope="module")
def broker_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A private bundled Kafka-protocol broker (real tansu) for this module."""
    from tests.ingestion.stream._fixtures import require_broker_binary

    require_broker_binary()
    from ingestion.stream.broker import running_broker

    with running_broker(tmp_path_factory.mktemp("broker")) as info:
        yield info.bootstrap


@pytest.fixture(scope="module")
def broker_world(
    tmp_path_factory: pytest.TempPathFactory, trained_model: TrainedModel, broker_bootstrap: str
) -> Iterator[ApiWorld]:
    """The API world with event intake going to the module's broker."""
    root = tmp_path_factory.mktemp("api-broker") / "home"
    with isolated_home(root, MLFLOW_TRACKING_URI=trained_model.tracking_uri,
                       SHIRONZI_KAFKA_BOOTSTRAP=broker_bootstrap) as settings:
        yield build_world(settings)
