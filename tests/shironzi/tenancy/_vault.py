"""A local HTTP server speaking the few HashiCorp Vault KV v2 endpoints hvac calls, recording every request.

No Vault server can be installed on this machine, so the tests run the real hvac client over real HTTP
against this one: reads and writes of versioned secrets with check-and-set, destroying versions, deleting
metadata, and the token check. It holds what Vault would answer, nothing more.
"""

from __future__ import annotations

import datetime as dt
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests._services import serving_in_thread

TOKEN = "s.test-token"


@dataclass
class Request:
    method: str
    path: str
    body: Any


@dataclass
class FakeKv:
    """Secrets of one mount: path -> list of versions (None once destroyed), as Vault keeps them."""

    mount: str
    secrets: dict[str, list[dict[str, Any] | None]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    hidden_once: set[str] = field(default_factory=set)  # paths read as missing once: a racing creator's window
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handle(self, method: str, url: str, body: Any, token: str | None) -> tuple[int, Any]:
        parsed = urlparse(url)
        with self.lock:
            self.requests.append(Request(method, parsed.path, body))
            if token != TOKEN:
                return 403, {"errors": ["permission denied"]}
            prefix = f"/v1/{self.mount}/"
            if not parsed.path.startswith(prefix):
                return 404, {"errors": [f"no handler for route {parsed.path!r}"]}
            kind, _, path = parsed.path[len(prefix):].partition("/")
            versions = self.secrets.get(path)
            if kind == "data" and method == "GET" and path in self.hidden_once:
                self.hidden_once.discard(path)
                return 404, {"errors": []}
            if kind == "data" and method == "GET":
                wanted = parse_qs(parsed.query).get("version")
                if not versions:
                    return 404, {"errors": []}
                number = int(wanted[0]) if wanted else len(versions)
                data = versions[number - 1]
                if data is None:
                    return 404, {"errors": []}
                return 200, {"data": {"data": data, "metadata": {"version": number, "destroyed": False,
                                                                   "deletion_time": "", "created_time": _now()}}}
            if kind == "data" and method in ("POST", "PUT"):
                cas = (body.get("options") or {}).get("cas")
                current = len(versions or [])
                if cas is not None and cas != current:
                    return 400, {"errors": ["check-and-set parameter did not match the current version"]}
                self.secrets.setdefault(path, []).append(body["data"])
                return 200, {"data": {"version": current + 1, "created_time": _now(), "destroyed": False}}
            if kind == "destroy" and method in ("POST", "PUT"):
                for number in body["versions"]:
                    if versions and 0 < number <= len(versions):
                        versions[number - 1] = None
                return 204, None
            if kind == "metadata" and method == "DELETE":
                self.secrets.pop(path, None)
                return 204, None
            return 405, {"errors": [f"{method} {parsed.path} is not supported here"]}

    def live_values(self) -> list[dict[str, Any]]:
        """Every secret version Vault still holds."""
        return [v for versions in self.secrets.values() for v in versions if v is not None]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


@contextmanager
def vault_server(mount: str = "kv") -> Iterator[tuple[str, FakeKv]]:
    """(`http://127.0.0.1:PORT`, the server's state) for the block."""
    kv = FakeKv(mount)

    class Handler(BaseHTTPRequestHandler):
        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = json.loads(self.rfile.read(length)) if length else None
            status, payload = kv.handle(self.command, self.path, body, self.headers.get("X-Vault-Token"))
            data = b"" if payload is None else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PUT = do_DELETE = _serve

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    with serving_in_thread(server):
        yield f"http://127.0.0.1:{server.server_address[1]}", kv
