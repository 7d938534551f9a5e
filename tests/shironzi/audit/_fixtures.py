"""Helpers that build a small multi-layer lake for the compliance tests (real Delta tables)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import pyarrow as pa

from shironzi.lake.delta import append
from shironzi.lake.paths import table_uri
from shironzi.settings import get_settings

DAY = dt.date(2024, 5, 1)


def uri(layer: str, table: str, *, tenant_id: str | None = None) -> str:
    lake = get_settings().resolved_lake_uri
    if tenant_id:
        return table_uri(
            lake, layer=layer, table=table, region="eu-west", placement="dedicated", tenant_id=tenant_id
        )  # type: ignore[arg-type]
    return table_uri(lake, layer=layer, table=table, region="eu-west")  # type: ignore[arg-type]


def events(
    rows: Sequence[tuple[str, str]], *, day: dt.date = DAY, start: int = 0, ingested_at: dt.datetime | None = None
) -> pa.Table:
    """Canonical bronze rows for (tenant, customer) pairs (with `ingested_at` when given)."""
    when = dt.datetime.combine(day, dt.time(12), tzinfo=dt.UTC)
    table = pa.table(
        {
            "tenant_id": [t for t, _ in rows],
            "event_id": [f"e{start + i}" for i in range(len(rows))],
            "customer_id": [c for _, c in rows],
            "event_type": ["order_placed"] * len(rows),
            "event_time": pa.array([when] * len(rows), pa.timestamp("us", tz="UTC")),
            "event_date": pa.array([day] * len(rows), pa.date32()),
            "source": ["test"] * len(rows),
            "amount": [10.0] * len(rows),
            "properties": [
                json.dumps({"order_id": f"o{start + i}", "referrer": c}) for i, (_, c) in enumerate(rows)
            ],
        }
    )
    if ingested_at is None:
        return table
    return table.append_column("ingested_at", pa.array([ingested_at] * len(rows), pa.timestamp("us", tz="UTC")))


def customers(rows: Sequence[tuple[str, str]]) -> pa.Table:
    return pa.table(
        {"tenant_id": [t for t, _ in rows], "customer_id": [c for _, c in rows], "value": [1.0] * len(rows)}
    )


def quarantine(rows: Sequence[tuple[str | None, str]]) -> pa.Table:
    now = dt.datetime(2024, 5, 1, 12, tzinfo=dt.UTC)
    return pa.table(
        {
            "quarantined_at": pa.array([now] * len(rows), pa.timestamp("us", tz="UTC")),
            "tenant_id": pa.array([t for t, _ in rows], pa.string()),
            "reason_code": ["missing_field"] * len(rows),
            "raw_payload": [p for _, p in rows],
            "event_date": pa.array([DAY] * len(rows), pa.date32()),
        }
    )


def build_lake(*, token: str | None = None) -> dict[str, str]:
    """Bronze (several files: one holding only the subject), silver, gold, features, predictions,
    quarantine, another tenant's dedicated table. Subject: t_a/c_1; look-alikes c_12, c_10."""
    tables = {
        "bronze": uri("bronze", "events"),
        "silver": uri("silver", "stg_events"),
        "gold": uri("gold", "dim_customers"),
        "features": uri("features", "customer_features"),
        "predictions": uri("predictions", "churn_scores"),
        "quarantine": uri("quarantine", "events"),
        "dedicated": uri("bronze", "events", tenant_id="t_d"),
    }
    others = [("t_a", "c_12"), ("t_a", "c_10"), ("t_a", "c_2"), ("t_b", "c_1")]
    append(tables["bronze"], events(others), partition_by="event_date")
    append(tables["bronze"], events([("t_a", "c_1"), ("t_a", "c_1")], start=100), partition_by="event_date")
    if token:
        append(tables["bronze"], events([("t_a", token)], start=200), partition_by="event_date")
    append(tables["silver"], events(others + [("t_a", "c_1")], start=300), partition_by="event_date")
    for name in ("gold", "features", "predictions"):
        append(tables[name], customers(others + [("t_a", "c_1")]))
    append(
        tables["quarantine"],
        quarantine(
            [
                ("t_a", json.dumps({"tenant_id": "t_a", "customer_id": "c_1", "event_type": "x"})),
                ("t_a", json.dumps({"tenant_id": "t_a", "customer_id": "c_12"})),
                ("t_a", '{"tenant_id": "t_a", "customer_id": "c_1'),  # malformed: whole-token match
                ("t_a", '{"tenant_id": "t_a", "customer_id": "c_10'),
                (None, json.dumps({"tenant_id": "t_a", "customer_id": "c_1"})),
                (None, json.dumps({"tenant_id": "t_b", "customer_id": "c_1"})),
            ]
        ),
        partition_by="event_date",
    )
    append(tables["dedicated"], events([("t_d", "c_1")], start=400), partition_by="event_date")
    return tables


