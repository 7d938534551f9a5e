"""`shironzi monitor tenants detect|anomalies` over a real tenant_daily table: the detector's findings are stored
in _platform/monitoring/anomalies, listed per tenant, and bad input is one error line with nothing written."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from ingestion.synthetic.incidents import PLAN_SCHEMA, apply_incidents_to_daily, simulate_daily_counts

START = date(2025, 1, 6)
DAYS = 100


def _shironzi(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    from shironzi.cli.main import run

    try:
        run(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_detect_stores_anomalies_and_lists_one_tenants(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from monitoring.detector import anomalies_uri
    from monitoring.tenant_daily import tenant_daily_uri
    from shironzi.lake import overwrite, read_polars, table_exists

    tenants = [f"t{i:02d}" for i in range(12)]
    clean = simulate_daily_counts(tenants, start=START, days=DAYS, seed=5)
    big = clean.group_by("tenant_id").agg(pl.col("events").median()).sort("events", descending=True)["tenant_id"]
    silent_day = START + timedelta(days=90)
    plan = pl.DataFrame({"tenant_id": [big[0]], "kind": ["silent"], "first_day": [silent_day], "days": [2],
                         "factor": [1.0]}, schema=PLAN_SCHEMA)
    overwrite(tenant_daily_uri(), apply_incidents_to_daily(clean, plan).to_arrow(), partition_by="event_date")

    code, _, err = _shironzi(["monitor", "tenants", "detect", "--start", "2025-04-10", "--end", "2025-04-01"], capsys)
    assert code == 1 and err.strip().count("\n") == 0 and "before the start" in err
    assert not table_exists(anomalies_uri())

    first, last = START + timedelta(days=60), START + timedelta(days=DAYS - 1)
    code, out, err = _shironzi(["monitor", "tenants", "detect", "--start", str(first), "--end", str(last)], capsys)
    assert code == 0, err
    stored = read_polars(anomalies_uri())
    silent = stored.filter(pl.col("kind") == "silent").sort("event_date")
    assert silent.select("tenant_id", "event_date").rows() == [(big[0], silent_day),
                                                               (big[0], silent_day + timedelta(days=1))]
    assert stored["event_date"].min() >= first and "silent 2" in out

    code, out, _ = _shironzi(["monitor", "tenants", "anomalies", "--tenant", big[0], "--start", str(first),
                              "--end", str(last), "--json"], capsys)
    listed = json.loads(out)
    assert code == 0 and {r["tenant_id"] for r in listed} == {big[0]}
    assert {(r["event_date"], r["kind"]) for r in listed} >= {(str(silent_day), "silent")}
    code, out, _ = _shironzi(["monitor", "tenants", "anomalies", "--tenant", big[1], "--start", str(first),
                              "--end", str(last), "--json"], capsys)
    assert code == 0 and all(r["tenant_id"] == big[1] for r in json.loads(out))

    # re-detecting a range replaces it: no duplicates
    _shironzi(["monitor", "tenants", "detect", "--start", str(first), "--end", str(last)], capsys)
    assert read_polars(anomalies_uri()).height == stored.height

    # the alert rule reads the detector's rows as written (tenant_id, kind, score, detected_at)
    from shironzi.alerts.inputs import collect_inputs
    from shironzi.alerts.rules import AnomalyRule
    from shironzi.settings import get_settings

    firing = AnomalyRule("TenantDataAnomaly").evaluate(collect_inputs(get_settings()))
    silent_alerts = [f for f in firing if f.tenant_id == big[0] and f.labels == {"kind": "silent"}]
    assert len(silent_alerts) == 1 and "silent anomaly" in silent_alerts[0].summary
