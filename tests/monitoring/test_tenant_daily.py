"""tenant_daily on a small planted lake: real registry tenants (one pooled pair, one dedicated), bronze and
quarantine rows written through the kernel, the figures checked day by day."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from tests.ingestion._fixtures import bronze_uri, provision, quarantine_uri

START = date(2026, 3, 1)
DAYS = 40
RENAME_DAY = START + timedelta(days=33)
SILENT_DAY = START + timedelta(days=36)
LATE_ARRIVAL_DAY = START + timedelta(days=38)  # the events of days 34-35 of `late` arrive here
QUARANTINE_DAY = START + timedelta(days=35)


def _at(day: date, hour: int) -> datetime:
    return datetime(day.year, day.month, day.day, hour, tzinfo=UTC)


def _events(tenant_id: str, *, per_day: int, silent: date | None = None, rename: date | None = None,
            late_days: tuple[date, ...] = ()) -> pa.Table:
    """`per_day` order_placed events a day (hours 8..), 3 customers, a null amount on the first event each day."""
    from ingestion.contracts.schema import CANONICAL_SCHEMA

    rows = []
    for d in range(DAYS):
        day = START + timedelta(days=d)
        if day == silent:
            continue
        for i in range(per_day):
            kind = "order_placed" if i % 4 else "session_started"
            key = "item_sku" if rename and day >= rename and kind == "order_placed" else "sku"
            arrives = _at(LATE_ARRIVAL_DAY, 9) if day in late_days else _at(day, 8 + i) + timedelta(minutes=5)
            rows.append({"tenant_id": tenant_id, "event_id": f"{tenant_id}-{d}-{i}", "customer_id": f"c{i % 3}",
                         "event_type": kind,
                         "event_time": _at(day, 8 + i), "event_date": day, "source": "file:landing",
                         "ingested_at": arrives, "amount": None if i == 0 else 10.0 + i,
                         "currency": "EUR", "properties": json.dumps({key: f"s{i}", "qty": 1})})
    return pa.Table.from_pylist(rows, schema=CANONICAL_SCHEMA)


def _quarantined(tenant_id: str | None, day: date, n: int) -> pa.Table:
    from ingestion.contracts.schema import QUARANTINE_SCHEMA

    return pa.Table.from_pylist([
        {"quarantined_at": _at(day, 9), "tenant_id": tenant_id, "reason_code": "wrong_type", "reason": "test",
         "raw_payload": "{}", "source": "file:landing", "position": f"f:{i}", "event_date": day} for i in range(n)
    ], schema=QUARANTINE_SCHEMA)


@pytest.fixture
def planted(home: Path) -> dict[str, str]:
    from shironzi.lake import append

    quiet, busy, own = provision([("quiet", "ecommerce", "standard"), ("busy", "ecommerce", "standard"),
                                  ("own", "ecommerce", "enterprise")], placement={"own": "dedicated"})
    append(bronze_uri(), pa.concat_tables([
        _events(quiet.id, per_day=4, silent=SILENT_DAY, rename=RENAME_DAY),
        _events(busy.id, per_day=8, late_days=(START + timedelta(days=34), START + timedelta(days=35))),
    ]), partition_by="event_date")
    append(bronze_uri(tenant_id=own.id), _events(own.id, per_day=6), partition_by="event_date")
    append(quarantine_uri(), pa.concat_tables([_quarantined(quiet.id, QUARANTINE_DAY, 4),
                                               _quarantined(None, QUARANTINE_DAY, 7)]), partition_by="event_date")
    return {"quiet": quiet.id, "busy": busy.id, "own": own.id}


def test_tenant_daily_figures_on_a_planted_lake(planted: dict[str, str]) -> None:
    import polars as pl

    from monitoring.tenant_daily import build_tenant_daily, tenant_daily_uri
    from shironzi.lake import read_polars, table_version

    start, end = START + timedelta(days=30), START + timedelta(days=DAYS - 1)
    now = _at(end, 23)
    result = build_tenant_daily(start=start, end=end, now=now)
    assert result.tenants == 3 and result.rows == 3 * 10
    table = read_polars(tenant_daily_uri()).sort("tenant_id", "event_date")
    assert table.height == 30 and table["event_date"].min() == start and table["event_date"].max() == end

    def row(slug: str, day: date) -> dict:
        return table.filter((pl.col("tenant_id") == planted[slug]) & (pl.col("event_date") == day)).row(0, named=True)

    normal = row("quiet", start)
    assert normal["events"] == 4 and normal["distinct_customers"] == 3
    assert json.loads(normal["events_by_type"]) == {"order_placed": 3, "session_started": 1}
    assert normal["amount_null_rate"] == pytest.approx(0.25) and normal["currency_null_rate"] == 0.0
    assert normal["last_event_time"] == _at(start, 11) and normal["hours_since_last_event"] == pytest.approx(13.0)
    assert normal["new_properties"] == [] and normal["vanished_properties"] == [] and normal["schema_changes"] == 0
    # the rename: new and vanished on its first day, the old name still missing the next day
    renamed = row("quiet", RENAME_DAY)
    assert renamed["new_properties"] == ["order_placed.item_sku"] and renamed["schema_changes"] == 2
    assert renamed["vanished_properties"] == ["order_placed.sku"]
    after = row("quiet", RENAME_DAY + timedelta(days=1))
    assert after["new_properties"] == [] and after["vanished_properties"] == ["order_placed.sku"]
    # the silent day: a row with no events, freshness carried from the day before
    silent = row("quiet", SILENT_DAY)
    assert silent["events"] == 0 and silent["distinct_customers"] == 0
    assert silent["last_event_time"] == _at(SILENT_DAY - timedelta(days=1), 11)
    assert silent["hours_since_last_event"] == pytest.approx(37.0)
    # quarantine: only the records that claimed the tenant count; the unclaimed ones belong to nobody
    q = row("quiet", QUARANTINE_DAY)
    assert q["quarantined"] == 4 and q["quarantined_share"] == pytest.approx(4 / 8)
    assert row("busy", QUARANTINE_DAY)["quarantined"] == 0
    # the backfill: two days of events counted on their event days, and as late rows on the arrival day
    assert row("busy", START + timedelta(days=34))["events"] == 8
    assert row("busy", LATE_ARRIVAL_DAY)["late_events"] == 16
    assert row("busy", LATE_ARRIVAL_DAY - timedelta(days=1))["late_events"] == 0
    # the dedicated tenant's own bronze table is read too
    assert row("own", start)["events"] == 6

    version = table_version(tenant_daily_uri())
    again = build_tenant_daily(start=start, end=end, now=now)
    assert again.version == version + 1 and read_polars(tenant_daily_uri()).height == 30  # replaced, not appended


def test_a_reversed_range_is_refused_and_writes_nothing(planted: dict[str, str]) -> None:
    from monitoring.tenant_daily import build_tenant_daily, tenant_daily_uri
    from shironzi.errors import InvalidInputError
    from shironzi.lake import table_exists

    with pytest.raises(InvalidInputError, match="before the start"):
        build_tenant_daily(start=START + timedelta(days=5), end=START)
    assert not table_exists(tenant_daily_uri())
