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
import time
from collections.abc import Iterator
from contextlib import contextmanager
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
def running_api(env: dict[str, str], *, port: int, workers: int = 1, timeout: float = 90.0) -> Iterator[int]:
    """`shironzi serve api` (real uvicorn) on `port` with `env` until the block ends; yields the port."""
    import sys

    cli = Path(sys.executable).with_name("shironzi")
    process = subprocess.Popen([str(cli), "serve", "api", "--port", str(port), "--workers", str(workers)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(port, timeout=timeout)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


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


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster in a temporary directory; yields a SQLAlchemy URL (psycopg 3)."""
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
    subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-o", opts, "-l", str(base / "pg.log"), "-w", "start"],
        check=True,
        capture_output=True,
    )
    try:
        wait_for_port(port)
        yield f"postgresql+psycopg://shironzi@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@contextmanager
def redis_server(base: Path) -> Iterator[str]:
    """A throwaway redis-server on a free port; yields a redis:// URL."""
    binary = find_binary("redis-server")
    if not binary:
        missing_service("redis-server not found; apt-get install redis-server")
    assert binary
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
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
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
