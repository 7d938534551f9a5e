"""Per-tenant token buckets by plan: 429 with Retry-After in-process, and one shared bucket across two
app instances through a real Redis."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.serving._fixtures import ApiWorld, build_world, isolated_home

LIMITS = {"free": 1.0, "standard": 2.0, "enterprise": 2.0}  # burst = 2 s of rate


@pytest.fixture(scope="module")
def limited_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiWorld]:
    root = tmp_path_factory.mktemp("limits") / "home"
    with isolated_home(root, SHIRONZI_API_RATE_LIMITS=json.dumps(LIMITS)) as settings:
        yield build_world(settings, expired_key=False, seed_tables=False)


def _clients(world: ApiWorld, count: int, **overrides: Any) -> list[Any]:
    from fastapi.testclient import TestClient

    from serving.app import create_app

    settings = world.settings.model_copy(update=overrides)
    return [TestClient(create_app(settings, load_model=False), raise_server_exceptions=False) for _ in range(count)]


def test_in_process_bucket_answers_429_with_retry_after(limited_world: ApiWorld) -> None:
    (client,) = _clients(limited_world, 1)
    with client:
        statuses = [client.get("/v1/tenant", headers=limited_world.auth("own")) for _ in range(6)]
        codes = [r.status_code for r in statuses]
        assert codes[:4] == [200] * 4 and codes[4:] == [429, 429], codes
        refused = statuses[-1]
        assert refused.json()["error"]["code"] == "rate_limited"
        assert int(refused.headers["retry-after"]) >= 1
        other = client.get("/v1/tenant", headers=limited_world.auth("other"))
        assert other.status_code == 200  # buckets are per tenant
        time.sleep(0.6)  # 2 tokens/s: one is back
        assert client.get("/v1/tenant", headers=limited_world.auth("own")).status_code == 200
        metrics = client.get("/metrics").text
        assert 'shironzi_api_rate_limited_total{plan="enterprise"} 2.0' in metrics


def test_two_instances_without_redis_each_have_their_own_bucket(limited_world: ApiWorld) -> None:
    first, second = _clients(limited_world, 2)
    with first, second:
        codes = [c.get("/v1/tenant", headers=limited_world.auth("other")).status_code
                 for _ in range(4) for c in (first, second)]
    assert codes.count(200) == 8


@pytest.mark.integration
def test_redis_shares_one_bucket_across_two_instances(limited_world: ApiWorld, redis_url: str) -> None:
    import redis

    redis.Redis.from_url(redis_url).flushdb()
    first, second = _clients(limited_world, 2, redis_url=redis_url)
    with first, second:
        responses = [c.get("/v1/tenant", headers=limited_world.auth("other"))
                     for _ in range(4) for c in (first, second)]
        codes = [r.status_code for r in responses]
        assert codes.count(200) == 4 and codes.count(429) == 4, codes
        assert all(int(r.headers["retry-after"]) >= 1 for r in responses if r.status_code == 429)
        time.sleep(0.6)
        profile = second.get("/v1/tenant", headers=limited_world.auth("other"))
        assert profile.status_code == 200
        assert profile.json()["usage"]["requests_today"] == 9  # counted in Redis across both instances
        ready = first.get("/readyz").json()
        assert ready["checks"]["rate_limit_store"] == "ok"


@pytest.mark.integration
def test_redis_stopping_falls_back_to_in_process_limits_with_a_warning(
    limited_world: ApiWorld, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    from contextlib import ExitStack

    from tests._services import redis_server

    with ExitStack() as redis_running:
        url = redis_running.enter_context(redis_server(tmp_path / "redis"))
        port = url.rsplit(":", 1)[1].split("/")[0]
        # 0.1 request/s: one token, back after 10 s, so a slow request on a busy machine refills nothing
        slow = {plan: 0.1 for plan in LIMITS}
        (client,) = _clients(limited_world, 1, redis_url=url, api_rate_limits=slow)
        with client, caplog.at_level("WARNING", logger="shironzi.serving"):
            assert client.get("/v1/tenant", headers=limited_world.auth("own")).status_code == 200
            redis_running.close()  # Redis stops; the app keeps running
            codes = [client.get("/v1/tenant", headers=limited_world.auth("own")).status_code for _ in range(6)]
            ready = client.get("/readyz").json()
    # The in-process bucket decides now: its one token passes, then 429, never a 503.
    assert codes == [200] + [429] * 5, codes
    warnings = [r.getMessage() for r in caplog.records if "falling back to in-process" in r.getMessage()]
    assert len(warnings) == 1, caplog.text  # one warning per outage, not one per request
    assert f"127.0.0.1:{port}" in warnings[0]
    assert ready["checks"]["rate_limit_store"].startswith("ok: degraded"), ready
