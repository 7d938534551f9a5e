"""API requests per tenant, UTC day and route group, counted cheaply: in process, flushed every
`SHIRONZI_USAGE_FLUSH_SECONDS` and when the app stops.

A flush adds this worker's counts to a per-day Redis hash when `SHIRONZI_REDIS_URL` is set (one pipelined
round trip, shared by every worker and replica, kept 8 days), else appends them to
`_platform/metering/api_requests` (one commit). While Redis is unreachable the counts go to the lake instead:
none is lost. `collect_usage` adds up both.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from datetime import UTC, date, datetime
from typing import Any

from shironzi.lake.delta import append, read_polars, table_exists
from shironzi.lake.paths import platform_uri
from shironzi.settings import Settings, get_settings

log = logging.getLogger("shironzi.metering")

ROUTE_GROUPS: tuple[str, ...] = ("events", "churn", "forecasts", "features", "tenant", "webhooks", "other")
REDIS_PREFIX = "shironzi:usage:api"
REDIS_TTL_SECONDS = 8 * 86_400
CLOSE_TIMEOUT_SECONDS = 10.0


def route_group(route: str) -> str:
    """The group a route template is metered under: `/v1/churn/{customer_id}` -> `churn`."""
    parts = [p for p in route.split("/") if p]
    if len(parts) >= 2 and parts[0] == "v1" and parts[1] in ROUTE_GROUPS:
        return parts[1]
    return "other"


def api_requests_uri(settings: Settings | None = None) -> str:
    return platform_uri((settings or get_settings()).resolved_lake_uri, "metering", "api_requests")


def redis_key(day: date) -> str:
    return f"{REDIS_PREFIX}:{day:%Y%m%d}"


def _schema() -> Any:
    import pyarrow as pa

    return pa.schema([("day", pa.date32()), ("tenant_id", pa.string()), ("route_group", pa.string()),
                      ("requests", pa.int64()), ("flushed_at", pa.timestamp("us", tz="UTC"))])


class ApiUsageCounter:
    """One process's request counts, flushed in the background when due and on `close()`."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._counts: Counter[tuple[date, str, str]] = Counter()
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        self._last_flush = time.monotonic()
        self._redis: Any = None
        if settings.redis_url:
            import redis

            self._redis = redis.Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0)

    def count(self, tenant_id: str, route: str) -> None:
        """Count one request of `tenant_id` to the route template `route`."""
        key = (datetime.now(UTC).date(), tenant_id, route_group(route))
        with self._lock:
            self._counts[key] += 1
        if time.monotonic() - self._last_flush >= self.settings.usage_flush_seconds and not self._flushing.locked():
            threading.Thread(target=self._flush_quietly, name="usage-flush", daemon=True).start()

    def pending(self) -> int:
        with self._lock:
            return sum(self._counts.values())

    def _flush_quietly(self) -> None:
        try:
            self.flush()
        except Exception:  # noqa: BLE001 - the counts went back to the buffer; the next flush retries
            log.warning("cannot flush API usage counts", exc_info=True)

    def flush(self) -> int:
        """Write the buffered counts (Redis, else the lake); returns the requests written."""
        with self._flushing:
            with self._lock:
                counts, self._counts = self._counts, Counter()
                self._last_flush = time.monotonic()
            if not counts:
                return 0
            try:
                if not self._to_redis(counts):
                    self._to_lake(counts)
            except Exception:
                with self._lock:
                    self._counts.update(counts)
                raise
            return sum(counts.values())

    def _to_redis(self, counts: Counter[tuple[date, str, str]]) -> bool:
        if self._redis is None:
            return False
        import redis

        try:
            pipe = self._redis.pipeline(transaction=False)
            for (day, tenant_id, group), n in counts.items():
                pipe.hincrby(redis_key(day), f"{tenant_id}|{group}", n)
            for day in {day for day, _, _ in counts}:
                pipe.expire(redis_key(day), REDIS_TTL_SECONDS)
            pipe.execute()
        except (redis.RedisError, OSError) as exc:
            log.warning("usage counts go to the lake: Redis is unreachable (%s)", type(exc).__name__)
            return False
        return True

    def _to_lake(self, counts: Counter[tuple[date, str, str]]) -> None:
        import pyarrow as pa


        now = datetime.now(UTC)
        rows = [{"day": day, "tenant_id": tenant_id, "route_group": group, "requests": n, "flushed_at": now}
                for (day, tenant_id, group), n in sorted(counts.items())]
        append(api_requests_uri(self.settings), pa.Table.from_pylist(rows, schema=_schema()), partition_by="day",
               storage_options=self.settings.storage_options or None)

    def close(self, timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:
        """Flush what is left, waiting at most `timeout` seconds (a store that is down never holds a shutdown)."""
        flusher = threading.Thread(target=self._flush_quietly, name="usage-flush-close", daemon=True)
        flusher.start()
        flusher.join(timeout)
        if flusher.is_alive() or self.pending():
            log.warning("API usage counts not written at shutdown: %d requests", self.pending())
        if self._redis is not None:
            self._redis.close()


def read_api_requests(day: date, settings: Settings) -> Any:
    """Every counted request of `day` (lake and Redis) as a polars frame: tenant_id, route_group, requests."""
    import polars as pl


    parts = []
    uri = api_requests_uri(settings)
    opts = settings.storage_options or None
    if table_exists(uri, storage_options=opts):
        parts.append(read_polars(uri, columns=["tenant_id", "route_group", "requests"], storage_options=opts,
                                 filters=[("day", "=", day)]))
    if settings.redis_url:
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5.0, socket_connect_timeout=5.0)
        try:
            found = client.hgetall(redis_key(day))
        finally:
            client.close()
        fields = [(k.decode() if isinstance(k, bytes) else str(k)).split("|", 1) for k in found]
        parts.append(pl.DataFrame({"tenant_id": [f[0] for f in fields], "route_group": [f[1] for f in fields],
                                   "requests": [int(v) for v in found.values()]},
                                  schema={"tenant_id": pl.String, "route_group": pl.String, "requests": pl.Int64}))
    if not parts:
        return pl.DataFrame(schema={"tenant_id": pl.String, "route_group": pl.String, "requests": pl.Int64})
    return (pl.concat([p.cast({"requests": pl.Int64}) for p in parts], how="vertical_relaxed")
            .group_by("tenant_id", "route_group").agg(pl.col("requests").sum()))
