"""The placement policy on real bronze tables and the real registry: usage inputs counted from bronze,
promotion after K days above, demotion after M days below (hysteresis), never for tenants whose plan requires
dedicated placement, and `apply` capped at the moves per run."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from shironzi.errors import InvalidInputError
from shironzi.lake import append, table_uri
from shironzi.settings import get_settings
from shironzi.tenancy import TenantContext, get_registry
from shironzi.tenancy.placement_policy import (
    BronzeUsageInputs,
    PlacementPolicy,
    apply_placement,
    plan_placement,
)

ADMIN = TenantContext.admin(actor="ops@test", purpose="placement tests")
AS_OF = date(2026, 11, 10)
POLICY = PlacementPolicy(promote_events_per_day=20, promote_gb=1000, promote_days=3, demote_events_per_day=5,
                         demote_gb=100, demote_days=4, max_moves_per_run=1)


def _land(tenant_id: str, per_day: dict[date, int], tenant_root: bool = False) -> None:
    rows: dict[str, list[object]] = {"tenant_id": [], "event_id": [], "event_date": []}
    for day, count in per_day.items():
        rows["tenant_id"] += [tenant_id] * count
        rows["event_id"] += [f"{day}-{i}" for i in range(count)]
        rows["event_date"] += [day] * count
    uri = table_uri(get_settings().resolved_lake_uri, layer="bronze", table="events", region="eu-west",
                    placement="dedicated" if tenant_root else "pooled", tenant_id=tenant_id if tenant_root else None)
    append(uri, pa.table(rows), partition_by="event_date")


@pytest.fixture
def tenants(home: Path) -> dict[str, str]:
    registry = get_registry()
    out = {}
    for slug, industry, plan, placement in [
        ("grower", "ecommerce", "standard", None),  # pooled, above the promotion line for 3 days
        ("blip", "ecommerce", "standard", None),  # pooled, above it on 2 of the 3 days only
        ("shrunk", "ecommerce", "standard", "dedicated"),  # dedicated, below the demotion line 4 days
        ("hovering", "ecommerce", "standard", "dedicated"),  # dedicated, between the lines: stays (hysteresis)
        ("clinic", "healthcare", "enterprise", None),  # dedicated by plan, idle: never demoted
    ]:
        tenant, _ = registry.provision_tenant(ADMIN, slug=slug, name=slug, industry=industry, plan=plan,
                                              placement=placement)
        out[slug] = tenant.id
    days = [AS_OF - timedelta(days=n) for n in range(4)]
    _land(out["grower"], {d: 30 for d in days[:3]})
    _land(out["blip"], {days[0]: 30, days[1]: 2, days[2]: 30})
    _land(out["shrunk"], {d: 2 for d in days}, tenant_root=True)
    _land(out["hovering"], {days[0]: 2, days[1]: 10, days[2]: 2, days[3]: 2}, tenant_root=True)
    return out


def test_bronze_usage_inputs_count_events_per_tenant_per_day(tenants: dict[str, str]) -> None:
    usage = BronzeUsageInputs().daily_usage(AS_OF - timedelta(days=1), AS_OF)
    by_key = {(t, d): (e, b) for t, d, e, b in usage.select("tenant_id", "day", "events", "bytes").iter_rows()}
    assert by_key[(tenants["grower"], AS_OF)][0] == 30 and by_key[(tenants["blip"], AS_OF - timedelta(days=1))][0] == 2
    assert by_key[(tenants["shrunk"], AS_OF)][0] == 2
    assert all(b > 0 for _, b in by_key.values())
    assert {d for _, d in by_key} == {AS_OF, AS_OF - timedelta(days=1)}


def test_plan_promotes_after_k_days_and_demotes_with_hysteresis(tenants: dict[str, str]) -> None:
    planned = plan_placement(as_of=AS_OF, policy=POLICY)
    assert [(p.slug, p.to_placement) for p in planned] == [("grower", "dedicated"), ("shrunk", "pooled")]
    assert planned[0].figures == {"days": 3, "min_events_per_day": 30, "min_gb_per_day": 0.0}
    assert "3 days" in planned[0].reason and planned[1].figures["max_events_per_day"] == 2
    assert get_registry().get_tenant("grower").placement == "pooled"  # a plan changes nothing


def test_once_metering_covers_the_window_the_policy_reads_the_usage_table(tenants: dict[str, str]) -> None:
    import polars as pl

    from shironzi.metering.usage import usage_schema, usage_uri

    days = [AS_OF - timedelta(days=n) for n in range(4)]
    schema = usage_schema()
    rows = [{c: 0 for c in schema} | {"tenant_id": tenants[slug], "day": day, "events_landed": events,
                                     "collected_at": None} for slug, events in (("blip", 30), ("grower", 2))
            for day in days]  # metering saw the opposite of bronze: blip grew, grower is quiet
    append(usage_uri(), pl.DataFrame(rows, schema=schema).to_arrow(), partition_by="day")
    planned = plan_placement(as_of=AS_OF, policy=POLICY)
    assert ("blip", "dedicated") in [(p.slug, p.to_placement) for p in planned]
    assert "grower" not in {p.slug for p in planned}


def test_apply_moves_at_most_the_cap_and_defers_the_rest(tenants: dict[str, str]) -> None:
    result = apply_placement(ADMIN, as_of=AS_OF, policy=POLICY)
    assert [m["slug"] for m in result.moved] == ["grower"] and result.moved[0]["rows"] == 90
    assert [m["slug"] for m in result.deferred] == ["shrunk"] and not result.failed
    assert get_registry().get_tenant("grower").placement == "dedicated"
    assert get_registry().get_tenant("shrunk").placement == "dedicated"
    again = apply_placement(ADMIN, as_of=AS_OF, policy=POLICY, max_moves=5)
    assert [m["slug"] for m in again.moved] == ["shrunk"]  # grower now dedicated and busy: stays
    assert get_registry().get_tenant("shrunk").placement == "pooled"
    assert get_registry().get_tenant("clinic").placement == "dedicated"


def test_policy_file_is_loaded_and_checked(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = home / "placement.yaml"
    path.write_text("promote_events_per_day: 500\ndemote_events_per_day: 100\npromote_days: 2\nmax_moves_per_run: 3\n")
    monkeypatch.setenv("SHIRONZI_PLACEMENT_POLICY_FILE", str(path))
    get_settings.cache_clear()
    policy = PlacementPolicy.load()
    assert (policy.promote_events_per_day, policy.promote_days, policy.max_moves_per_run) == (500, 2, 3)
    path.write_text("promote_events_per_day: 10\ndemote_events_per_day: 50\n")
    with pytest.raises(InvalidInputError, match="hysteresis"):
        PlacementPolicy.load()
    path.write_text("promote_every: 1\n")
    with pytest.raises(InvalidInputError, match="unknown keys"):
        PlacementPolicy.load()
