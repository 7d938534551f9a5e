"""Real services for the tests, started on free ports in temporary directories.

A missing binary skips the test with its reason, unless SHIRONZI_REQUIRE_SERVICES=1
(CI sets it), in which case the test fails.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def services_required() -> bool:
    return os.environ.get("SHIRONZI_REQUIRE_SERVICES", "").strip().lower() in {"1", "true", "yes"}


def missing_service(reason: str) -> None:
    """Skip, or fail when CI demands every service."""
    if services_required():
        pytest.fail(f"required service unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def find_binary(name: str, extra_globs: tuple[str, ...] = ()) -> str | None:
    for pattern in extra_globs:
        hits = sorted(glob.glob(pattern), reverse=True)
        if hits:
            return hits[0]
    return shutil.which(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout: float = 30.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout}s")


@contextmanager
def running_api(env: dict[str, str], *, port: int, workers: int = 1, timeout: float = 90.0,
                log: Path | None = None) -> Iterator[int]:
    """`shironzi serve api` (real uvicorn) on `port` with `env` until the block ends; yields the port.
    Its output goes to `log` when given."""
    import sys

    cli = Path(sys.executable).with_name("shironzi")
    out = log.open("ab") if log is not None else None
    process = subprocess.Popen([str(cli), "serve", "api", "--port", str(port), "--workers", str(workers)],
                               env=env, stdout=out or subprocess.DEVNULL, stderr=subprocess.STDOUT if out
                               else subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=timeout)
        yield port
    finally:
        stop_process(process, timeout=20)
        if out is not None:
            out.close()


def _as_postgres_user() -> list[str]:
    """PostgreSQL refuses to run as root: drop to the `postgres` (or `nobody`) user via runuser."""
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    for user in ("postgres", "nobody"):
        try:
            import pwd

            pwd.getpwnam(user)
        except KeyError:
            continue
        if runuser:
            return [runuser, "-u", user, "--"]
    missing_service("running as root and no unprivileged user/runuser to start PostgreSQL")
    return []


@dataclass(frozen=True)
class PostgresCluster:
    """A running throwaway PostgreSQL cluster: its SQLAlchemy URL (psycopg 3) and how to restart it."""

    url: str
    pg_ctl: str
    data: Path
    opts: str
    log: Path
    prefix: tuple[str, ...] = ()

    def restart(self, *, down_seconds: float = 0.0) -> None:
        """Stop the server the hard way (every connection dies), wait `down_seconds`, start it again."""
        subprocess.run([*self.prefix, self.pg_ctl, "-D", str(self.data), "-m", "immediate", "stop"],
                       check=True, capture_output=True)
        time.sleep(down_seconds)
        self.start()

    def start(self) -> None:
        subprocess.run([*self.prefix, self.pg_ctl, "-D", str(self.data), "-o", self.opts, "-l", str(self.log),
                        "-w", "start"], check=True, capture_output=True)
        wait_for_port(int(self.url.rsplit(":", 1)[1].split("/")[0]))


@contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A throwaway PostgreSQL cluster in a temporary directory (see `PostgresCluster`)."""
    pg_globs = ("/usr/lib/postgresql/*/bin/pg_ctl",)
    pg_ctl = find_binary("pg_ctl", pg_globs)
    initdb = find_binary("initdb", ("/usr/lib/postgresql/*/bin/initdb",))
    if not pg_ctl or not initdb:
        missing_service("PostgreSQL server binaries (pg_ctl, initdb) not found; apt-get install postgresql")
    assert pg_ctl and initdb
    prefix = _as_postgres_user()
    # pytest's tmp dirs are private to root; the unprivileged server user needs its own readable root.
    base = Path(tempfile.mkdtemp(prefix="shironzi-pg-"))
    os.chmod(base, 0o755)
    data = base / "pgdata"
    sock = base / "pgsock"
    sock.mkdir(exist_ok=True)
    if prefix:
        import pwd

        user = prefix[2]
        ent = pwd.getpwnam(user)
        for p in (base, sock):
            os.chown(p, ent.pw_uid, ent.pw_gid)
    port = free_port()
    subprocess.run(
        [*prefix, initdb, "-D", str(data), "-U", "shironzi", "--auth=trust", "-E", "UTF8", "--no-sync"],
        check=True,
        capture_output=True,
    )
    opts = (
        f"-p {port} -k {sock} -c listen_addresses=127.0.0.1"
        " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    cluster = PostgresCluster(url=f"postgresql+psycopg://shironzi@127.0.0.1:{port}/postgres", pg_ctl=pg_ctl,
                              data=data, opts=opts, log=base / "pg.log", prefix=tuple(prefix))
    cluster.start()
    try:
        yield cluster
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster in a temporary directory; yields a SQLAlchemy URL (psycopg 3)."""
    with postgres_cluster() as cluster:
        yield cluster.url


@contextmanager
def redis_server(base: Path, *, port: int | None = None) -> Iterator[str]:
    """A throwaway redis-server on `port` (default: a free one); yields a redis:// URL. Chaos tests start a
    second one on the first's port to bring "the same" Redis back."""
    binary = find_binary("redis-server")
    if not binary:
        missing_service("redis-server not found; apt-get install redis-server")
    assert binary
    base.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(base),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@dataclass(frozen=True)
