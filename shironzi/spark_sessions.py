"""The Spark Connect session that libraries find on their own, and dropping it once its server has gone.

pyspark keeps a default session and a per-thread active session, and libraries look them up by themselves: MLflow
asks the active session for `spark.mlflow.modelRegistryUri` whenever it builds a client or starts a run, and
dbt-spark's `getOrCreate()` takes it. When the session's server has gone (a Spark cluster restarted, a
standalone server stopped) and nothing stopped the session, the Spark Connect client retries each of those
requests for about ten minutes before it fails. Every MLflow call in the process then hangs.

`drop_unreachable_sessions()` stops such a session without asking the dead server to release it, so nothing finds
it any more. It costs one TCP connect per session and imports nothing: if pyspark was never imported, no
session exists. `models.tracking.configure_mlflow` and the DR replica's MLflow clients call it before they
touch MLflow; `transformations.spark` replaces a cached session that was dropped.
"""

from __future__ import annotations

import logging
import socket
import sys
from typing import Any

logger = logging.getLogger("shironzi.spark")


def listening_at(host: str, port: int, *, timeout: float = 1.0) -> OSError | None:
    """None when something accepts TCP connections at host:port, else the connect error."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as exc:
        return exc


def server_problem(session: Any, *, timeout: float = 1.0) -> OSError | None:
    """None when the server of a Spark Connect session accepts connections, else the connect error."""
    host, _, port = session.client._builder.endpoint.rpartition(":")  # host:port of the session's channel
    return listening_at(host.strip("[]"), int(port), timeout=timeout)


def stop_session(session: Any, *, server_gone: bool) -> None:
    """Stop a Spark Connect session, best effort; pyspark then clears it as default and active session. A session
    whose server has gone is not released: the release request would retry against the dead server for minutes."""
    if server_gone:
        session.release_session_on_close = False
    try:
        session.stop()
    except Exception:  # noqa: BLE001 - closing a channel, perhaps to a dead server
        logger.debug("stopping the Spark session of %s failed", session.client._builder.endpoint, exc_info=True)


def drop_unreachable_sessions(*, timeout: float = 1.0) -> list[str]:
    """Stop pyspark's default session and this thread's active session if their server does not accept
    connections; the endpoints (host:port) of the sessions dropped."""
    module = sys.modules.get("pyspark.sql.connect.session")
    if module is None:
        return []
    cls = module.SparkSession
    found = (getattr(cls._active_session, "session", None), getattr(cls, "_default_session", None))
    dropped: list[str] = []
    for session in {id(s): s for s in found if s is not None and not s.is_stopped}.values():
        problem = server_problem(session, timeout=timeout)
        if problem is None:
            continue
        endpoint = session.client._builder.endpoint
        stop_session(session, server_gone=True)
        logger.warning("dropped the Spark session of %s: its server does not answer (%s)", endpoint, problem)
        dropped.append(endpoint)
    return dropped
