"""POST /v1/events above the plan's ingest quota: 429 with Retry-After in the one error shape, nothing produced,
other tenants unaffected; the bucket lives in the API's rate limiter (in-process, or one bucket in Redis)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.serving._fixtures import ApiWorld, build_world, isolated_home

pytestmark = pytest.mark.integration
# a token every 20 s: the refill while the test runs (a second app's first request connects its producer) is
# far below one token, so the fourth event is refused however slow the machine is
QUOTAS = {"enterprise": {"ingest_rate": 0.05, "ingest_burst": 3}, "standard": {"ingest_rate": 0.5}}


@pytest.fixture(scope="module")
def quota_world(tmp_path_factory: pytest.TempPathFactory, broker_bootstrap: str) -> Iterator[ApiWorld]:
    root = tmp_path_factory.mktemp("ingest-quota") / "home"
    with isolated_home(root, SHIRONZI_KAFKA_BOOTSTRAP=broker_bootstrap, SHIRONZI_INGEST_QUOTAS="1",
                       SHIRONZI_PLAN_QUOTAS=json.dumps(QUOTAS)) as settings:
        yield build_world(settings, expired_key=False, seed_tables=False)


def _event(event_id: str, **extra: Any) -> dict[str, Any]:
    return {"event_id": event_id, "customer_id": "c-9", "event_type": "session_started",
            "event_time": "2026-01-05T10:00:00Z", "properties": {"session_id": "s9", "device": "web"}, **extra}


def _produced_ids(bootstrap: str, topic: str) -> list[str]:
    from ingestion.stream import make_source, topic_partitions

    with make_source("confluent", bootstrap) as source:
        source.assign(topic, list(range(topic_partitions(bootstrap, topic))), start_offsets=None)
        ids: list[str] = []
        for _ in range(5):
            batch = source.poll_batch(max_records=1_000, timeout_s=0.5)
            ids.extend(json.loads(value)["event_id"] for value in batch.values)
    return sorted(ids)


@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_above_the_ingest_quota_answers_429_with_retry_after_and_produces_nothing(
    quota_world: ApiWorld, broker_bootstrap: str, backend: str, request: pytest.FixtureRequest
) -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app

    world, topic = quota_world, f"quota-events-{backend}"
    overrides: dict[str, Any] = {"api_events_topic": topic}
    if backend == "redis":  # two app instances draw on one bucket per tenant
        import redis

        overrides["redis_url"] = request.getfixturevalue("redis_url")
        redis.Redis.from_url(overrides["redis_url"]).flushdb()
    settings = world.settings.model_copy(update=overrides)
    apps = [TestClient(create_app(settings, load_model=False), raise_server_exceptions=False)
            for _ in range(2 if backend == "redis" else 1)]
    first, second = apps[0], apps[-1]
    with first, second:
        ok = first.post("/v1/events", json={"events": [_event("q-1"), _event("q-2")]}, headers=world.auth("own"))
        assert ok.status_code == 202 and ok.json()["accepted"] == 2
        last = second.post("/v1/events", json={"events": [_event("q-3")]}, headers=world.auth("own"))
        assert last.status_code == 202  # the last token of the burst of 3
        refused = first.post("/v1/events", json={"events": [_event("q-4")]}, headers=world.auth("own"))
        assert refused.status_code == 429, refused.text
        error = refused.json()["error"]
        assert error["code"] == "ingest_quota_exceeded" and "ingest quota" in error["message"] and error["request_id"]
        assert 1 <= int(refused.headers["retry-after"]) <= 20  # one token at 0.05 events/s, minus the refill so far
        other = second.post("/v1/events", json={"events": [_event("o-1", tenant_id=world.tenant_b)]},
                            headers=world.auth("other"))
        assert other.status_code == 202, other.text  # another tenant, another bucket
        assert first.get("/v1/tenant", headers=world.auth("own")).status_code == 200  # reads are not ingest
    assert _produced_ids(broker_bootstrap, topic) == ["o-1", "q-1", "q-2", "q-3"]
