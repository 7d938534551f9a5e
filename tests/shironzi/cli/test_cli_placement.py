"""`shironzi tenants move` and `shironzi placement plan|apply` in-process, on SQLite and PostgreSQL registries:
JSON out, one readable error line and nothing changed on bad input."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import date
from pathlib import Path

import pyarrow as pa
import pytest

from shironzi.lake import append, read_arrow, table_uri
from shironzi.settings import get_settings
from shironzi.tenancy import TenantContext, get_registry
from tests.shironzi.cli._fixtures import CliResult


def _shop(slug: str, events: int) -> str:
    tenant, _ = get_registry().provision_tenant(TenantContext.admin(actor="t", purpose="t"), slug=slug, name=slug,
                                                industry="ecommerce", plan="standard")
    uri = table_uri(get_settings().resolved_lake_uri, layer="bronze", table="events", region="eu-west")
    append(uri, pa.table({"tenant_id": [tenant.id] * events, "event_id": [f"e{i}" for i in range(events)],
                          "event_date": [date(2026, 11, 10)] * events}), partition_by="event_date")
    return tenant.id


def test_tenants_move_and_its_bad_input(cli: Callable[..., CliResult]) -> None:
    tid = _shop("mover", 25)
    code, out, err = cli("tenants", "move", "mover", "--placement", "dedicated", "--json")
    assert code == 0, err
    receipt = json.loads(out)
    assert (receipt["to_placement"], receipt["epoch"], receipt["rows"]) == ("dedicated", 1, 25)
    own = table_uri(get_settings().resolved_lake_uri, layer="bronze", table="events", region="eu-west",
                    placement="dedicated", tenant_id=tid)
    assert read_arrow(own).num_rows == 25
    events = len(get_registry().events())
    for args, message in [
        (("--placement", "dedicated"), "already dedicated"),
        (("--region", "mars-1"), "unknown region"),
        (("--region", "eu-west"), "region moves need multi-region (issue 24)"),
        ((), "say where to"),
    ]:
        code, _, err = cli("tenants", "move", "mover", *args)
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert code == 1 and len(lines) == 1 and message in lines[0], err
    code, _, err = cli("tenants", "move", "ghost", "--placement", "dedicated")
    assert code == 1 and "ghost" in err
    assert len(get_registry().events()) == events and get_registry().placement_epoch(tid) == 1


def test_placement_plan_is_a_dry_run_and_apply_caps_the_moves(
    cli: Callable[..., CliResult], home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _shop("busy-a", 40)
    _shop("busy-b", 30)
    (home / "policy.yaml").write_text("promote_events_per_day: 20\ndemote_events_per_day: 5\npromote_days: 1\n")
    monkeypatch.setenv("SHIRONZI_PLACEMENT_POLICY_FILE", str(home / "policy.yaml"))
    get_settings.cache_clear()
    code, out, err = cli("placement", "plan", "--as-of", "2026-11-10", "--json")
    assert code == 0, err
    assert [(p["slug"], p["to_placement"]) for p in json.loads(out)] == [("busy-a", "dedicated"),
                                                                          ("busy-b", "dedicated")]
    assert get_registry().get_tenant("busy-a").placement == "pooled"
    code, out, err = cli("placement", "apply", "--as-of", "2026-11-10", "--max-moves", "1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert [m["slug"] for m in result["moved"]] == ["busy-a"] and len(result["deferred"]) == 1
    code, _, err = cli("placement", "plan", "--as-of", "11/10/2026")
    assert code == 1 and "--as-of must be YYYY-MM-DD" in err
