"""models.common helpers that every model's training and scoring lean on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from deltalake import WriterProperties, write_deltalake

from models.common import group_rows, read_pinned
from shironzi.settings import get_settings


def test_group_rows_gives_each_key_its_rows_in_order_from_one_sort() -> None:
    rng = np.random.default_rng(5)
    keys = rng.choice([f"t{n:05d}" for n in range(300)], 5_000)
    grouped = group_rows(keys.tolist())
    assert list(grouped) == sorted(set(keys.tolist()))  # every key once, sorted
    for key, rows in grouped.items():
        assert rows.tolist() == np.flatnonzero(keys == key).tolist()  # what the per-key scan found, ascending
    assert sum(len(rows) for rows in grouped.values()) == keys.size
    assert all(type(key) is str for key in grouped)  # plain keys: dict lookups by str work
    assert group_rows([]) == {}



def test_read_pinned_bounds_the_tenant_range_and_reads_exactly_the_tenants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The `in` list comes with a tenant_id range (which prunes the row groups of a table z-ordered by tenant: an
    `in` list alone reads them all), and the chunk still gets exactly its tenants' rows."""
    from models import common

    tenants = [f"t{n:04d}" for n in range(2_000)]
    rows = pa.table({"tenant_id": [t for t in tenants for _ in range(20)], "value": list(range(40_000))})
    uri = str(tmp_path / "sorted")
    write_deltalake(uri, rows, writer_properties=WriterProperties(max_row_group_size=1_000))
    chunk = [*tenants[700:725], "t9999"]
    seen: list[object] = []
    read = common.read_arrow
    monkeypatch.setattr(common, "read_arrow", lambda *a, **kw: seen.append(kw["filters"]) or read(*a, **kw))
    got, version = read_pinned(uri, tenant_ids=chunk, settings=get_settings())
    assert version == 0 and got.num_rows == 25 * 20
    assert sorted(set(got.column("tenant_id").to_pylist())) == tenants[700:725]
    assert seen == [[("tenant_id", ">=", "t0700"), ("tenant_id", "<=", "t9999"), ("tenant_id", "in", chunk)]]
