"""Epoch fencing of lake writers: after a failover or failback, the old region's writers may not commit.

A process that writes for a region names it in `SHIRONZI_WRITER_REGION`. Its first commit records the region's
epoch from the registry's `regions` table (`shironzi.dr`); every later commit re-reads it and is refused
(`FencedError`) once it changed. Every kernel commit path calls `check_fence` before committing, so no writer
can forget it. The read is one indexed row by primary key, on an engine of its own (the lake does not import
the tenancy package, which imports the lake).
"""

from __future__ import annotations

import threading

import sqlalchemy as sa

from shironzi.errors import FencedError
from shironzi.settings import Settings, get_settings

_held: dict[tuple[str, str], int] = {}
_engines: dict[str, sa.Engine] = {}
_lock = threading.Lock()
_EPOCH = sa.text("SELECT epoch FROM regions WHERE region = :region")


def _engine(url: str) -> sa.Engine:
    with _lock:
        engine = _engines.get(url)
        if engine is None:
            engine = _engines[url] = sa.create_engine(url, pool_pre_ping=url.startswith("postgresql"))
        return engine


def read_epoch(region: str, settings: Settings | None = None) -> int:
    """The region's fencing epoch, read fresh (0 before its first failover)."""
    settings = settings or get_settings()
    with _engine(settings.resolved_database_url).connect() as conn:
        value = conn.execute(_EPOCH, {"region": region}).scalar()
    return int(value or 0)


def check_fence(uri: str) -> None:
    """Refuse a commit to `uri` when this process's writer region changed epoch since its first commit."""
    settings = get_settings()
    region = settings.writer_region
    if region is None:
        return
    epoch = read_epoch(region, settings)
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
