"""Per-plan quotas with the settings' overrides, and each tenant's lake storage measured per table (dedicated
tables owned whole, pooled tables apportioned by row share), on real Delta tables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import pyarrow as pa
import pytest
from pydantic import ValidationError

from shironzi.lake import append, table_uri
from shironzi.lake.table_log import add_actions
from shironzi.settings import Settings, get_settings
from shironzi.tenancy import TenantContext, get_registry
from shironzi.tenancy.catalog import PLAN_QUOTAS, PLANS
from shironzi.tenancy.quotas import GB, plan_quota, storage_by_tenant, storage_over_quota

ADMIN = TenantContext.admin(actor="test", purpose="quota tests")


def _bytes(uri: str) -> int:
    return sum(add_actions(uri).column("size_bytes").to_pylist())


def test_overrides_replace_single_fields_and_bad_ones_are_refused(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIRONZI_PLAN_QUOTAS", json.dumps({"free": {"ingest_rate": 7}}))
    get_settings.cache_clear()
    free = plan_quota("free")
    assert free.ingest_rate == 7 and free.ingest_burst == PLAN_QUOTAS["free"].ingest_burst
    assert plan_quota("standard") == PLAN_QUOTAS["standard"]
    for bad, words in (({"gold": {"ingest_rate": 1}}, "Input should be 'free', 'standard' or 'enterprise'"),
                       ({"free": {"cpu": 1}}, "Extra inputs are not permitted"),
                       ({"free": {"storage_gb": 0}}, "greater than 0")):
        with pytest.raises(ValidationError, match=words):
            Settings(plan_quotas=bad)
    (plans, _) = get_args(Settings.model_fields["plan_quotas"].annotation)
    assert get_args(plans) == PLANS  # the settings name the catalogue's plans


def test_storage_is_owned_by_dedicated_tenants_and_apportioned_in_pooled_tables(settings: Settings) -> None:
    registry = get_registry()
    small, _ = registry.provision_tenant(ADMIN, slug="small-shop", name="S", industry="ecommerce", plan="free")
    big, _ = registry.provision_tenant(ADMIN, slug="big-shop", name="B", industry="ecommerce", plan="standard")
    own, _ = registry.provision_tenant(ADMIN, slug="own-shop", name="O", industry="ecommerce", plan="enterprise",
                                       placement="dedicated")
    lake = settings.resolved_lake_uri
    pooled = table_uri(lake, layer="bronze", table="events", region="eu-west")
    append(pooled, pa.table({"tenant_id": [small.id] * 100 + [big.id] * 300, "payload": ["x" * 50] * 400}))
    dedicated = table_uri(lake, layer="silver", table="events", region="eu-west", placement="dedicated",
                          tenant_id=own.id)
    append(dedicated, pa.table({"tenant_id": [own.id] * 10, "payload": ["y"] * 10}))

    used = dict(storage_by_tenant().iter_rows())
    assert used[own.id] == _bytes(dedicated)
    # a mixed file's bytes are split by rows in whole bytes that add up to the file (metering's split)
    assert used[small.id] == pytest.approx(_bytes(pooled) / 4, abs=1)
    assert used[big.id] == pytest.approx(_bytes(pooled) * 3 / 4, abs=1)
    assert used[small.id] + used[big.id] == _bytes(pooled)

    tight = settings.model_copy(update={"plan_quotas": {"free": {"storage_gb": used[small.id] / GB / 2}}})
    over = storage_over_quota(tight)
    assert [row["tenant_id"] for row in over] == [small.id]
    assert over[0]["quota_bytes"] == pytest.approx(used[small.id] / 2)
    assert storage_over_quota(settings) == []  # the catalogue's quotas: nobody is over
