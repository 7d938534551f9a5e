"""Epoch fencing of lake writers: after a failover or failback, the old region's writers may not commit.

A process that writes for a region names it in `SHIRONZI_WRITER_REGION`. Its first commit records the region's
epoch from the registry; every later commit re-reads it and is refused (`FencedError`) once it changed. Every
kernel commit path calls `check_fence` before committing, so no writer can forget it.
"""

from __future__ import annotations

import threading

from shironzi.errors import FencedError
from shironzi.settings import get_settings

_held: dict[tuple[str, str], int] = {}
_lock = threading.Lock()


def check_fence(uri: str) -> None:
    """Refuse a commit to `uri` when this process's writer region changed epoch since its first commit."""
    settings = get_settings()
    region = settings.writer_region
    if region is None:
        return
    from shironzi.dr.regions import region_epoch

    epoch = region_epoch(region, settings)
    key = (settings.resolved_database_url, region)
    with _lock:
        held = _held.setdefault(key, epoch)
    if epoch != held:
        raise FencedError(
            f"commit to {uri} refused: region {region!r} moved to epoch {epoch} (this writer holds {held}); "
            "restart the writer where the region is served now", region=region, epoch=epoch, held=held)


def held_epoch(region: str) -> int | None:
    """The epoch this process holds for `region` (None before its first commit)."""
    return _held.get((get_settings().resolved_database_url, region))


def release_fences() -> None:
    """Forget the held epochs (tests; a restarted writer takes the current epoch)."""
    with _lock:
        _held.clear()
