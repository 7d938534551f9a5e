"""Revocations made through the CLI (revoke a key, turn a module off, suspend or offboard a tenant) reach
two running API workers (real uvicorn processes) within 2 s, although both cached the old answers for a
60 s TTL: through Redis pub/sub when SHIRONZI_REDIS_URL is set, else through the polled event log."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from shironzi.tenancy import TenantContext, get_registry
from tests._services import free_port, running_api
from tests.serving._fixtures import ApiWorld, build_world, isolated_home

pytestmark = pytest.mark.integration
CLI = Path(sys.executable).with_name("shironzi")
PROPAGATION_LIMIT_SECONDS = 2.0


def _status(port: int, path: str, key: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Authorization": f"Bearer {key}"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@contextmanager
def _workers() -> Iterator[list[int]]:
    """Two API worker processes (one uvicorn each) on the same home, each on its own port."""
    with running_api(dict(os.environ), port=free_port()) as first, running_api(dict(os.environ),
                                                                               port=free_port()) as second:
        yield [first, second]


def _cli(*args: str) -> None:
    subprocess.run([str(CLI), *args], env=dict(os.environ), check=True, capture_output=True, timeout=120)


def _seconds_until(ports: list[int], path: str, key: str, status: int) -> float:
    """Seconds from now until every worker answers `status` (fails after 10 s)."""
    started = time.monotonic()
    pending = set(ports)
    while pending and time.monotonic() - started < 10:
        pending = {port for port in pending if _status(port, path, key) != status}
        if pending:
            time.sleep(0.05)
    assert not pending, f"workers on {sorted(pending)} still do not answer {status} for {path}"
    return time.monotonic() - started


@pytest.mark.parametrize("backend", ["poll", "redis"])
def test_cli_revocations_reach_two_running_workers_within_two_seconds(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    env = {"SHIRONZI_KEY_CACHE_TTL_SECONDS": "60", "SHIRONZI_MODULE_CACHE_TTL_SECONDS": "300"}
    if backend == "redis":
        env["SHIRONZI_REDIS_URL"] = request.getfixturevalue("redis_url")
    with isolated_home(tmp_path / "home", **env) as settings:
        world: ApiWorld = build_world(settings, expired_key=False)
        ctx = TenantContext.admin(actor="test", purpose="revocation propagation")
        doomed, doomed_key = get_registry(settings).issue_key(ctx, world.tenant_a, scopes=["read"], label="doomed")
        own, other = world.keys["own"], world.keys["other"]
        with _workers() as ports:
            for port in ports:  # every worker caches each answer (valid keys, module on)
                assert _status(port, "/v1/tenant", doomed_key) == 200
                assert _status(port, "/v1/tenant", other) == 200
                assert _status(port, "/v1/forecasts/revenue", own) == 200
            took: dict[str, float] = {}

            _cli("keys", "revoke", doomed.prefix)
            took["key revoked"] = _seconds_until(ports, "/v1/tenant", doomed_key, 401)
            _cli("modules", "disable", world.slug_a, "trend_forecast")
            took["module off"] = _seconds_until(ports, "/v1/forecasts/revenue", own, 403)
            _cli("tenants", "suspend", world.slug_b)
            took["tenant suspended"] = _seconds_until(ports, "/v1/tenant", other, 403)
            _cli("tenants", "offboard", world.slug_a)
            took["tenant offboarded"] = _seconds_until(ports, "/v1/tenant", own, 403)
    print(json.dumps({"backend": backend, **{k: round(v, 3) for k, v in took.items()}}))
    slow = {what: seconds for what, seconds in took.items() if seconds > PROPAGATION_LIMIT_SECONDS}
    assert not slow, f"{backend}: took longer than {PROPAGATION_LIMIT_SECONDS}s: {slow}"
