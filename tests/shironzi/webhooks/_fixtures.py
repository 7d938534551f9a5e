"""A real HTTP webhook receiver for the tests: a ThreadingHTTPServer on a free loopback port that records
every request, answers with the statuses it is told (then 200), and checks signatures when given a secret."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from shironzi.errors import IntegrityCheckError
from shironzi.webhooks.signing import SIGNATURE_HEADER, verify_signature
from tests._services import serving_in_thread


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    signature_ok: bool | None  # None: the receiver checks no signature


@dataclass
class Receiver:
    url: str
    failures: list[int] = field(default_factory=list)  # statuses answered first, one per request
    secret: str | None = None
    requests: list[Received] = field(default_factory=list)


@contextmanager
def webhook_receiver(*, failures: list[int] | None = None, secret: str | None = None) -> Iterator[Receiver]:
    state = Receiver(url="", failures=list(failures or []), secret=secret)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - the http.server hook
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            ok: bool | None = None
            if state.secret is not None:
                try:
                    verify_signature(self.headers.get(SIGNATURE_HEADER, ""), body, state.secret)
                    ok = True
                except IntegrityCheckError:
                    ok = False
            with lock:
                state.requests.append(Received(self.path, dict(self.headers.items()), body, ok))
                status = state.failures.pop(0) if state.failures else (401 if ok is False else 200)
            self.send_response(status)
            self.end_headers()
            self.wfile.write(b"ok" if status == 200 else b"no")

        def log_message(self, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    with serving_in_thread(server):
        yield state
