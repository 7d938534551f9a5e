"""The Spark Connect session factory: a Spark 4 cluster (`SHIRONZI_SPARK_REMOTE`) or an embedded Sail server.

    spark = get_spark()                    # embedded Sail on a free loopback port, started once per process
    spark.read.format("delta").load(uri)   # jobs use only the Spark Connect DataFrame/SQL API

Spark jobs never use RDDs or JVM calls, so the same code runs on Sail and on a cluster with delta-spark.
Delta support on Sail 0.7 (verified by tests/transformations/test_spark_session.py): read, append/overwrite
writes with `partitionBy`, `MERGE INTO delta.\\`path\\``, and `DELETE FROM delta.\\`path\\``.

Object-store lakes: Sail reads the store's endpoint and credentials from its process environment (the
`AWS_*` variables of object_store and the AWS SDK), not from the session. The embedded server gets them
from `SHIRONZI_STORAGE_OPTIONS` (`object_store_env`); a standalone Spark Connect server must be started
with the same variables (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
`AWS_ALLOW_HTTP=true` for an http endpoint). A Spark job that cannot reach the lake fails with one
`ServiceUnavailableError` that says so (`lake_access`).
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from shironzi.errors import ConfigurationError, ServiceUnavailableError, ShironziError
from shironzi.settings import Settings, get_settings
from shironzi.spark_sessions import listening_at, server_problem, stop_session

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger("shironzi.spark")

SparkTarget = Literal["sail", "cluster"]

_lock = threading.Lock()
_server: Any = None  # pysail.spark.SparkConnectServer, started lazily
_sessions: dict[str, SparkSession] = {}
_handed_out: dict[str, float] = {}  # remote URL -> time.monotonic() when get_spark last returned its session
_exit_teardown_registered = False

# A server drops a session that sent no request for a while (Sail: spark.session_timeout_secs, 900 s by default;
# Spark: spark.connect.session.manager.defaultSessionTimeout). A cached session idle longer than this is checked
# with one cheap request before it is handed out again, and replaced if the server no longer knows it.
PROBE_AFTER_IDLE_SECONDS = 60.0
# The embedded server serves only this process, so its sessions may idle as long as the process lives.
EMBEDDED_SESSION_TIMEOUT_SECONDS = 7 * 24 * 3600

SESSION_CONF: dict[str, str] = {
    "spark.sql.session.timeZone": "UTC",
}


def spark_target(settings: Settings | None = None) -> SparkTarget:
    """Where Spark jobs run with these settings: the configured cluster or the embedded Sail server."""
    settings = settings or get_settings()
    return "cluster" if settings.spark_remote else "sail"


def _check_remote(remote: str) -> str:
    if not remote.startswith("sc://"):
        raise ConfigurationError(
            f"SHIRONZI_SPARK_REMOTE must be a Spark Connect URL like sc://host:15002, got {remote!r}"
        )
    return remote


def _register_exit_teardown() -> None:
    """Run `stop_spark` at interpreter exit, once, for embedded and remote sessions alike.

    An open gRPC channel keeps a daemon polling thread inside C++ code; if that thread takes the GIL while
    the interpreter finalizes, it is killed mid-unwind and the process aborts after its work is done.
    Closing the sessions from an `atexit` hook (which runs before finalization) ends those threads cleanly.
    """
    global _exit_teardown_registered
    if not _exit_teardown_registered:
        atexit.register(stop_spark)
        _exit_teardown_registered = True


# Storage options without a cloud prefix that object_store also accepts; Sail only reads prefixed variables.
_S3_SHORT_KEYS = frozenset({"endpoint", "endpoint_url", "region", "access_key_id", "secret_access_key",
                            "session_token", "allow_http", "virtual_hosted_style_request", "skip_signature"})
_ENV_PREFIXES = ("AWS_", "AZURE_", "GOOGLE_")


def object_store_env(storage_options: Mapping[str, str]) -> dict[str, str]:
    """The environment a Sail server needs to reach the lake that `storage_options` (delta-rs options,
    `SHIRONZI_STORAGE_OPTIONS`) describe: the `AWS_*`/`AZURE_*`/`GOOGLE_*` variables object_store reads."""
    env: dict[str, str] = {}
    for key, value in storage_options.items():
        name = key.upper()
        if not name.startswith(_ENV_PREFIXES):
            if key.lower() not in _S3_SHORT_KEYS:
                continue  # delta-rs-only options (locking, timeouts): not the server's business
            name = f"AWS_{name}"
        env[name] = str(value)
    if "AWS_ENDPOINT_URL" in env:
        env.setdefault("AWS_ENDPOINT", env["AWS_ENDPOINT_URL"])
    return env


def _start_embedded_sail() -> str:
    """Start the in-process Sail Spark Connect server once; returns its sc:// URL.

    Sail reads the object store's endpoint and credentials from this process's environment, so the
    settings' storage options are exported first (an object-store lake is otherwise looked up on the
    public AWS endpoint: "failed to lookup address information")."""
    global _server
    os.environ.update(object_store_env(get_settings().storage_options))  # read when Sail opens a bucket
    if _server is None:
        os.environ.setdefault("RUST_LOG", "error")  # Sail logs every session at INFO, and its shutdown at WARN
        os.environ.setdefault("SAIL_SPARK__SESSION_TIMEOUT_SECS", str(EMBEDDED_SESSION_TIMEOUT_SECONDS))
        try:
            from pysail.spark import SparkConnectServer
        except ImportError as exc:  # pragma: no cover - pysail is in the lock
            raise ConfigurationError(
                "embedded Spark needs pysail (pip install pysail), or set SHIRONZI_SPARK_REMOTE"
            ) from exc
        server = SparkConnectServer(ip="127.0.0.1", port=0)
        server.start(background=True)
        _server = server
        _register_exit_teardown()
        logger.info("embedded Sail Spark Connect server listening on %s", server.listening_address)
    host, port = _server.listening_address
    return f"sc://{host}:{port}"


def _import_spark_connect() -> None:
    """Import pyspark's Connect client, also from `python -c` (where pyspark mistakes the run for its own
    doctests, looks for a JVM Spark install and calls sys.exit)."""
    import sys

    main = sys.modules.get("__main__")
    mistaken_for_doctest = (main is not None and getattr(main, "__spec__", None) is None
                            and not hasattr(main, "__file__") and not hasattr(sys, "ps1"))
    with warnings.catch_warnings():  # pyspark-client 4.2 warns about pandas 3 on import; the jobs use Arrow
        warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas")
        if not mistaken_for_doctest or "SPARK_HOME" in os.environ:
            import pyspark.sql.connect.session  # noqa: F401
            return
        import pyspark

        os.environ["SPARK_HOME"] = os.path.dirname(pyspark.__file__)  # only read by pyspark's test helpers
        try:
            import pyspark.sql.connect.session  # noqa: F401
        finally:
            del os.environ["SPARK_HOME"]


def spark_remote_url(settings: Settings | None = None) -> str:
    """The Spark Connect URL jobs use: SHIRONZI_SPARK_REMOTE, else the embedded Sail server's (started if needed)."""
    settings = settings or get_settings()
    with _lock:
        return _check_remote(settings.spark_remote) if settings.spark_remote else _start_embedded_sail()


