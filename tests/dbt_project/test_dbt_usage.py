"""fct_tenant_usage carries the platform metering of `_platform/usage`: after a full build, and after an
incremental one that only a newly metered day triggers (bronze unchanged)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from shironzi.lake.paths import table_uri
from shironzi.settings import Settings
from tests.dbt_project._fixtures import START, TENANTS, meter_usage, sample_events, write_bronze
from transformations.dbt_runner import bronze_events_uri, run_dbt_build

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REGION = "eu-west"
METERED_AT = dt.datetime(2024, 6, 2, tzinfo=dt.UTC)


def _usage(settings: Settings) -> dict[tuple[str, dt.date], dict[str, object]]:
    uri = table_uri(settings.resolved_lake_uri, layer="gold", table="fct_tenant_usage", region=REGION)
    return {(r["tenant_id"], r["usage_date"]): r for r in pl.read_delta(uri).to_dicts()}


def test_fct_tenant_usage_carries_the_platform_metering(module_settings: Settings) -> None:
    write_bronze(bronze_events_uri(module_settings, REGION), sample_events(days=14))
    quiet_day = START + dt.timedelta(days=40)  # metered, no event that day
    meter_usage(module_settings, [("t-shop", START, 7), ("t-shop", quiet_day, 3), ("t-dark", START, 5)], METERED_AT)
    first = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)
    assert first.success, first.failures
    rows = _usage(module_settings)
    shop = rows[("t-shop", START)]
    assert (shop["events_landed"], shop["bytes_stored"], shop["api_requests"]) == (7, 7000, 14)
    assert shop["compute_seconds"] == pytest.approx(0.7) and shop["events"] > 0  # beside the event-day figures
    quiet = rows[("t-shop", quiet_day)]
    assert (quiet["events"], quiet["rows_ingested"], quiet["events_landed"]) == (0, 0, 3)
    assert not any(t == "t-dark" for t, _ in rows)  # analytics off: not in the mart
    unmetered = rows[("t-clinic", START)]
    assert (unmetered["events_landed"], unmetered["metered_at"]) == (0, None)

    # a day metered later reaches the mart in an incremental build, although bronze did not change
    later = START + dt.timedelta(days=1)
    meter_usage(module_settings, [("t-clinic", later, 11)], METERED_AT + dt.timedelta(days=1))
    second = run_dbt_build(region=REGION, tenants=TENANTS, settings=module_settings)
    assert second.success, second.failures
    again = _usage(module_settings)
    assert again[("t-clinic", later)]["events_landed"] == 11
    assert again[("t-shop", START)]["events_landed"] == 7
    assert len(again) == len(rows) + (("t-clinic", later) not in rows)  # a new row only if it had no events
