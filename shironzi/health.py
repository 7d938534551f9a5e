"""`/healthz` for long-running processes that are not the API (the stream ingestor), so that a Kubernetes
liveness probe restarts one that hangs, not only one that dies.

The process calls `beat()` from its main loop; `/healthz` answers 200 while the last beat is younger than
`stale_after_s`, else 503. A process that is alive but waiting out an outage (backing off from an
unreachable object store) keeps beating and reports its `state`: it is healthy, and a restart would not help.
The server is the standard library's, on a daemon thread: nothing to install, nothing to stop on exit.
"""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HEALTH_PATH = "/healthz"


class HealthServer:
    """A tiny HTTP server answering `GET /healthz` from the process's heartbeat."""

    def __init__(self, *, port: int, host: str = "0.0.0.0", stale_after_s: float = 120.0,  # noqa: S104 - probes
                 name: str = "shironzi") -> None:
        self.stale_after_s = stale_after_s
        self.name = name
        self._last_beat = time.monotonic()
        self._state: dict[str, Any] = {"state": "starting"}
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, name="shironzi-healthz", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def beat(self, **state: Any) -> None:
        """The process is making progress; `state` (e.g. `state="backing_off"`) is shown by /healthz."""
        with self._lock:
            self._last_beat = time.monotonic()
            if state:
                self._state = {**self._state, **state}

    def report(self) -> tuple[int, dict[str, Any]]:
        """The probe's answer: (HTTP status, JSON body)."""
        with self._lock:
            age = time.monotonic() - self._last_beat
            body = {"process": self.name, "seconds_since_beat": round(age, 3), **self._state}
        healthy = age <= self.stale_after_s
        body["status"] = "ok" if healthy else "stalled"
        return (200 if healthy else 503), body

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                if self.path.split("?", 1)[0] != HEALTH_PATH:
                    status, body = 404, {"error": {"code": "not_found", "message": f"only {HEALTH_PATH} is served"}}
                else:
                    status, body = health.report()
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - probes every few seconds: quiet
                return

        return Handler


def start_health_server(port: int | None, *, stale_after_s: float, name: str) -> HealthServer | None:
    """A started `HealthServer` on `port`, or None when no port is configured (local runs, tests)."""
    if port is None:
        return None
    return HealthServer(port=port, stale_after_s=stale_after_s, name=name).start()
