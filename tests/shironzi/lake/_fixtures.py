"""Helpers of the lake tests: the type of the `make_events` fixture and a writer host paused before its commit."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pyarrow as pa

from shironzi.lake.leases import LeaseMode, table_lease

MakeEvents = Callable[..., pa.Table]
"""`make_events(n, seed=..., ...)`: a batch of n canonical events."""


def run_paused_writer(table: str, flags: str, rows: int) -> None:
    """A child process acting as a writer host: append `rows` rows through the kernel's `append`, but pause
    after its Parquet file is written and before the commit, until the test creates `flags/commit`.

    The pause is patched in here (the writer's two phases, write the data file then commit it, with a wait
    between them); nothing of it ships in the kernel. Touches `flags/written` once the file is on storage.
    """
    import json
    import time
    import uuid
    from pathlib import Path

    import pyarrow.parquet as pq
    from deltalake.transaction import AddAction

    import shironzi.lake.writes as writes
    from shironzi.lake.discovery import lake_filesystem

    flag_dir = Path(flags)

    def paused_write(target: Any, data: pa.Table, *, mode: str, commit_properties: Any = None, **_: Any) -> None:
        name = f"part-00000-paused-{uuid.uuid4().hex}.parquet"
        fs, root = lake_filesystem(target.table_uri)
        with fs.open_output_stream(f"{root.rstrip('/')}/{name}") as out:
            pq.write_table(data, out)
        size = fs.get_file_info(f"{root.rstrip('/')}/{name}").size
        (flag_dir / "written").touch()
        deadline = time.monotonic() + 120
        while not (flag_dir / "commit").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        add = AddAction(name, size, {}, int(time.time() * 1000), True, json.dumps({"numRecords": data.num_rows}))
        target.create_write_transaction([add], mode=mode, schema=data.schema, commit_properties=commit_properties)

    writes.write_deltalake = paused_write  # type: ignore[assignment]
    batch = pa.table({"tenant_id": ["tenant_b"] * rows, "event_id": [f"paused-{i}" for i in range(rows)]})
    writes.append(table, batch)
    (flag_dir / "committed").touch()


@contextmanager
def lease_held_elsewhere(uri: str, mode: LeaseMode) -> Iterator[None]:
    """Another thread (as an erasure or a writer would) holds the table's lease for the block."""
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with table_lease(uri, mode=mode, timeout=5):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    assert held.wait(10)
    try:
        yield
    finally:
        release.set()
        thread.join(10)
