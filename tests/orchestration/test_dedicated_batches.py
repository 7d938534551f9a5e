"""The dbt_build DAG's dedicated tenants: batches for the mapped task (1,000 dedicated tenants -> 40 tasks)."""

from __future__ import annotations

import pytest

from orchestration.pipeline import dedicated_batches
from shironzi.errors import InvalidInputError
from shironzi.settings import Settings


def test_a_thousand_dedicated_tenants_make_forty_batches_each_tenant_once(tmp_path) -> None:  # type: ignore[no-untyped-def]
    plan = {"dedicated": {"us-east": [f"u{i:04d}" for i in range(400)], "eu-west": [f"e{i:04d}" for i in range(600)]}}
    batches = dedicated_batches(plan, settings=Settings(home=tmp_path))
    assert len(batches) == 40 and all(len(batch) == 25 for batch in batches)
    pairs = [tuple(pair) for batch in batches for pair in batch]
    assert len(pairs) == len(set(pairs)) == 1000
    assert pairs[0] == ("eu-west", "e0000") and pairs[-1] == ("us-east", "u0399")
    sizes = [len(b) for b in dedicated_batches(plan, batch_size=300, settings=Settings(home=tmp_path))]
    assert sizes == [300, 300, 300, 100]
    assert dedicated_batches({"dedicated": {}}, settings=Settings(home=tmp_path)) == []


def test_a_batch_size_below_one_is_refused(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidInputError):
        dedicated_batches({"dedicated": {"eu-west": ["a"]}}, batch_size=-1, settings=Settings(home=tmp_path))
