"""Fixtures for the lake tests: a lake root under the per-test SHIRONZI_HOME and an event-batch factory."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pytest

from shironzi.lake.paths import table_uri
from shironzi.settings import get_settings
from tests.shironzi.lake._fixtures import MakeEvents


@pytest.fixture
def lake_root(home: Path) -> str:
    """The lake root of the test's SHIRONZI_HOME."""
    return get_settings().resolved_lake_uri


@pytest.fixture
def events_uri(lake_root: str) -> str:
    return table_uri(lake_root, layer="bronze", table="events", region="eu-west")


@pytest.fixture
def make_events() -> MakeEvents:
    """Canonical-looking event rows: random tenants and days, unique event ids per seed."""

    def build(
        n: int,
        *,
        seed: int = 0,
        tenants: int = 10,
        days: Sequence[int] = (1,),
        tenant_ids: Sequence[str] | None = None,
    ) -> pa.Table:
        rng = random.Random(seed)
        pool = list(tenant_ids) if tenant_ids else [f"tenant_{i:03d}" for i in range(tenants)]
        return pa.table(
            {
                "tenant_id": [rng.choice(pool) for _ in range(n)],
                "event_id": [f"ev-{seed}-{i}" for i in range(n)],
                "event_type": [rng.choice(["view", "purchase", "login"]) for _ in range(n)],
                "event_date": [dt.date(2024, 1, rng.choice(list(days))) for _ in range(n)],
                "amount": [round(rng.random() * 100, 2) for _ in range(n)],
            }
        )

    return build