def get_spark(settings: Settings | None = None) -> SparkSession:
    """A Spark Connect session: the cluster at `settings.spark_remote`, else the embedded Sail server.

    Sessions are cached per remote URL, so every job in a process shares one server and one session. A cached
    session the server has dropped (idle timeout, server restart) is replaced by a new one; a server that does
    not accept connections is one `ServiceUnavailableError`, not minutes of client retries.
    """
    settings = settings or get_settings()
    with _lock:
        remote = _check_remote(settings.spark_remote) if settings.spark_remote else _start_embedded_sail()
        session = _cached_session(remote)
        if session is None:
            session = _new_session(remote)
            _sessions[remote] = session
        _make_active(session)  # what a later `getOrCreate()` (dbt-spark's, MLflow's context probe) picks up
        _handed_out[remote] = time.monotonic()
        return session


def _cached_session(remote: str) -> SparkSession | None:
    session = _sessions.get(remote)
    if session is None:
        return None
    if session.is_stopped:  # dropped by `drop_unreachable_sessions` (its server had gone) or stopped by its user
        del _sessions[remote]
        return None
    if time.monotonic() - _handed_out.get(remote, 0.0) < PROBE_AFTER_IDLE_SECONDS:
        return session
    if server_problem(session) is None:
        try:
            session.conf.get("spark.sql.session.timeZone")  # a Config request: answered at once, or refused
            return session
        except Exception as exc:  # noqa: BLE001 - "session … is not running", SESSION_NOT_FOUND, …
            logger.info("spark session at %s was dropped by the server (%s); opening a new one", remote,
                        str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__)
    _close(session)
    del _sessions[remote]
    return None


def _new_session(remote: str) -> SparkSession:
    try:
        _import_spark_connect()
        from pyspark.sql import SparkSession
    except ImportError as exc:  # pragma: no cover - pyspark-client is in the lock
        raise ConfigurationError("Spark jobs need pyspark-client (pip install pyspark-client)") from exc
    check_reachable(remote)
    builder = SparkSession.builder.remote(remote)
    for key, value in SESSION_CONF.items():
        builder = builder.config(key, value)
    try:
        # Not getOrCreate(): it hands back whatever session is already active, whichever server that
        # session talks to (a job on the embedded server would then run against a cluster used before).
        session = builder.create()
    except Exception as exc:  # grpc/Spark Connect errors have no common base worth importing here
        raise ServiceUnavailableError(f"cannot connect to Spark at {remote}: {exc}", remote=remote) from exc
    _register_exit_teardown()
    return session


