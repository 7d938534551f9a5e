"""The tenant registry's hot standby: PostgreSQL streaming replication from the primary region to its peer.

`build_standby` clones the primary with `pg_basebackup -R` (which writes `standby.signal` and the
`primary_conninfo`), `start_standby` starts that copy as a read-only hot standby, `replication_status` reports
the lag from both ends (`pg_stat_replication` on the primary, `pg_last_wal_replay_lsn()` on the standby) and
`promote` turns the standby into the primary (`pg_promote()`) at failover. The Shironzi registry reads from
a standby like from any PostgreSQL (`SHIRONZI_DATABASE_URL` pointed at it); writes wait for the promotion.

The server binaries are PostgreSQL's own (`pg_basebackup`, `pg_ctl`), found on PATH or under
`/usr/lib/postgresql/*/bin`; `run_as` prefixes them (e.g. `runuser -u postgres --` when running as root).
"""

from __future__ import annotations

import glob
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from shironzi.errors import ConfigurationError, InvalidInputError, InvalidStateError, ServiceUnavailableError


@dataclass(frozen=True)
class Replica:
    """One standby as the primary sees it (`pg_stat_replication`)."""

    application_name: str
    state: str
    sent_lsn: str | None
    replay_lsn: str | None
    lag_bytes: int | None


@dataclass(frozen=True)
class StandbyStatus:
    """Replication seen from both ends; `lag_bytes` is the primary's WAL not yet replayed on the standby."""

    primary_lsn: str | None
    replicas: list[Replica]
    standby_in_recovery: bool | None
    standby_replay_lsn: str | None
    lag_bytes: int | None
    replay_lag_seconds: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def pg_binary(name: str) -> str:
    """A PostgreSQL server binary from PATH or the distribution's versioned directory."""
    found = shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True)),
                                       None)
    if found is None:
        raise ConfigurationError(f"PostgreSQL binary {name!r} not found: install the PostgreSQL server package")
    return found


def conninfo(url: str) -> str:
    """A libpq connection string for a registry URL (`postgresql+psycopg://user@host:port/db`)."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise InvalidInputError(f"a registry standby needs a PostgreSQL registry, not {parsed.get_backend_name()!r}")
    parts = {"host": parsed.host, "port": parsed.port, "user": parsed.username, "password": parsed.password,
             "dbname": parsed.database}
    return " ".join(f"{k}={v}" for k, v in parts.items() if v not in (None, ""))


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ServiceUnavailableError(f"{what} failed: {tail[0]}")


def build_standby(primary_url: str, data_dir: Path, *, run_as: Sequence[str] = ()) -> None:
    """Clone the primary into `data_dir` (which must not exist or be empty) as a streaming standby."""
    if data_dir.exists() and any(data_dir.iterdir()):
        raise InvalidInputError(f"standby data directory {data_dir} is not empty")
    _run([*run_as, pg_binary("pg_basebackup"), "-d", conninfo(primary_url), "-D", str(data_dir), "-R",
          "-X", "stream", "-c", "fast", "--no-sync"], "pg_basebackup")


def start_standby(
    primary_url: str, data_dir: Path, *, port: int, socket_dir: Path, log: Path, run_as: Sequence[str] = ()
) -> str:
    """Start the cloned directory as a hot standby on `port`; returns its registry URL (the primary's with the
    standby's port; read-only until promoted)."""
    opts = f"-p {port} -k {socket_dir} -c listen_addresses=127.0.0.1 -c hot_standby=on"
    _run([*run_as, pg_binary("pg_ctl"), "-D", str(data_dir), "-o", opts, "-l", str(log), "-w", "start"],
         "starting the standby")
    url = sa.engine.make_url(primary_url).set(host="127.0.0.1", port=port)
    return url.render_as_string(hide_password=False)


def _rows(url: str, query: str) -> Any:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(query)).mappings().all()
    except sa.exc.OperationalError as exc:
        raise ServiceUnavailableError(f"registry database unreachable: {str(exc.orig).strip()}") from exc
    finally:
        engine.dispose()


def replication_status(primary_url: str | None, standby_url: str | None) -> StandbyStatus:
    """Where the primary's WAL is, which standbys stream it, and how far the standby has replayed."""
    for url in (primary_url, standby_url):
        if url:
            conninfo(url)  # a PostgreSQL URL, or one clear error
    primary_lsn, replicas = None, []
    if primary_url:
        (head,) = _rows(primary_url, "SELECT pg_current_wal_lsn()::text AS lsn")
        primary_lsn = head["lsn"]
        rows = _rows(primary_url, "SELECT application_name, state, sent_lsn::text AS sent, "
                                        "replay_lsn::text AS replay, pg_wal_lsn_diff(pg_current_wal_lsn(), "
                                        "replay_lsn)::bigint AS lag FROM pg_stat_replication")
        replicas = [Replica(r["application_name"], r["state"], r["sent"], r["replay"], r["lag"]) for r in rows]
    in_recovery = replay_lsn = lag_seconds = lag_bytes = None
    if standby_url:
        (row,) = _rows(standby_url, "SELECT pg_is_in_recovery() AS rec, pg_last_wal_replay_lsn()::text AS lsn, "
                                          "extract(epoch FROM now() - pg_last_xact_replay_timestamp())::float AS age")
        in_recovery, replay_lsn, lag_seconds = row["rec"], row["lsn"], row["age"]
        if primary_url and replay_lsn:
            (diff,) = _rows(primary_url, f"SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '{replay_lsn}')::bigint"
                                               " AS lag")
            lag_bytes = max(0, int(diff["lag"]))
    elif replicas:
        lag_bytes = max((r.lag_bytes or 0) for r in replicas)
    return StandbyStatus(primary_lsn, replicas, in_recovery, replay_lsn, lag_bytes, lag_seconds)


def wait_for_catch_up(primary_url: str, standby_url: str, *, timeout: float = 30.0) -> StandbyStatus:
    """Block until the standby has replayed the primary's WAL as of now (raises after `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        status = replication_status(primary_url, standby_url)
        if status.lag_bytes == 0:
            return status
        if time.monotonic() > deadline:
            raise ServiceUnavailableError(f"the standby is still {status.lag_bytes} bytes behind after {timeout}s")
        time.sleep(0.05)


def promote(standby_url: str, *, wait_seconds: int = 60) -> StandbyStatus:
    """Promote the standby to primary (`pg_promote`); refused when it is not a standby."""
    conninfo(standby_url)
    (row,) = _rows(standby_url, "SELECT pg_is_in_recovery() AS rec")
    if not row["rec"]:
        raise InvalidStateError("the registry database is not a standby (not in recovery): nothing to promote")
    engine = sa.create_engine(standby_url, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            promoted = conn.execute(sa.text("SELECT pg_promote(true, :wait)"), {"wait": wait_seconds}).scalar()
    finally:
        engine.dispose()
    if not promoted:
        raise ServiceUnavailableError(f"the standby did not finish promotion within {wait_seconds}s")
    return replication_status(None, standby_url)
