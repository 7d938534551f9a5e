"""Shared fixtures: an isolated SHIRONZI_HOME per test and real services on free ports."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shironzi.settings import Settings, get_settings
from shironzi.spark_sessions import drop_unreachable_sessions
from tests._services import S3Server, postgres_server, redis_server, s3_server

pytest_plugins = ["tests._hang_watchdog"]

_MAIN = sys.modules["__main__"]
if os.environ.get("PYTEST_XDIST_WORKER") and _MAIN.__spec__ is None and not hasattr(_MAIN, "__file__"):
    _MAIN.__file__ = str(Path(__file__).with_name("_xdist_main.py"))  # why: tests/_xdist_main.py


@pytest.fixture(autouse=True)
def _own_main_module() -> Iterator[None]:
    """Streamlit's AppTest installs its page script as `__main__` and leaves it there: a later test that spawns
    processes (multiprocessing's spawn) would run that script in each child. Every test ends with the process's
    own `__main__` back."""
    yield
    if sys.modules.get("__main__") is not _MAIN:
        sys.modules["__main__"] = _MAIN


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Before a test's fixtures: no Spark session of a server an earlier test stopped (the topology's Sail, a
    standalone server) stays active. MLflow asks the active session for a registry URI at every client and run,
    and against a dead server each ask is ten minutes of retries; the product drops such a session before its
    own MLflow calls (`shironzi.mlflow_client`), but fixtures that call mlflow directly would still hang."""
    drop_unreachable_sessions()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A fresh SHIRONZI_HOME with every embedded default under it."""
    root = tmp_path / "home"
    monkeypatch.setenv("SHIRONZI_HOME", str(root))
    for var in ("SHIRONZI_DATABASE_URL", "SHIRONZI_LAKE_URI", "SHIRONZI_KAFKA_BOOTSTRAP", "SHIRONZI_SPARK_REMOTE",
                "SHIRONZI_ONLINE_STORE_URL", "SHIRONZI_REDIS_URL", "SHIRONZI_SECRETS_URL", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(var, raising=False)
    get_settings.cache_clear()
    root.mkdir(parents=True)
    yield root
    get_settings.cache_clear()


@pytest.fixture
def settings(home: Path) -> Settings:
    return get_settings()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One real PostgreSQL server for the session (each test uses its own database via `pg_database_url`)."""
    with postgres_server() as url:
        yield url


@pytest.fixture
def pg_database_url(postgres_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database on the session's PostgreSQL server, dropped afterwards."""
    import re
    import uuid

    import sqlalchemy as sa

    name = "t_" + re.sub(r"[^a-z0-9]", "_", request.node.name.lower())[:40] + "_" + uuid.uuid4().hex[:6]
    admin = sa.create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield postgres_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_server(tmp_path_factory.mktemp("redis")) as url:
        yield url


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """One moto S3-protocol server process for the session; tests create their own buckets on it."""
    with s3_server(tmp_path_factory.mktemp("s3")) as server:
        yield server


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process with pytest's own exit status once every report is written.

    The suite loads several native runtimes into one long-lived process (gRPC, Arrow, DuckDB, XGBoost,
    greenlet). A daemon thread of one of them that wakes during interpreter finalization is killed by
    CPython mid-unwind and aborts the process ("FATAL: exception not rethrown"), after every test passed,
    turning a green run red at random. Fixtures have been torn down and the summary printed by now, so the
    process exits here with the status pytest computed. Product processes close their own sessions at exit
    (see transformations.spark.stop_spark); tests that run the CLI as a subprocess still see real exit codes.
    """
    status = getattr(config, "_shironzi_exitstatus", None)
    if status is None or os.environ.get("SHIRONZI_TEST_NORMAL_EXIT"):
        return
    config.get_terminal_writer().flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(int(status))


# Test directories whose session- or package-wide fixture (a trained lake, a seeded home) is built once per
# process. Under `make test` (pytest-xdist, `--dist loadfile`) each test file goes to one worker, so its module
# fixtures are built once; the scheduler below also keeps each of these directories on one worker.
SHARED_FIXTURE_DIRS = ("tests/models/", "tests/serving/", "tests/apps/")


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class FixtureScopeScheduling(LoadScopeScheduling):  # type: ignore[misc]
        """`--dist loadfile`, with a directory of SHARED_FIXTURE_DIRS as one scope."""

        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return next((d for d in SHARED_FIXTURE_DIRS if path.startswith(d)), path)

    return FixtureScopeScheduling(config, log) if config.getvalue("dist") == "loadfile" else None


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config._shironzi_exitstatus = exitstatus  # type: ignore[attr-defined]
    if "transformations.spark" in sys.modules:
        from transformations.spark import stop_spark

        stop_spark()
