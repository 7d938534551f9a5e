"""API request counting: route groups, and a flush to a real Redis (shared by workers) or to the lake when Redis
is unreachable, both read back by the metering job."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from shironzi.settings import get_settings


def test_route_groups() -> None:
    from shironzi.metering.api_requests import route_group

    assert route_group("/v1/churn/{customer_id}") == "churn"
    assert route_group("/v1/tenant/modules/{module}") == "tenant"
    assert route_group("/v1/events") == "events"
    assert route_group("/healthz") == "other"


@pytest.mark.integration
def test_two_workers_flush_to_redis_and_the_job_reads_one_sum(
    home: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import redis

    from shironzi.metering.api_requests import ApiUsageCounter, read_api_requests, redis_key

    monkeypatch.setenv("SHIRONZI_REDIS_URL", redis_url)
    get_settings.cache_clear()
    settings = get_settings()
    today = datetime.now(UTC).date()
    redis.Redis.from_url(redis_url).delete(redis_key(today))
    workers = [ApiUsageCounter(settings), ApiUsageCounter(settings)]
    for i, worker in enumerate(workers):
        for _ in range(5 + i):
            worker.count("t_one", "/v1/features/{customer_id}")
        worker.count("t_two", "/v1/forecasts")
        worker.close()
    counts = {(r["tenant_id"], r["route_group"]): r["requests"] for r in read_api_requests(today, settings).to_dicts()}
    assert counts == {("t_one", "features"): 11, ("t_two", "forecasts"): 2}
    assert not (home / "lake" / "_platform" / "metering" / "api_requests").exists()  # nothing went to the lake


def test_with_redis_down_the_counts_go_to_the_lake(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shironzi.metering.api_requests import ApiUsageCounter, api_requests_uri, read_api_requests

    monkeypatch.setenv("SHIRONZI_REDIS_URL", "redis://127.0.0.1:1/0")  # nothing listens there
    get_settings.cache_clear()
    settings = get_settings()
    counter = ApiUsageCounter(settings)
    for _ in range(4):
        counter.count("t_one", "/v1/churn/{customer_id}")
    assert counter.flush() == 4
    from shironzi.lake import read_polars

    assert read_polars(api_requests_uri(settings))["requests"].sum() == 4
    monkeypatch.delenv("SHIRONZI_REDIS_URL")
    get_settings.cache_clear()
    counts = read_api_requests(datetime.now(UTC).date(), get_settings())
    assert counts.to_dicts() == [{"tenant_id": "t_one", "route_group": "churn", "requests": 4}]
