"""Run the API app under uvicorn: one process, or several worker processes that each listen on their own
`SO_REUSEPORT` socket (Linux).

Uvicorn's own `--workers` shares one listening socket, and the first worker to wake accepts every pending
connection: a client with a few keep-alive connections (a load balancer, a gateway, the benchmark) lands on
one worker while the others idle. With one socket per worker the kernel spreads connections across them.
The supervisor here restarts a worker that dies, forwards SIGINT/SIGTERM (uvicorn then shuts down
gracefully: the lifespan flushes the audit buffer), and gives up when workers keep failing at start.

Bytes that are not HTTP (e.g. what follows a body shorter than its Content-Length) never reach the app:
uvicorn's protocol answers them itself. `JsonErrorHttpToolsProtocol` makes that answer the API's one JSON
error shape; the connection is still closed, so a request in flight on it gets no answer (the stream can
no longer be trusted).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from shironzi.settings import get_settings

logger = logging.getLogger("shironzi.serving.server")

APP = "serving.app:app_from_env"
_QUICK_EXIT_SECONDS = 15.0
_MAX_QUICK_EXITS = 3


class JsonErrorHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol whose own 400 (a request it cannot parse) is the API's JSON error."""

    def send_400_response(self, msg: str) -> None:
        rid = uuid.uuid4().hex
        body = json.dumps(
            {"error": {"code": "bad_request", "message": f"malformed HTTP request: {msg}", "request_id": rid}}
        ).encode()
        head = [b"HTTP/1.1 400 Bad Request\r\n"]
        head += [name + b": " + value + b"\r\n" for name, value in self.server_state.default_headers]
        head += [
            b"content-type: application/json\r\n",
            b"content-length: " + str(len(body)).encode("ascii") + b"\r\n",
            b"x-request-id: " + rid.encode("ascii") + b"\r\n",
            b"connection: close\r\n\r\n",
        ]
        self.transport.write(b"".join(head) + body)
        self.transport.close()


def uvicorn_options(host: str, port: int, log_level: str) -> dict[str, Any]:
    """The uvicorn settings every worker uses (httptools + uvloop, no access log; uvicorn's own 400s in the
    JSON error shape)."""
    return {
        "factory": True,
        "host": host,
        "port": port,
        "log_level": log_level,
        "access_log": False,
        "loop": "uvloop",
        "http": JsonErrorHttpToolsProtocol,
    }


def reuse_port_supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def run_api(*, host: str, port: int, workers: int, log_level: str, app: str = APP) -> None:
    """Serve `app` (a uvicorn factory path) until SIGINT/SIGTERM."""
    import uvicorn

    options = uvicorn_options(host, port, log_level)
    if workers > 1:
        prepare_multiprocess_metrics(port)
    if workers <= 1 or not reuse_port_supported():
        uvicorn.run(app, workers=workers, **options)
        return
    _supervise(app, options, workers)


def prepare_multiprocess_metrics(port: int) -> Path:
    """Prometheus multiprocess mode for the workers about to start: PROMETHEUS_MULTIPROC_DIR (set, or one under
    home for this port) emptied of an earlier run's files and exported to the workers' environment, so each
    worker's `/metrics` sums every worker."""
    settings = get_settings()
    directory = settings.prometheus_multiproc_dir or settings.home / "prometheus" / f"api-{port}"
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)  # read by prometheus_client in each spawned worker
    get_settings.cache_clear()
    return directory


def _listen_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _exit_with_parent(parent: int) -> None:
    """A worker stops (gracefully) when its supervisor is gone, so no orphan keeps the port."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGTERM)
            return


def _worker(app: str, options: dict[str, Any], parent: int) -> None:  # pragma: no cover - child process
    import uvicorn

    threading.Thread(target=_exit_with_parent, args=(parent,), name="shironzi-parent-watch", daemon=True).start()
    config = uvicorn.Config(app, **options)
    uvicorn.Server(config).run(sockets=[_listen_socket(options["host"], options["port"])])


def _supervise(app: str, options: dict[str, Any], workers: int) -> None:
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start() -> tuple[Any, float]:
        process = context.Process(target=_worker, args=(app, options, os.getpid()), name="shironzi-api-worker")
        process.start()
        return process, time.monotonic()

    procs = [start() for _ in range(workers)]
    quick_exits = 0
    try:
        while not stop.wait(0.5):
            for i, (process, started) in enumerate(procs):
                if process.is_alive():
                    continue
                quick = time.monotonic() - started < _QUICK_EXIT_SECONDS
                quick_exits = quick_exits + 1 if quick else 0
                if quick_exits >= _MAX_QUICK_EXITS:
                    logger.error("API workers keep exiting at start (last exit code %s): stopping", process.exitcode)
                    raise SystemExit(3)
                logger.warning("API worker %s exited with %s: starting another", process.pid, process.exitcode)
                procs[i] = start()
    finally:
        for process, _ in procs:
            if process.is_alive():
                process.terminate()
        for process, _ in procs:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
