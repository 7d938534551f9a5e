"""The SQL connector: incremental watermark loads from SQLite and a real PostgreSQL server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from ingestion.batch import current_watermark, ingest_sql
from tests.ingestion._fixtures import bronze_uri, provision, read_all


def _rows(tenant: str, start: int, n: int) -> list[dict[str, object]]:
    from ingestion.contracts import get_contract

    spec = get_contract("education").event_type("lesson_completed")
    props = {
        p.name: {"string": "x", "int": 1, "float": 1.5, "bool": True, "timestamp": "2025-03-01T00:00:00Z"}[
            p.type
        ]
        for p in spec.properties
    }
    import json

    base = datetime(2025, 3, 1, tzinfo=UTC)
    return [
        {
            "id": i,
            "tenant_id": tenant,
            "event_id": f"e{i}",
            "customer_id": "c1",
            "event_type": "lesson_completed",
            "event_time": (base + timedelta(hours=i)).isoformat(),
            "amount": None,
            "currency": None,
            "properties": json.dumps(props),
            "updated_at": base + timedelta(minutes=i),
        }
        for i in range(start, start + n)
    ]


def _load(url: str, rows: list[dict[str, object]]) -> None:
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    table = sa.Table(
        "app_events",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        *(
            sa.Column(c, sa.String)
            for c in ("tenant_id", "event_id", "customer_id", "event_type", "event_time")
        ),
        sa.Column("amount", sa.Float),
        sa.Column("currency", sa.String),
        sa.Column("properties", sa.String),
        sa.Column("updated_at", sa.DateTime),
    )
    meta.create_all(engine)
    with engine.begin() as conn:
        conn.execute(table.insert(), rows)
    engine.dispose()


def _incremental(url: str, tenant: str, watermark: str) -> None:
    _load(url, _rows(tenant, 0, 30))
    first = ingest_sql(
        url, table="app_events", watermark=watermark, source_name="crm", chunk_rows=7, check_quality=False
    )
    assert first.totals.landed == 30 and first.flushes >= 4 and first.totals.balanced()
    assert read_all(bronze_uri()).height == 30
    again = ingest_sql(url, table="app_events", watermark=watermark, source_name="crm", check_quality=False)
    assert again.totals.received == 0
    _load(url, _rows(tenant, 30, 5))
    third = ingest_sql(url, table="app_events", watermark=watermark, source_name="crm", check_quality=False)
    assert third.totals.received == 5 and third.totals.landed == 5
    assert read_all(bronze_uri()).height == 35
    assert current_watermark("crm") is not None


@pytest.mark.parametrize("watermark", ["id", "updated_at"])
def test_sqlite_incremental_by_int_and_timestamp_watermark(home: Path, watermark: str) -> None:
    (tenant,) = provision([("school-one", "education", "free")])
    _incremental(f"sqlite:///{home / 'source.db'}", tenant.id, watermark)


@pytest.mark.integration
def test_postgres_incremental_watermark(home: Path, pg_database_url: str) -> None:
    (tenant,) = provision([("school-one", "education", "free")])
    _incremental(pg_database_url, tenant.id, "updated_at")


def test_unsupported_watermark_type_is_a_clear_error(home: Path) -> None:
    from shironzi.errors import InvalidInputError

    (tenant,) = provision([("school-one", "education", "free")])
    url = f"sqlite:///{home / 'source.db'}"
    _load(url, _rows(tenant.id, 0, 3))
    with pytest.raises(InvalidInputError, match="watermark column 'event_id'"):
        ingest_sql(url, table="app_events", watermark="event_id", source_name="crm", check_quality=False)
    assert read_all(bronze_uri()).is_empty()
