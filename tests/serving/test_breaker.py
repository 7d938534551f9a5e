"""Circuit breakers and graceful degradation, against real backends stopped mid-test: a Redis online store
(the churn API serves batch scores with `X-Shironzi-Degraded`, then live again once Redis is back) and the
broker (POST /v1/events answers 503 with Retry-After, and every event answered 202 is on the topic)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from serving.breaker import DEGRADED_HEADER, CircuitBreaker
from tests._services import free_port, proxied_broker, redis_server
from tests.ingestion.stream._fixtures import require_broker_binary
from tests.serving._fixtures import SHARED_CUSTOMER, ApiWorld, TrainedModel, build_world, isolated_home

_ids = itertools.count()


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_n_failures_and_half_opens_for_one_trial() -> None:
    clock = _Clock()
    breaker = CircuitBreaker("online-store", failures=2, cooldown_s=5.0, clock=clock)
    assert breaker.allow() and breaker.state == "closed"
    breaker.failed()
    assert breaker.state == "closed" and breaker.allow()  # one failure is not an outage
    breaker.failed()
    assert breaker.state == "open" and not breaker.allow() and breaker.retry_after() == 5.0
    clock.now += 5.0
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # one trial at a time
    breaker.failed()  # the trial failed: open for another cool-down
    assert breaker.state == "open" and not breaker.allow()
    clock.now += 5.0
    assert breaker.allow()
    breaker.succeeded()
    assert breaker.state == "closed" and breaker.allow() and breaker.retry_after() == 0.0


@pytest.mark.integration
def test_online_store_down_serves_the_batch_score_degraded_then_live_again(
    tmp_path_factory: pytest.TempPathFactory, trained_model: TrainedModel
) -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app

    port = free_port()
    base = tmp_path_factory.mktemp("redis-online")
    with ExitStack() as redis_running:
        url = redis_running.enter_context(redis_server(base / "first", port=port))
        with isolated_home(tmp_path_factory.mktemp("api-breaker") / "home",
                           MLFLOW_TRACKING_URI=trained_model.tracking_uri, SHIRONZI_ONLINE_STORE_URL=url,
                           SHIRONZI_API_BREAKER_FAILURES="2", SHIRONZI_API_BREAKER_COOLDOWN_SECONDS="1") as s:
            world = build_world(s, expired_key=False)
            path = f"/v1/customers/{SHARED_CUSTOMER}/churn"
            with TestClient(create_app(world.settings), raise_server_exceptions=False) as client:
                live = client.get(path, headers=world.auth("own"))
                assert live.status_code == 200 and live.json()["source"] == "live"
                assert DEGRADED_HEADER not in live.headers

                redis_running.close()  # the online store dies
                answers = [client.get(path, headers=world.auth("own")) for _ in range(4)]
                batch = client.post("/v1/churn:batch", json={"customer_ids": [SHARED_CUSTOMER]},
                                    headers=world.auth("own"))
                metrics = client.get("/metrics").text

                with redis_server(base / "second", port=port):  # back, empty: the store answers again
                    from tests.serving._fixtures import seed_online

                    seed_online(world.settings, world.tenant_a, SHARED_CUSTOMER, 7731.25)
                    time.sleep(1.1)  # the cool-down: the next call is the half-open trial
                    again = client.get(path, headers=world.auth("own"))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        assert answer.headers[DEGRADED_HEADER] == "online-store"
        assert answer.json()["source"] == "batch" and answer.json()["churn_probability"] == 0.81
    assert batch.status_code == 200 and batch.headers[DEGRADED_HEADER] == "online-store"
    assert 'shironzi_api_degraded_total{dependency="online-store"} 5.0' in metrics
    assert 'shironzi_api_circuit_open{dependency="online-store"} 1.0' in metrics
    assert again.status_code == 200 and again.json()["source"] == "live", again.text
    assert DEGRADED_HEADER not in again.headers


@pytest.fixture(scope="module")
def proxied_broker_world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApiWorld, Any]]:
    """An API world (no model: intake needs none) whose broker sits behind a fault proxy."""
    require_broker_binary()
    with proxied_broker(tmp_path_factory.mktemp("broker")) as (bootstrap, proxy), isolated_home(
        tmp_path_factory.mktemp("api-kafka") / "home", SHIRONZI_KAFKA_BOOTSTRAP=bootstrap,
        SHIRONZI_API_BREAKER_FAILURES="1", SHIRONZI_API_BREAKER_COOLDOWN_SECONDS="2",
    ) as settings:
        yield build_world(settings, expired_key=False, seed_tables=False), proxy


def _events(n: int) -> list[dict[str, Any]]:
    return [{"event_id": f"chaos-{next(_ids)}", "customer_id": "c-1", "event_type": "session_started",
             "event_time": "2026-01-05T10:00:00Z", "properties": {"session_id": "s1", "device": "ios"}}
            for _ in range(n)]


def _topic_event_ids(bootstrap: str, topic: str) -> set[str]:
    import json

    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"t-{next(_ids)}", "log_level": 3,
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
        found: set[str] = set()
        idle = 0
        while idle < 3:
            got = [m for m in consumer.consume(num_messages=1000, timeout=0.5) if m.error() is None]
            found.update(json.loads(m.value())["event_id"] for m in got)
            idle = 0 if got else idle + 1
        return found
    finally:
        consumer.close()


@pytest.mark.integration
def test_broker_down_answers_503_with_retry_after_and_loses_no_accepted_event(
    proxied_broker_world: tuple[ApiWorld, Any], tmp_path: Path
) -> None:
    from fastapi.testclient import TestClient

    from serving.app import create_app

    world, proxy = proxied_broker_world
    accepted: list[str] = []
    with TestClient(create_app(world.settings, load_model=False), raise_server_exceptions=False) as client:
        def post() -> Any:
            body = {"events": _events(3)}
            response = client.post("/v1/events", json=body, headers=world.auth("own"))
            if response.status_code == 202:
                accepted.extend(e["event_id"] for e in body["events"])
            return response

        assert post().status_code == 202
        proxy.cut()
        try:
            first, second = post(), post()
        finally:
            proxy.restore()
        time.sleep(2.1)  # the cool-down; the next call is the trial and the broker answers again
        recovered = post()
    assert first.status_code == 503 and int(first.headers["Retry-After"]) >= 1, first.text
    assert first.json()["error"]["code"] == "service_unavailable"
    assert second.status_code == 503 and int(second.headers["Retry-After"]) >= 1  # refused at once: open
    assert recovered.status_code == 202, recovered.text
    assert len(accepted) == 6
    on_topic = _topic_event_ids(world.settings.kafka_bootstrap or "", world.settings.api_events_topic)
    assert set(accepted) <= on_topic  # every event answered 202 is on the broker
