"""models.common helpers that every model's training and scoring lean on."""

from __future__ import annotations

import numpy as np

from models.common import group_rows


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