class S3Server:
    """A running S3-protocol server (moto's, an emulator) with its endpoint and credentials."""

    endpoint: str
    region: str = "us-east-1"
    access_key: str = "shironzi-test"
    secret_key: str = "shironzi-test-secret"

    def storage_options(self) -> dict[str, str]:
        """delta-rs/object_store options for this endpoint (SHIRONZI_STORAGE_OPTIONS)."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_REGION": self.region,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_ALLOW_HTTP": "true",
        }

    def client(self) -> Any:
        """A boto3 S3 client for assertions (listing objects, creating buckets)."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=self.region,
                            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key)

    def create_bucket(self, name: str) -> str:
        """Create `name` (idempotent); returns its s3:// URI."""
        client = self.client()
        existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
        if name not in existing:
            client.create_bucket(Bucket=name)
        return f"s3://{name}"


@contextmanager
def s3_server(base: Path) -> Iterator[S3Server]:
    """moto's S3/DynamoDB-protocol server as its own process on a free loopback port (never an in-process mock)."""
    import sys

    binary = Path(sys.executable).with_name("moto_server")
    if not binary.exists():
        missing_service("moto_server not found; the dev extra installs moto[server]")
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    log = (base / "moto.log").open("wb")
    proc = subprocess.Popen([str(binary), "-H", "127.0.0.1", "-p", str(port)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port)
        yield S3Server(endpoint=f"http://127.0.0.1:{port}")
    finally:
        stop_process(proc)
        log.close()


class _ProxyLoop:
    """The proxy itself (runs in its own process: a delta-rs call in the test process holds the GIL while it
    waits for the network, so a proxy thread there would never get to forward its request)."""

    def __init__(self, upstream_port: int, count_file: Path, host: str = "127.0.0.1") -> None:
        self.upstream = (host, upstream_port)
        self.listener = socket.create_server((host, 0))
        self.port = int(self.listener.getsockname()[1])
        self.count_file = count_file
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = False
        self.connections = 0
        self.refused = 0  # connections refused while cut: the clients did try the "dead" server

    def serve_forever(self) -> None:
        while True:
            client, _ = self.listener.accept()
            if self._cut:
                client.close()
                self.refused += 1
                (self.count_file.parent / "refused").write_text(str(self.refused))
                continue
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open.update((client, server))
                self.connections += 1
                self.count_file.write_text(str(self.connections))
            if self._cut:  # cut between the accept and the bookkeeping: the drop thread may have missed it
                self._drop(client)
                self._drop(server)
                continue
            for src, dst in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                self._drop(sock)

    def _drop(self, sock: socket.socket) -> None:
        with self._lock:
            self._open.discard(sock)
        with suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()

    def cut(self) -> None:
        """Runs in the SIGUSR1 handler, that is in the main thread between two of its bytecodes, possibly while
        `serve_forever` holds `_lock`: taking the lock here would deadlock the proxy for good (every later
        connection hangs in the backlog). The flag refuses new connections at once; a thread drops the open ones."""
        self._cut = True
        threading.Thread(target=self._drop_open, daemon=True).start()

    def _drop_open(self) -> None:
        with self._lock:
            open_now = list(self._open)
        for sock in open_now:
            self._drop(sock)

    def restore(self) -> None:
        self._cut = False


def run_fault_proxy(upstream_port: int, state_dir: str) -> None:
    """The fault proxy process: SIGUSR1 cuts, SIGUSR2 restores; its port and connection count go to files."""
    import signal

    base = Path(state_dir)
    loop = _ProxyLoop(upstream_port, base / "connections")
    signal.signal(signal.SIGUSR1, lambda *_: loop.cut())
    signal.signal(signal.SIGUSR2, lambda *_: loop.restore())
    (base / "port.tmp").write_text(str(loop.port))
    (base / "port.tmp").rename(base / "port")
    loop.serve_forever()


class FaultProxy:
    """A TCP proxy process on a free loopback port in front of `upstream_port`, for fault tests: `cut()` drops
    every open connection and refuses new ones (the server looks dead mid-request), `restore()` lets traffic
    through again. The server behind it keeps running (moto keeps its data in memory)."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        import sys

        self._dir = Path(tempfile.mkdtemp(prefix="shironzi-proxy-"))
        root = Path(__file__).resolve().parents[1]
        self._process = subprocess.Popen(
            [sys.executable, "-c", "import sys; from tests._services import run_fault_proxy; "
             "run_fault_proxy(int(sys.argv[1]), sys.argv[2])", str(upstream_port), str(self._dir)],
            cwd=root, start_new_session=True)
        deadline = time.monotonic() + 30
        while not (self._dir / "port").exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the fault proxy did not start")
            time.sleep(0.05)
        self.port = int((self._dir / "port").read_text())
        self.endpoint = f"http://{host}:{self.port}"

    @property
    def connections(self) -> int:
        """Connections proxied so far (tests cut once a run has started talking to the server)."""
        try:
            return int((self._dir / "connections").read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    @property
    def refused(self) -> int:
        """Connections refused while cut (a client tried the dead server, even if its own retries hid it)."""
        try:
            return int((self._dir / "refused").read_text() or 0)
        except (FileNotFoundError, ValueError):
            return 0

    def _signal(self, number: int) -> None:
        os.kill(self._process.pid, number)
        time.sleep(0.2)  # the handler runs between the proxy's accept calls

    def cut(self) -> None:
        """Drop every open connection and refuse new ones."""
        import signal

        self._signal(signal.SIGUSR1)

    def restore(self) -> None:
        import signal

        self._signal(signal.SIGUSR2)

    def close(self) -> None:
        stop_process(self._process)
        shutil.rmtree(self._dir, ignore_errors=True)


@contextmanager
def fault_proxy(upstream_port: int) -> Iterator[FaultProxy]:
    """A `FaultProxy` in front of a loopback server until the block ends."""
    proxy = FaultProxy(upstream_port)
    try:
        yield proxy
    finally:
        proxy.close()


@contextmanager
def proxied_broker(base: Path) -> Iterator[tuple[str, FaultProxy]]:
    """The bundled broker behind a `FaultProxy`: it advertises the proxy's port, so every client talks to it
    through the proxy and `cut()` is a broker outage that keeps its (in-memory) topics, as a restarted Kafka
    keeps its log. Yields (bootstrap through the proxy, proxy)."""
    from ingestion.stream.broker import running_broker

    port = free_port()
    with fault_proxy(port) as proxy, running_broker(base, port=port, advertised_port=proxy.port):
        yield f"127.0.0.1:{proxy.port}", proxy


@contextmanager
def server_process(command: list[str], *, env: dict[str, str], port: int, log: Path,
                   timeout: float = 90.0) -> Iterator[subprocess.Popen[bytes]]:
    """`command` as its own process (its output in `log`) until the block ends, once `port` listens."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + timeout
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"{command[0]} exited with {process.returncode}: {log.read_text()[-2000:]}")
                try:
                    wait_for_port(port, timeout=1.0)
                    break
                except TimeoutError:
                    if time.monotonic() > deadline:
                        raise
            yield process
        finally:
            stop_process_group(process)


def sail_server(port: int, log: Path, **env: str) -> Any:
    """A standalone Sail Spark Connect server on `port` for the block (`env`: its extra environment)."""
    import sys

    sail = str(Path(sys.executable).with_name("sail"))
    return server_process([sail, "spark", "server", "--ip", "127.0.0.1", "--port", str(port)],
                          env={"PATH": "/usr/bin:/bin", "RUST_LOG": "error", **env}, port=port, log=log)


@contextmanager
def serving_in_thread(server: Any, *, poll_interval: float = 0.5) -> Iterator[Any]:
    """Run an http.server-style `server` (serve_forever/shutdown) in a daemon thread for the block."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": poll_interval}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def stop_process(process: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """Terminate `process`, then kill it if it has not exited within `timeout` seconds."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """Terminate `process` and the workers it started (its own session), then kill what is left."""
    import signal

    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
