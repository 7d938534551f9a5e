"""Registry cache invalidation across processes: a change committed anywhere (the CLI, another API worker)
reaches every running API worker within about a second, not after the key-cache TTL.

The writing process drops its own caches at once and, when `SHIRONZI_REDIS_URL` is set, publishes what
changed on a Redis pub/sub channel. Without Redis the tenant event log is the change counter: every change
appends events with an increasing `sequence`, and each worker polls `max(sequence)` once a second and drops
what the new events touched. `RegistryWatcher` runs the subscriber or the poller in a worker.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from shironzi.settings import Settings
from shironzi.tenancy.events import TenantEvent, row_to_event
from shironzi.tenancy.models import tenant_events, tenants

if TYPE_CHECKING:
    from shironzi.tenancy.registry import Registry

logger = logging.getLogger("shironzi.tenancy")

CHANNEL = "shironzi:registry:invalidate"
POLL_SECONDS = 1.0
MAX_EVENTS_READ = 10_000  # more new events than this in one poll (a bulk import): drop every cache instead
KEY_STATUS_EVENTS = frozenset({"suspended", "resumed", "offboarding_started", "tenant_deleted"})
KEY_EVENTS = frozenset({"key_revoked", "key_issued"})
ROUTING_EVENTS = frozenset({"channel_changed", "rollout_changed"})  # which model version serves which tenant


@dataclass(frozen=True, slots=True)
class Invalidation:
    """What a change makes stale: module toggles and facts of tenants (by id and slug), the key checks of
    tenants whose status changed, the key checks of prefixes; or, with `everything`, all of it."""

    tenants: tuple[str, ...] = ()
    slugs: tuple[str, ...] = ()
    key_tenants: tuple[str, ...] = ()
    prefixes: tuple[str, ...] = ()
    everything: bool = False
    routing: bool = False

    def __bool__(self) -> bool:
        return self.everything or self.routing or bool(self.tenants or self.prefixes)

    def to_json(self) -> str:
        return json.dumps({"tenants": self.tenants, "slugs": self.slugs, "key_tenants": self.key_tenants,
                           "prefixes": self.prefixes, "everything": self.everything, "routing": self.routing})

    @classmethod
    def from_json(cls, raw: str | bytes) -> Invalidation:
        data = json.loads(raw)
        return cls(
            tenants=tuple(data.get("tenants", ())),
            slugs=tuple(data.get("slugs", ())),
            key_tenants=tuple(data.get("key_tenants", ())),
            prefixes=tuple(data.get("prefixes", ())),
            everything=bool(data.get("everything")),
            routing=bool(data.get("routing")),
        )


def invalidation_of(events: Iterable[TenantEvent], slug_of: Callable[[str], str | None]) -> Invalidation:
    """The caches that a batch of committed events makes stale."""
    tenant_ids: dict[str, None] = {}
    key_tenants: dict[str, None] = {}
    prefixes: dict[str, None] = {}
    routing = False
    for event in events:
        routing = routing or event.type in ROUTING_EVENTS
        if event.tenant_id is not None:
            tenant_ids[event.tenant_id] = None
            if event.type in KEY_STATUS_EVENTS:
                key_tenants[event.tenant_id] = None
        if event.type in KEY_EVENTS:
            prefixes[str(event.payload["prefix"])] = None
    slugs = tuple(s for s in (slug_of(t) for t in tenant_ids) if s)
    return Invalidation(tuple(tenant_ids), slugs, tuple(key_tenants), tuple(prefixes), routing=routing)


def publish(settings: Settings, change: Invalidation) -> None:
    """Tell the other processes (Redis pub/sub when configured; the event log speaks for itself otherwise)."""
    if not change or not settings.redis_url:
        return
    try:
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)
        try:
            client.publish(CHANNEL, change.to_json())
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - the change is committed; other workers fall back to their TTL
        logger.warning("could not publish a registry invalidation (others follow within the cache TTL): %s", exc)


class RegistryWatcher:
    """In an API worker: applies the invalidations that other processes publish (or that the event log
    shows), then calls `on_change` (e.g. to drop the worker's own tenant facts)."""

    def __init__(self, registry: Registry, *, on_change: Callable[[Invalidation], None] | None = None) -> None:
        self.registry = registry
        self.on_change = on_change
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.backend = "redis" if registry.settings.redis_url else "poll"
        self._baseline: int | None = None

    def start(self) -> None:
        """Start watching. In poll mode the baseline (the newest event) is read before this returns, so a change
        committed after `start()` is always seen (read lazily in the thread, a change committed in between
        became part of the baseline and was never applied)."""
        if self._thread is None:
            if self.backend == "poll":
                try:
                    self._baseline = self._poll_once(None)
                except Exception as exc:  # noqa: BLE001 - the thread reads the baseline once the registry answers
                    logger.warning("registry change poll failed: %s", exc)
            target = self._subscribe if self.backend == "redis" else self._poll
            self._thread = threading.Thread(target=target, name="shironzi-registry-watch", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _apply(self, change: Invalidation) -> None:
        self.registry.apply_invalidation(change)
        if self.on_change is not None:
            self.on_change(change)

    # --- Redis pub/sub ----------------------------------------------------------------------------------

    def _subscribe(self) -> None:
        import redis

        url = self.registry.settings.redis_url
        assert url is not None
        while not self._stop.is_set():
            client: Any = redis.Redis.from_url(url, socket_connect_timeout=1.0, health_check_interval=10)
            try:
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                self._apply(Invalidation(everything=True))  # what was published while unsubscribed is lost
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        self._apply(Invalidation.from_json(message["data"]))
            except (redis.RedisError, OSError) as exc:
                logger.warning("registry invalidation channel lost (retrying in 1 s): %s", exc)
                self._stop.wait(1.0)
            finally:
                client.close()

    # --- the event log as change counter ---------------------------------------------------------------

    def _poll(self) -> None:
        last = self._baseline
        while not self._stop.wait(0.0 if last is None else POLL_SECONDS):
            try:
                last = self._poll_once(last)
            except Exception as exc:  # noqa: BLE001 - a registry hiccup: try again next second
                logger.warning("registry change poll failed: %s", exc)
                self._stop.wait(POLL_SECONDS)

    def _poll_once(self, last: int | None) -> int:
        engine = self.registry.engine
        with engine.connect() as conn:
            newest = conn.execute(sa.select(sa.func.max(tenant_events.c.sequence))).scalar() or 0
            if last is None or newest <= last:
                return int(newest)
            if newest - last > MAX_EVENTS_READ:
                self._apply(Invalidation(everything=True))
                return int(newest)
            rows = conn.execute(
                sa.select(tenant_events).where(tenant_events.c.sequence > last).order_by(tenant_events.c.sequence)
            )
            events = [row_to_event(r) for r in rows]
            ids = list({e.tenant_id for e in events if e.tenant_id})
            found = conn.execute(sa.select(tenants.c.id, tenants.c.slug).where(tenants.c.id.in_(ids)))
            slugs: dict[str, str] = {str(tid): str(slug) for tid, slug in found}
        self._apply(invalidation_of(events, slugs.get))
        return int(newest)