def _make_active(session: SparkSession) -> None:
    """Make `session` the default and this thread's active one, replacing any other.

    pyspark only fills these when they are empty, so a session of a server used before (perhaps gone by now)
    would stay active, and `getOrCreate()` callers (dbt-spark, MLflow's Databricks probe at every run start)
    would talk to it and retry for minutes."""
    cls = type(session)
    if hasattr(cls, "_active_session") and hasattr(cls, "_default_session"):
        with cls._lock:  # type: ignore[attr-defined]
            cls._default_session = session  # type: ignore[attr-defined]
        cls._active_session.session = session  # type: ignore[attr-defined]


# How a Spark server's failure to reach the object store reads (object_store / AWS SDK / Sail messages).
_UNREACHABLE_STORE = ("failed to lookup address", "dns error", "error sending request", "connection refused",
                      "invalidaccesskeyid", "signaturedoesnotmatch", "no credentials", "nosuchbucket",
                      "generic s3 error", "s3 error", "credential")


@contextmanager
def lake_access(settings: Settings | None = None) -> Iterator[None]:
    """Run Spark work on the lake; a Spark server that cannot reach an object-store lake becomes one
    `ServiceUnavailableError` naming what the server needs (instead of a page of gRPC traceback)."""
    settings = settings or get_settings()
    lake = settings.resolved_lake_uri
    try:
        yield
    except ShironziError:
        raise
    except Exception as exc:
        text = str(exc)
        if "://" not in lake or lake.startswith("file://") or not any(m in text.lower() for m in _UNREACHABLE_STORE):
            raise
        where = settings.spark_remote or "the embedded Sail server"
        reason = next((line.strip() for line in text.splitlines() if line.strip()), type(exc).__name__)[:200]
        raise ServiceUnavailableError(
            f"Spark at {where} cannot reach the lake at {lake.split('://', 1)[0]}://{_bucket(lake)} ({reason}); "
            "start the Spark server with the object store's AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY (and AWS_ALLOW_HTTP=true for an http endpoint)",
            remote=where,
        ) from exc


def _bucket(uri: str) -> str:
    return uri.split("://", 1)[1].split("/", 1)[0]


def stop_spark() -> None:
    """Close the cached sessions and stop the embedded Sail server (also runs at interpreter exit)."""
    global _server
    with _lock:
        for session in _sessions.values():
            _close(session)
        _sessions.clear()
        _handed_out.clear()
        if _server is not None:
            try:
                _server.stop()
            except Exception:  # noqa: BLE001 - best effort at shutdown
                logger.debug("sail server stop failed", exc_info=True)
            _server = None
    _join_grpc_threads()


def _close(session: SparkSession) -> None:
    stop_session(session, server_gone=server_problem(session) is not None)


def server_address(remote: str) -> tuple[str, int]:
    """Host and port of a Spark Connect URL (`sc://host[:port][/;param=value…]`; Spark's default port is 15002)."""
    parts = urlsplit(remote.replace("sc://", "http://", 1).split(";", 1)[0])
    if not parts.hostname:
        raise ConfigurationError(f"the Spark Connect URL {remote!r} names no host")
    return parts.hostname, parts.port or 15002


def check_reachable(remote: str, *, timeout: float = 3.0) -> None:
    """A Spark Connect server that does not accept connections is refused at once: the gRPC client would
    otherwise retry for minutes."""
    host, port = server_address(remote)
    problem = listening_at(host, port, timeout=timeout)
    if problem is not None:
        raise ServiceUnavailableError(
            f"the Spark Connect server at {remote} does not answer ({problem}); start it or fix SHIRONZI_SPARK_REMOTE",
            remote=remote,
        )


def _join_grpc_threads(timeout: float = 2.0) -> None:
    """Wait (bounded) for gRPC's daemon polling threads to notice their closed channels and return."""
    deadline = time.monotonic() + timeout
    for thread in threading.enumerate():
        target = getattr(thread, "_target", None)  # threading.Thread keeps its target privately
        if thread.daemon and getattr(target, "__module__", "").startswith("grpc"):
            thread.join(max(0.0, deadline - time.monotonic()))


def spark_path(uri: str) -> str:
    """The path Spark should load/save for a lake URI (local paths are made absolute)."""
    if "://" in uri and not uri.startswith("file://"):
        return uri
    return os.path.abspath(uri.removeprefix("file://"))
