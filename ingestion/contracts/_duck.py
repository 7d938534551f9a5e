"""DuckDB as a vectorised JSON and timestamp toolkit for Polars frames (one in-memory connection per thread).

Polars' own JSON decoder is strict about shapes and cannot report a value's JSON type; DuckDB's JSON
functions can, over a whole column at once, reading the frame through Arrow without copying it.
"""

from __future__ import annotations

import threading
from typing import Any

import polars as pl

_local = threading.local()


def _connection() -> Any:
    con = getattr(_local, "con", None)
    if con is None:
        import duckdb

        con = duckdb.connect(":memory:")
        con.execute("SET TimeZone = 'UTC'")
        _local.con = con
    return con


def run_query(sql: str, **frames: pl.DataFrame) -> pl.DataFrame:
    """Run `sql` over the given frames (each registered under its keyword name) and return a Polars frame."""
    con = _connection()
    names = list(frames)
    try:
        for name, frame in frames.items():
            con.register(name, frame.to_arrow())
        return con.sql(sql).pl()
    finally:
        for name in names:
            con.unregister(name)


def sql_string(value: str) -> str:
    """A SQL string literal."""
    return "'" + value.replace("'", "''") + "'"
