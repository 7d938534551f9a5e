"""The prediction writes go through the kernel, so they hold the table's shared lease like every lake write."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from models.predictions import replace_slice
from shironzi.errors import LeaseBusyError
from shironzi.lake.delta import read_arrow, table_exists
from shironzi.settings import get_settings
from tests.shironzi.lake._fixtures import lease_held_elsewhere


def test_a_prediction_write_waits_for_an_erasure_holding_the_table(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHIRONZI_LEASE_TIMEOUT_SECONDS", "0.3")
    get_settings.cache_clear()
    settings = get_settings()
    uri = f"{settings.resolved_lake_uri}/eu-west/predictions/churn_scores"
    day = dt.date(2024, 5, 1)
    rows = pa.table({"tenant_id": ["t_a"], "customer_id": ["c_1"], "score_date": [day], "probability": [0.4]})
    with (
        lease_held_elsewhere(uri, "exclusive"),  # an erasure holds the predictions table
        pytest.raises(LeaseBusyError, match="eu-west/predictions/churn_scores"),
    ):
        replace_slice(uri, rows, partition="score_date", day=day, tenant_ids=["t_a"], settings=settings)
    assert not table_exists(uri)  # nothing was written while the erasure held the table
    assert replace_slice(uri, rows, partition="score_date", day=day, tenant_ids=["t_a"], settings=settings) is not None
    assert read_arrow(uri).num_rows == 1
