"""Table leases: writers share a table's lease, erasure and vacuum take it alone, across every host.

Every kernel write (`shironzi.lake.writes`: append, overwrite, delete, merge; optimize) holds the SHARED
lease of its table between "write Parquet files" and "commit them", so writers still run concurrently and
rely on Delta's optimistic concurrency between themselves. Erasure and vacuum take the EXCLUSIVE lease,
which waits until no writer holds files it has not yet committed and keeps new writers out until done.

The backend follows the registry database (`SHIRONZI_DATABASE_URL`), so every host that shares the
registry shares the leases:

- PostgreSQL: session advisory locks (`pg_advisory_lock_shared` / `pg_advisory_lock`) held on a dedicated
  connection for the duration of the lease. PostgreSQL queues a lock request behind the waiters it
  conflicts with, so a waiting erasure is not starved by a stream of writers. The wait is bounded by
  `lock_timeout` (`SHIRONZI_LEASE_TIMEOUT_SECONDS`); a timeout raises `LeaseBusyError`. If the holder's
  process or connection dies, PostgreSQL releases the lock with the session, so a crashed host never
  leaves a table locked. Chosen over a lease table with expiry: no clock or renewal logic, and no lease
  can expire under a writer that is merely slow.
- SQLite (embedded, one host): `flock(2)` files under `SHIRONZI_HOME/locks/leases`, with a gate file
  that queues new writers behind a waiting erasure.

A lease is keyed by the table's lake-relative identity (`eu-west/bronze/events`, not an absolute local
path or a bucket URL), hashed to a stable signed 64-bit integer, so two hosts that mount or address the
same lake differently agree on the key. A thread that already holds a table's lease re-enters it for free
(erasure holding the exclusive lease calls `delete` and `vacuum`, which ask for it again).
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from shironzi.errors import InvalidStateError, LeaseBusyError
from shironzi.settings import get_settings

if TYPE_CHECKING:
    from contextlib import AbstractContextManager

logger = logging.getLogger("shironzi.lake")

LeaseMode = Literal["shared", "exclusive"]
_POLL_SECONDS = 0.02


def normalise_uri(uri: str) -> str:
    """One spelling per table: no trailing slash, local paths absolute."""
    text = str(uri).rstrip("/")
    if "://" in text and not text.startswith("file://"):
        return text
    return str(Path(text.removeprefix("file://")).expanduser().resolve())


def lake_relative(uri: str, *, lake_uri: str | None = None) -> str:
    """`eu-west/gold/dim_customers` for a table URI under the lake root; the normalised URI otherwise."""
    table, root = normalise_uri(uri), normalise_uri(lake_uri or get_settings().resolved_lake_uri)
    return table[len(root) + 1 :] if table.startswith(root + "/") else table


def lease_key(uri: str, *, lake_uri: str | None = None) -> int:
    """The stable signed 64-bit key of a table's lease (the same on every host addressing that table)."""
    digest = hashlib.sha256(b"shironzi-lease\x00" + lake_relative(uri, lake_uri=lake_uri).encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lease_path(uri: str, *, home: Path | None = None) -> Path:
    """The lock file that stands for one table on this host (the SQLite backend)."""
    root = (home or get_settings().home) / "locks" / "leases"
    root.mkdir(parents=True, exist_ok=True)
    return root / f"{lease_key(uri) & 0xFFFF_FFFF_FFFF_FFFF:016x}.lock"


@contextmanager
def file_lock(
    path: Path,
    *,
    mode: LeaseMode = "exclusive",
    timeout: float | None = None,
    busy: Callable[[], LeaseBusyError] | None = None,
) -> Iterator[None]:
    """Hold `flock` on `path` (shared or exclusive) for the block; raises LeaseBusyError (or `busy()`) after
    `timeout`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    flag = fcntl.LOCK_EX if mode == "exclusive" else fcntl.LOCK_SH
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, flag | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    if busy is not None:
                        raise busy() from None
                    raise LeaseBusyError(
                        f"could not take the {mode} lock {path} within {timeout:g}s", lock=str(path)
                    ) from None
                time.sleep(_POLL_SECONDS)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class LeaseBackend(Protocol):
    """Where leases live: one implementation per registry database scheme."""

    def hold(self, uri: str, key: int, mode: LeaseMode, timeout: float) -> AbstractContextManager[None]:
        """Hold the lease `key` (of table `uri`) in `mode` for the block; LeaseBusyError after `timeout`."""
        ...


class FileLeases:
    """`flock` files under SHIRONZI_HOME: exclusion between the processes of one host."""

    @contextmanager
    def hold(self, uri: str, key: int, mode: LeaseMode, timeout: float) -> Iterator[None]:
        path = lease_path(uri)
        gate = path.with_suffix(".gate")
        busy = functools.partial(_busy, uri, mode, timeout)
        if mode == "exclusive":
            # Hold the gate while waiting for and holding the lease, so a stream of writers cannot starve us.
            with (
                file_lock(gate, mode="exclusive", timeout=timeout, busy=busy),
                file_lock(path, mode="exclusive", timeout=timeout, busy=busy),
            ):
                yield
            return
        with file_lock(gate, mode="exclusive", timeout=timeout, busy=busy):
            pass  # writers pass through the gate: they queue behind an erasure that is waiting for the lease
        with file_lock(path, mode="shared", timeout=timeout, busy=busy):
            yield


class AdvisoryLeases:
    """PostgreSQL session advisory locks, one dedicated connection per held lease."""

    def __init__(self, url: str) -> None:
        import sqlalchemy as sa

        # Its own pool: a lease holds its connection for the whole write, which must not starve the registry.
        self.engine = sa.create_engine(url, pool_size=2, max_overflow=-1, pool_pre_ping=True, pool_recycle=1800)

    @contextmanager
    def hold(self, uri: str, key: int, mode: LeaseMode, timeout: float) -> Iterator[None]:
        from sqlalchemy import exc as sa_exc
        from sqlalchemy import text

        suffix = "_shared" if mode == "shared" else ""
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            wait_ms = f"{max(1, int(timeout * 1000))}"
            conn.execute(text("SELECT set_config('lock_timeout', :ms, false)"), {"ms": wait_ms})
            try:
                conn.execute(text(f"SELECT pg_advisory_lock{suffix}(:key)"), {"key": key})
            except sa_exc.OperationalError as exc:
                if getattr(exc.orig, "sqlstate", None) != "55P03":  # lock_not_available
                    raise
                raise _busy(uri, mode, timeout) from None
            finally:
                conn.execute(text("SELECT set_config('lock_timeout', '0', false)"))
            try:
                yield
            finally:
                try:
                    released = conn.execute(text(f"SELECT pg_advisory_unlock{suffix}(:key)"), {"key": key}).scalar()
                except sa_exc.DBAPIError:
                    released = False
                if not released:  # the session (and with it the lock) was lost while the lease was held
                    logger.warning("the %s lease of %s was lost before its release", mode, lake_relative(uri))
                    conn.invalidate()


def _busy(uri: str, mode: LeaseMode, timeout: float) -> LeaseBusyError:
    other = "a writer holds it" if mode == "exclusive" else "an erasure or vacuum holds or awaits it"
    return LeaseBusyError(
        f"could not take the {mode} lease of table {lake_relative(uri)} within {timeout:g}s ({other}); "
        "retry later or raise SHIRONZI_LEASE_TIMEOUT_SECONDS",
        table=lake_relative(uri),
        mode=mode,
    )


@functools.lru_cache(maxsize=4)
def _backend_for(database_url: str) -> LeaseBackend:
    import sqlalchemy as sa

    backend = sa.engine.make_url(database_url).get_backend_name()
    if backend == "postgresql":
        return AdvisoryLeases(database_url)
    return FileLeases()


def lease_backend() -> LeaseBackend:
    """The lease backend of the configured registry database (PostgreSQL advisory locks, else local files)."""
    return _backend_for(get_settings().resolved_database_url)


_held = threading.local()


def _held_modes() -> dict[int, list[LeaseMode]]:
    modes: dict[int, list[LeaseMode]] | None = getattr(_held, "modes", None)
    if modes is None:
        modes = _held.modes = {}
    return modes


@contextmanager
def table_lease(uri: str, *, mode: LeaseMode = "shared", timeout: float | None = None) -> Iterator[None]:
    """Hold the lease of one table: writers use the default shared mode, erasure and vacuum exclusive.

    Re-entrant per thread: a thread already holding the table's lease (exclusive, or shared when shared is
    asked) passes straight through. Asking for exclusive while holding shared is refused (it would deadlock).
    """
    wait = get_settings().lease_timeout_seconds if timeout is None else timeout
    key = lease_key(uri)
    held = _held_modes()
    stack = held.get(key, [])
    if stack and ("exclusive" in stack or mode == "shared"):
        yield
        return
    if stack:
        raise InvalidStateError(
            f"cannot take the exclusive lease of {lake_relative(uri)} while this thread holds its shared lease",
            table=lake_relative(uri),
        )
    with lease_backend().hold(uri, key, mode, wait):
        held.setdefault(key, []).append(mode)
        try:
            yield
        finally:
            held[key].pop()
            if not held[key]:
                del held[key]


def optional_lease(uri: str, *, take: bool, mode: LeaseMode = "shared") -> AbstractContextManager[Any]:
    """`table_lease(uri, mode=mode)` when `take`, else nothing (for callers that already hold the lease)."""
    from contextlib import nullcontext

    return table_lease(uri, mode=mode) if take else nullcontext()