class SqliteOnlineStore:
    """A real (SQLite) key-value online store standing in for the one a later issue builds."""

    name = "online_store"

    def __init__(self, path: Path) -> None:
        self.path = path
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE IF NOT EXISTS features (tenant_id TEXT, customer_id TEXT, payload TEXT)")

    def put(self, tenant_id: str, customer_id: str, payload: dict[str, object]) -> None:
        with sqlite3.connect(self.path) as db:
            db.execute("INSERT INTO features VALUES (?, ?, ?)", (tenant_id, customer_id, json.dumps(payload)))

    def erase(self, tenant_id: str, subject_ids: Sequence[str] | None) -> int:
        with sqlite3.connect(self.path) as db:
            if subject_ids is None:
                return db.execute("DELETE FROM features WHERE tenant_id = ?", (tenant_id,)).rowcount
            marks = ",".join("?" * len(subject_ids))
            return db.execute(
                f"DELETE FROM features WHERE tenant_id = ? AND customer_id IN ({marks})",
                (tenant_id, *subject_ids),
            ).rowcount

    def scan(self, tenant_id: str, matches: Callable[[str], bool], *, mentions: Sequence[str] | None = None) -> int:
        with sqlite3.connect(self.path) as db:  # every row is checked: `mentions` is only a hint
            rows = db.execute("SELECT customer_id FROM features WHERE tenant_id = ?", (tenant_id,)).fetchall()
        return sum(1 for (customer,) in rows if matches(customer))

    def customers(self, tenant_id: str) -> list[str]:
        with sqlite3.connect(self.path) as db:
            rows = db.execute("SELECT customer_id FROM features WHERE tenant_id = ?", (tenant_id,)).fetchall()
        return sorted(c for (c,) in rows)


def tenant_customers(table: str, tenant_id: str) -> list[str]:
    """The customer ids a tenant has in a table (filtered after reading: rewritten files hold string_view)."""
    import polars as pl

    from shironzi.lake.delta import read_polars

    frame = read_polars(table, columns=["tenant_id", "customer_id"])
    return sorted(frame.filter(pl.col("tenant_id") == tenant_id)["customer_id"].to_list())


def parquet_files_holding(root: Path, tenant_id: str, is_subject: Callable[[str], bool]) -> list[str]:
    """Every Parquet file under `root` (lake, MLflow artifacts, anything) read directly, independently of the
    code under test: those holding a row of the tenant with a string value that is the subject."""
    import pyarrow.parquet as pq

    found = []
    for path in sorted(root.rglob("*.parquet")):
        if "_delta_log" in path.parts:
            continue
        table = pq.read_table(path)
        if "tenant_id" not in table.column_names:
            continue
        for row in table.to_pylist():
            if row["tenant_id"] == tenant_id and any(is_subject(v) for v in row.values() if isinstance(v, str)):
                found.append(str(path.relative_to(root)))
                break
    return found
