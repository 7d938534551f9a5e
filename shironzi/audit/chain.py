"""One day's hash chain checked link by link: the check `verify` reports and `digests` runs before it signs."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from shironzi.audit.events import GENESIS_HASH, event_hash


@dataclass(frozen=True)
class BrokenLink:
    """Where a day's chain stops being trustworthy, and why."""

    day: dt.date
    seq: int
    reason: str
    expected: str
    found: str


def check_day(day: dt.date, rows: list[dict[str, Any]]) -> BrokenLink | None:
    """The first broken link of a day's chain (rows in seq order), or None when it links from the genesis."""
    expected_seq, prev = 0, GENESIS_HASH
    for row in rows:
        if row["seq"] != expected_seq:
            return BrokenLink(
                day,
                expected_seq,
                "event missing, inserted or reordered",
                f"seq {expected_seq}",
                f"seq {row['seq']}",
            )
        if row["prev_hash"] != prev:
            return BrokenLink(
                day, row["seq"], "prev_hash does not link to the previous event", prev, row["prev_hash"]
            )
        recomputed = event_hash(row)
        if recomputed != row["hash"]:
            return BrokenLink(
                day, row["seq"], "event content does not match its hash", recomputed, row["hash"]
            )
        if row["event_time"].date() != day:
            return BrokenLink(
                day,
                row["seq"],
                "event stored under another day's chain",
                day.isoformat(),
                row["event_time"].date().isoformat(),
            )
        expected_seq, prev = expected_seq + 1, row["hash"]
    return None
