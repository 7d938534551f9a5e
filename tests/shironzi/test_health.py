"""/healthz of long-running processes: a real HTTP server answering from the process's heartbeat."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from shironzi.health import HealthServer, start_health_server


def _get(port: int, path: str = "/healthz") -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:  # noqa: S310
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_healthz_is_ok_while_the_process_beats_and_503_once_it_stalls() -> None:
    server = HealthServer(port=0, host="127.0.0.1", stale_after_s=0.3, name="ingest-stream").start()
    try:
        server.beat(state="consuming", flushes=3)
        status, body = _get(server.port)
        assert status == 200 and body["status"] == "ok"
        assert body["state"] == "consuming" and body["flushes"] == 3 and body["process"] == "ingest-stream"
        time.sleep(0.45)  # no beat for longer than stale_after_s: a hung loop
        status, body = _get(server.port)
        assert status == 503 and body["status"] == "stalled"
        server.beat(state="backing_off")  # waiting out an outage is progress, not a hang
        assert _get(server.port)[0] == 200
        status, body = _get(server.port, "/metrics")
        assert status == 404 and "error" in body
    finally:
        server.stop()


def test_no_port_no_server() -> None:
    assert start_health_server(None, stale_after_s=1.0, name="x") is None
