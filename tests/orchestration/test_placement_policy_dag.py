"""The daily placement_policy DAG under real Airflow 3 (`airflow dags test` on the embedded defaults): it plans,
then moves at most `max_moves` tenants online (the policy itself is tested in tests/shironzi/tenancy)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from orchestration.cli import dags_test, task_states
from shironzi.settings import get_settings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_placement_policy_dag_plans_then_moves_at_most_the_cap(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from shironzi.lake import append, table_uri
    from shironzi.tenancy import TenantContext, get_registry

    day = dt.date(2026, 11, 10)
    (home / "policy.yaml").write_text("promote_events_per_day: 10\ndemote_events_per_day: 1\npromote_days: 1\n")
    monkeypatch.setenv("SHIRONZI_PLACEMENT_POLICY_FILE", str(home / "policy.yaml"))
    get_settings.cache_clear()
    admin = TenantContext.admin(actor="t", purpose="t")
    ids = []
    for slug, events in [("loud", 30), ("louder", 50), ("quiet", 3)]:
        tenant, _ = get_registry().provision_tenant(admin, slug=slug, name=slug, industry="ecommerce",
                                                    plan="standard")
        ids.append(tenant.id)
        append(table_uri(get_settings().resolved_lake_uri, layer="bronze", table="events", region="eu-west"),
               pa.table({"tenant_id": [tenant.id] * events, "event_id": [f"e{i}" for i in range(events)],
                         "event_date": [day] * events}), partition_by="event_date")
    settings = get_settings()
    code, log_path = dags_test("placement_policy", logical_date=day, conf={"max_moves": 1}, settings=settings)
    states = {r["task_id"]: r["state"] for r in task_states("placement_policy", settings=settings)}
    assert code == 0 and states == {"plan": "success", "apply": "success"}, log_path.read_text()[-3000:]
    placements = {t.slug: t.placement for t in get_registry().list_tenants()[0]}
    assert placements == {"loud": "pooled", "louder": "dedicated", "quiet": "pooled"}
