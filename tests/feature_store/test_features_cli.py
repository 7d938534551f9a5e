"""`shironzi features list|get` and the definitions they show."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from typer.testing import CliRunner

from feature_store.cli import features_app
from feature_store.online import OnlineRow, open_online_store
from feature_store.registry import list_feature_views
from shironzi.settings import Settings

runner = CliRunner()


def test_list_json_describes_every_view_and_feature(home: Path) -> None:
    result = runner.invoke(features_app, ["list", "--json"])
    assert result.exit_code == 0, result.output
    described = json.loads(result.stdout)
    assert [v["name"] for v in described] == [v.name for v in list_feature_views()]
    names = [f["name"] for v in described for f in v["features"]]
    assert len(names) == len(set(names)) >= 40
    activity = next(v for v in described if v["name"] == "customer_activity")
    assert activity["join_keys"] == ["tenant_id", "customer_id"] and activity["table"] == "customer_activity_v1"
    tenant = next(v for v in described if v["name"] == "tenant_context")
    assert tenant["entity"] == "tenant" and tenant["join_keys"] == ["tenant_id"]
    table = runner.invoke(features_app, ["list"])
    assert table.exit_code == 0 and "customer_trends" in table.output


def test_get_reads_the_online_store_of_the_configured_home(settings: Settings) -> None:
    store = open_online_store(settings=settings)
    store.write_rows([OnlineRow("t-1", "customer_activity", "c1", dt.datetime(2024, 1, 7, tzinfo=dt.UTC),
                                {"events_7d": 4})])
    store.close()
    result = runner.invoke(features_app, ["get", "t-1", "c1", "c2", "-f", "customer_activity:events_7d"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == [
        {"tenant_id": "t-1", "customer_id": "c1", "events_7d": 4},
        {"tenant_id": "t-1", "customer_id": "c2", "events_7d": None},
    ]
    bad = runner.invoke(features_app, ["get", "t-1", "c1", "-f", "nope"])
    assert bad.exit_code != 0


def test_materialize_online_only_then_get(settings: Settings) -> None:
    from tests.feature_store._fixtures import provision, write_view_rows

    (shop,) = provision(settings, [("cli-shop", "ecommerce", "standard")])
    write_view_rows(settings, "customer_friction", [
        {"tenant_id": shop.tenant_id, "customer_id": "c1", "snapshot_date": dt.date(2024, 1, 7), "refunds_90d": 1},
        {"tenant_id": shop.tenant_id, "customer_id": "c1", "snapshot_date": dt.date(2024, 1, 14), "refunds_90d": 3},
    ])
    result = runner.invoke(features_app, ["materialize", "--online-only", "--view", "customer_friction"])
    assert result.exit_code == 0, result.output
    assert "online: 1 rows for 1 tenants" in result.output
    got = runner.invoke(features_app, ["get", shop.tenant_id, "c1", "-f", "customer_friction:refunds_90d"])
    assert json.loads(got.stdout)[0]["refunds_90d"] == 3
    clash = runner.invoke(features_app, ["materialize", "--online-only", "--offline-only"])
    assert clash.exit_code != 0
