"""`shironzi serve api` under real uvicorn with 2 workers: when the champion alias moves (a real promotion),
the next requests use the new version within the refresh interval, with no restart and no failed request;
an admin rollback through the API moves every worker back."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator

import pytest

from tests._services import free_port, running_api
from tests.serving._fixtures import CHURN, SHARED_CUSTOMER, ApiWorld, TrainedModel, build_world, isolated_home

pytestmark = [pytest.mark.integration, pytest.mark.slow]
REFRESH_SECONDS = 1.0


@pytest.fixture(scope="module")
def own_registry(tmp_path_factory: pytest.TempPathFactory, trained_model: TrainedModel) -> str:
    """A private copy of the trained registry: this module moves its aliases."""
    return trained_model.copy_registry(tmp_path_factory.mktemp("registry-copy"))


@pytest.fixture(scope="module")
def reload_world(tmp_path_factory: pytest.TempPathFactory, own_registry: str) -> Iterator[ApiWorld]:
    with isolated_home(tmp_path_factory.mktemp("reload") / "home", MLFLOW_TRACKING_URI=own_registry) as settings:
        yield build_world(settings, expired_key=False, seed_tables=False)


@pytest.fixture(scope="module")
def server(reload_world: ApiWorld, own_registry: str) -> Iterator[str]:
    env = {**os.environ, "SHIRONZI_HOME": str(reload_world.home), "MLFLOW_TRACKING_URI": own_registry,
           "SHIRONZI_API_MODEL_REFRESH_SECONDS": str(REFRESH_SECONDS)}
    with running_api(env, port=free_port(), workers=2, timeout=60) as port:
        yield f"http://127.0.0.1:{port}"


def _versions_until(base: str, headers: dict[str, str], stop: threading.Event, seen: list[tuple[int, str]]) -> None:
    import httpx

    # No keep-alive: every request is a new connection, so both workers answer.
    limits = httpx.Limits(max_keepalive_connections=0)
    with httpx.Client(base_url=base, headers=headers, timeout=10, limits=limits) as client:
        while not stop.is_set():
            response = client.get(f"/v1/customers/{SHARED_CUSTOMER}/churn")
            seen.append((response.status_code, response.json().get("model_version", response.text)))


def _wait_for(seen: list[tuple[int, str]], version: str, timeout: float) -> float:
    """Seconds until the last 20 answers all came from `version` (both workers switched)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        tail = seen[-20:]
        if len(tail) == 20 and all(v == version for _, v in tail):
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError(f"still not serving version {version} after {timeout}s: {seen[-5:]}")


def test_champion_moves_are_followed_without_restart_or_failures(
    server: str, reload_world: ApiWorld, trained_model: TrainedModel, own_registry: str
) -> None:
    import httpx

    from models.registry import promote_if_better
    from models.tracking import configure_mlflow
    from shironzi.settings import Settings

    ready = httpx.get(f"{server}/readyz", timeout=30)
    assert ready.status_code == 200, ready.text
    seen: list[tuple[int, str]] = []
    stop = threading.Event()
    loader = threading.Thread(target=_versions_until, args=(server, reload_world.auth("own"), stop, seen))
    loader.start()
    try:
        _wait_for(seen, trained_model.version, timeout=30)
        # A real promotion on the trained lake: version 2 (same run) becomes the challenger, then champion.
        registry_settings = Settings(home=trained_model.home, mlflow_tracking_uri=own_registry)
        client = configure_mlflow(registry_settings)
        v1 = client.get_model_version(CHURN, trained_model.version)
        v2 = client.create_model_version(CHURN, v1.source, run_id=v1.run_id, tags=v1.tags)
        client.set_registered_model_alias(CHURN, "challenger", v2.version)
        decision = promote_if_better(CHURN, margin=0.0, settings=registry_settings)
        assert decision.promoted and decision.champion_version == str(v2.version), decision
        assert _wait_for(seen, str(v2.version), timeout=30) < 30

        rolled = httpx.post(f"{server}/v1/admin/models/{CHURN}/rollback", headers=reload_world.auth("admin"),
                            timeout=60)
        assert rolled.status_code == 200, rolled.text
        assert rolled.json()["aliases"]["champion"] == trained_model.version
        _wait_for(seen, trained_model.version, timeout=30)
    finally:
        stop.set()
        loader.join(timeout=30)
    failed = [entry for entry in seen if entry[0] != 200]
    assert not failed, failed[:5]
    assert len(seen) > 50
    aliases = httpx.get(f"{server}/v1/admin/models/{CHURN}/aliases", headers=reload_world.auth("admin")).json()
    assert aliases["aliases"]["champion"] == trained_model.version
