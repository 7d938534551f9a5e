"""`shironzi serve api --workers 2`: each worker listens on its own SO_REUSEPORT socket, so keep-alive
connections from one client spread over the workers, `/metrics` sums every worker (Prometheus multiprocess mode),
and SIGTERM stops the supervisor and every worker."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from serving.server import reuse_port_supported

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not reuse_port_supported(), reason="Linux SO_REUSEPORT")]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/healthz")
        ok = conn.getresponse().status == 200
        conn.close()
        return ok
    except OSError:
        return False


def _healthz_count(exposition: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    return sum(s.value for f in text_string_to_metric_families(exposition) for s in f.samples
               if s.name == "shironzi_api_requests_total" and s.labels.get("route") == "/healthz"
               and s.labels.get("status") == "200")


def test_two_workers_share_keep_alive_connections_and_stop_on_sigterm(home: Path) -> None:
    import psutil

    port = _free_port()
    cli = Path(sys.executable).with_name("shironzi")
    server = subprocess.Popen([str(cli), "serve", "api", "--port", str(port), "--workers", "2"],
                              env={**os.environ, "SHIRONZI_HOME": str(home)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        supervisor = psutil.Process(server.pid)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            listening = {p.pid for p in supervisor.children()
                         if any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in p.net_connections())}
            if len(listening) == 2 and _healthy(port):
                break
            assert server.poll() is None, "the server exited during start-up"
            time.sleep(0.5)
        else:
            pytest.fail("two listening workers did not come up")

        connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(16)]
        for conn in connections:
            conn.request("GET", "/healthz")
            response = conn.getresponse()
            assert response.status == 200 and response.read()
        local_ports = {conn.sock.getsockname()[1] for conn in connections}
        owners = {pid for pid in listening for c in psutil.Process(pid).net_connections()
                  if c.status == psutil.CONN_ESTABLISHED and c.raddr and c.raddr.port in local_ports}
        assert owners == listening, "every worker should hold some of the 16 keep-alive connections"
        # Prometheus multiprocess mode: whichever worker answers /metrics counts every worker's requests (the 16
        # above and the one successful start-up probe).
        counts = set()
        for conn in connections:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            counts.add(_healthz_count(response.read().decode()))
        assert counts == {17.0}, f"/metrics differs between workers: {counts}"
        for conn in connections:
            conn.close()

        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=60) == 0
        gone, alive = psutil.wait_procs([psutil.Process(pid) for pid in listening if psutil.pid_exists(pid)],
                                        timeout=30)
        assert not alive, f"workers left behind: {[p.pid for p in alive]}"
    finally:
        if server.poll() is None:
            server.kill()
