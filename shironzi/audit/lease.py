"""Table leases: a file lock per table URI under SHIRONZI_HOME that writers share and erasure takes alone.

Writers (bronze landing, dbt, feature jobs) wrap each commit in `with table_lease(uri):` (shared mode,
so writers still run concurrently and rely on Delta's optimistic concurrency between themselves). Erasure
and other destructive maintenance take `table_lease(uri, mode="exclusive")`, which waits until no writer is
between "wrote Parquet files" and "committed them", and keeps new writers out until it is done.

The lock is `flock(2)` on a local file, so it covers every process on this host (or on hosts sharing the
SHIRONZI_HOME volume). A multi-host production deployment runs its writers and the erasure job against
the same lease directory on a shared volume, or serialises them through one writer service.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

from shironzi.errors import LeaseBusyError
from shironzi.settings import get_settings

LeaseMode = Literal["shared", "exclusive"]
_POLL_SECONDS = 0.02


def lease_path(uri: str, *, home: Path | None = None) -> Path:
    """The lock file that stands for one table URI."""
    root = (home or get_settings().home) / "locks" / "leases"
    root.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(normalise_uri(uri).encode()).hexdigest()[:32]
    return root / f"{digest}.lock"


def normalise_uri(uri: str) -> str:
    """One spelling per table: no trailing slash, local paths absolute."""
    text = str(uri).rstrip("/")
    if "://" in text and not text.startswith("file://"):
        return text
    return str(Path(text.removeprefix("file://")).expanduser().resolve())


@contextmanager
def file_lock(path: Path, *, mode: LeaseMode = "exclusive", timeout: float | None = None) -> Iterator[None]:
    """Hold `flock` on `path` (shared or exclusive) for the block; raises LeaseBusyError after `timeout`."""
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


@contextmanager
def table_lease(uri: str, *, mode: LeaseMode = "shared", timeout: float | None = None) -> Iterator[None]:
    """Hold the lease of one table: writers use the default shared mode, erasure uses exclusive."""
    wait = get_settings().lease_timeout_seconds if timeout is None else timeout
    path = lease_path(uri)
    gate = path.with_suffix(".gate")
    if mode == "exclusive":
        # Hold the gate while waiting for and holding the lease, so a stream of writers cannot starve us.
        with file_lock(gate, mode="exclusive", timeout=wait), file_lock(path, mode="exclusive", timeout=wait):
            yield
        return
    with file_lock(gate, mode="exclusive", timeout=wait):
        pass  # writers pass through the gate: they queue behind an erasure that is waiting for the lease
    with file_lock(path, mode="shared", timeout=wait):
        yield
