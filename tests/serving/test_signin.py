"""Failed sign-ins are throttled per key prefix and per client address (429 + Retry-After, in-process and
through Redis), and a flood of them is one durable audit event plus one aggregate per window."""

from __future__ import annotations

import json
import secrets
from typing import Any

import pytest
from fastapi.testclient import TestClient

from serving.app import create_app
from serving.signin import FAILURES_PER_ADDRESS, FAILURES_PER_PREFIX
from shironzi.audit.log import read_audit_events
from shironzi.settings import Settings
from shironzi.tenancy import TenantContext, get_registry
from tests.serving._fixtures import ApiWorld


def _wrong(prefix: str) -> dict[str, str]:
    return {"Authorization": f"Bearer shz_{prefix}_{secrets.token_urlsafe(24)[:32].replace('_', '-')}"}


def _auth_failures(actor: str) -> list[dict[str, Any]]:
    rows = read_audit_events(filters=[("action", "=", "api_auth_failed")], flush=False).to_pylist()
    return [r for r in rows if r["actor"] == actor]


def _settings(world: ApiWorld, backend: str, request: pytest.FixtureRequest) -> Settings:
    if backend == "memory":
        return world.settings
    return world.settings.model_copy(update={"redis_url": request.getfixturevalue("redis_url")})


def _forget_redis_buckets(settings: Settings) -> None:
    """Sign-in buckets outlive the test in the session's Redis: drop them so other tests start clean."""
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url)
        for key in client.scan_iter("shironzi:ratelimit:{signin:*"):
            client.delete(key)
        client.close()


@pytest.mark.integration
@pytest.mark.parametrize("backend", ["memory", "redis"])
def test_a_hundred_wrong_secrets_are_throttled_and_audited_once_per_window(
    world: ApiWorld, backend: str, request: pytest.FixtureRequest
) -> None:
    settings = _settings(world, backend, request)
    ctx = TenantContext.admin(actor="test", purpose="sign-in throttling")
    record, right_key = get_registry(settings).issue_key(ctx, world.tenant_a, scopes=["read"], label="flooded")
    prefix = record.prefix
    try:
        with TestClient(create_app(settings, load_model=False), raise_server_exceptions=False) as client:
            assert client.get("/v1/tenant", headers=world.auth("own")).status_code == 200  # cached as valid
            statuses = []
            for _ in range(100):
                response = client.get("/v1/tenant", headers=_wrong(prefix))
                statuses.append(response.status_code)
                if response.status_code == 429:
                    error = response.json()["error"]
                    assert set(response.json()) == {"error"} and error["code"] == "rate_limited"
                    assert int(response.headers["retry-after"]) >= 1
            # the bucket refills over the window (a token each 6 s): a slow machine may see one more 401
            assert statuses[: FAILURES_PER_PREFIX + 1] == [401] * FAILURES_PER_PREFIX + [429], statuses
            assert statuses.count(429) >= 100 - FAILURES_PER_PREFIX - 2, statuses
            # while the prefix is throttled even its right secret is refused (not checked), ...
            assert client.get("/v1/tenant", headers={"Authorization": f"Bearer {right_key}"}).status_code == 429
            # ... but a key cached as valid is no guess, and a client elsewhere is not throttled by this address
            assert client.get("/v1/tenant", headers=world.auth("own")).status_code == 200
            assert len(_auth_failures(f"key:{prefix}")) == 1, "each failure was written on its own"

            # other prefixes from the same address: the address has FAILURES_PER_ADDRESS guesses in all
            made_up = ["".join(secrets.choice("abcdefghijklmnopqrstuvwxyz234567") for _ in range(10))
                       for _ in range(40)]
            spread = [client.get("/v1/tenant", headers=_wrong(p)).status_code for p in made_up]
            left = FAILURES_PER_ADDRESS - statuses.count(401)
            first_429 = spread.index(429)  # the address bucket refills too (a token each 2 s)
            assert left <= first_429 <= left + 3 and spread.count(429) >= 40 - left - 6, spread
        elsewhere = TestClient(create_app(settings, load_model=False), client=("203.0.113.9", 4000))
        with elsewhere:
            fresh_prefix = elsewhere.get("/v1/tenant", headers=_wrong(made_up[-1]))
        assert fresh_prefix.status_code == 401
        rows = _auth_failures(f"key:{prefix}")  # the app closed: the window's aggregate is written
        assert len(rows) == 2, rows
        aggregate = json.loads(rows[-1]["details"])
        assert aggregate["aggregated"] is True and aggregate["failures"] == 100  # 101 failures, the first apart
        assert aggregate["codes"] == {"invalid_key": statuses.count(401) - 1, "rate_limited": statuses.count(429) + 1}
    finally:
        _forget_redis_buckets(settings)
