"""The plan of bad records: which simulated events get a broken copy, and of which kind."""

from collections.abc import Sequence

import numpy as np
import polars as pl

from shironzi.errors import InvalidInputError

BAD_KINDS: tuple[str, ...] = (
    "malformed_json",
    "missing_field",
    "wrong_type",
    "unknown_tenant",
    "unknown_event_type",
    "future_timestamp",
    "duplicate",
)


def plan_bad_records(
    n_events: int, *, share: float, kinds: Sequence[str], rng: np.random.Generator
) -> pl.DataFrame:
    """Which events get a bad copy: `share * n_events` records split evenly over `kinds`."""
    schema = {"seq": pl.Int64, "kind": pl.String, "variant": pl.Int64}
    unknown = set(kinds) - set(BAD_KINDS)
    if unknown:
        raise InvalidInputError(
            f"unknown bad record kind(s) {sorted(unknown)}; known: {', '.join(BAD_KINDS)}"
        )
    if not 0 <= share <= 0.5:
        raise InvalidInputError(f"bad share must be between 0 and 0.5, got {share}")
    total = round(share * n_events) if kinds else 0
    if total == 0:
        return pl.DataFrame(schema=schema)
    per_kind = np.full(len(kinds), total // len(kinds))
    per_kind[: total % len(kinds)] += 1
    sources = np.sort(rng.choice(n_events, size=total, replace=False))
    labels = np.repeat(np.asarray(list(kinds), dtype=object), per_kind)
    rng.shuffle(labels)
    return pl.DataFrame(
        {"seq": sources, "kind": labels, "variant": rng.integers(0, 1 << 30, size=total)}, schema=schema
    )
