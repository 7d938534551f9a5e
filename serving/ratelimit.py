"""Per-tenant token buckets by plan: in-process by default, shared through Redis when configured.

A bucket holds up to `burst` tokens (2 s of the plan's rate) and refills continuously; a request takes one
token or is refused with the seconds until one is available (the `Retry-After`). The Redis backend runs
the whole check as one Lua script with the server's clock, so every worker and replica shares one bucket
per tenant. Both backends also count each tenant's requests per UTC day (the tenant's `usage`).
When Redis is unreachable the API keeps answering: the Redis limiter logs one warning and falls back to
in-process buckets (limits then hold per worker) until Redis answers again (retried every few seconds).

The same buckets throttle failed sign-ins (`serving.signin`): keyed by key prefix or client address, with
their own burst, `cost=0` to ask whether a token is there without taking it, and no usage count.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, Protocol

from shironzi.errors import ConfigurationError, ServiceUnavailableError

logger = logging.getLogger("shironzi.serving")

BURST_SECONDS = 2.0
_USAGE_TTL_SECONDS = 3 * 86_400


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    retry_after: float  # seconds until a token is available (0 when allowed)


def burst_for(rate: float) -> float:
    return max(1.0, rate * BURST_SECONDS)


REDIS_RETRY_SECONDS = 5.0  # on the in-process fallback, how often a request tries Redis again


def _today() -> str:
    return datetime.now(UTC).strftime("%Y%m%d")


class RateLimiter(Protocol):
    backend: str

    def hit(
        self, tenant_id: str, rate: float, *, burst: float | None = None, cost: float = 1.0, count_usage: bool = True
    ) -> Decision: ...

    def usage_today(self, tenant_id: str) -> int: ...

    def ping(self) -> None: ...

    def close(self) -> None: ...


class LocalRateLimiter:
    """Token buckets in this process (limits hold per worker)."""

    backend = "memory"

    def __init__(self) -> None:
        self._buckets: dict[str, list[float]] = {}
        self._usage: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()

    def hit(
        self, tenant_id: str, rate: float, *, burst: float | None = None, cost: float = 1.0, count_usage: bool = True
    ) -> Decision:
        burst = burst if burst is not None else burst_for(rate)
        now = time.monotonic()
        day = _today()
        with self._lock:
            if count_usage:
                self._usage[(tenant_id, day)] = self._usage.get((tenant_id, day), 0) + 1
            bucket = self._buckets.get(tenant_id)
            if bucket is None:
                bucket = self._buckets[tenant_id] = [burst, now]
            tokens = min(burst, bucket[0] + (now - bucket[1]) * rate)
            bucket[1] = now
            if tokens >= 1.0:
                bucket[0] = tokens - cost
                return Decision(True, 0.0)
            bucket[0] = tokens
            return Decision(False, (1.0 - tokens) / rate)

    def usage_today(self, tenant_id: str) -> int:
        return self._usage.get((tenant_id, _today()), 0)

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None


_TOKEN_BUCKET_LUA = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[4])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = burst
  ts = now
end
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local retry = 0
if tokens >= 1 then
  tokens = tokens - cost
  allowed = 1
else
  retry = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
if #KEYS > 1 then
  redis.call('INCR', KEYS[2])
  redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
end
return {allowed, tostring(retry)}
"""


class RedisRateLimiter:
    """Token buckets in Redis: one bucket per tenant across every worker and replica."""

    backend = "redis"

    def __init__(self, url: str, *, prefix: str = "shironzi:ratelimit") -> None:
        try:
            import redis
        except ImportError as exc:  # pragma: no cover - redis ships with the spark/serve extras
            raise ConfigurationError("SHIRONZI_REDIS_URL is set but the redis client is not installed") from exc
        self.url = url
        self.prefix = prefix
        self._client: Any = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._script: Any = self._client.register_script(_TOKEN_BUCKET_LUA)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._fallback = LocalRateLimiter()
        self._down_since: float | None = None  # monotonic time of the last failure while on the fallback
        self._state_lock = threading.Lock()

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable and the in-process buckets decide."""
        return self._down_since is not None

    def _use_fallback(self) -> bool:
        """On the fallback and not yet time to try Redis again."""
        down = self._down_since
        return down is not None and time.monotonic() - down < REDIS_RETRY_SECONDS

    def _failed(self, exc: BaseException) -> None:
        with self._state_lock:
            first = self._down_since is None
            self._down_since = time.monotonic()
        if first:
            logger.warning("rate-limit store at %s is unreachable (%s): falling back to in-process rate limits "
                           "(per worker) until it answers again", self._safe_url(), type(exc).__name__)

    def _recovered(self) -> None:
        if self._down_since is not None:
            with self._state_lock:
                self._down_since = None
            logger.warning("rate-limit store at %s answers again: shared rate limits resumed", self._safe_url())

    def _keys(self, tenant_id: str) -> list[str]:
        return [f"{self.prefix}:{{{tenant_id}}}:bucket", f"{self.prefix}:{{{tenant_id}}}:usage:{_today()}"]

    def hit(
        self, tenant_id: str, rate: float, *, burst: float | None = None, cost: float = 1.0, count_usage: bool = True
    ) -> Decision:
        keys = self._keys(tenant_id) if count_usage else self._keys(tenant_id)[:1]
        burst = burst if burst is not None else burst_for(rate)
        if not self._use_fallback():
            try:
                allowed, retry = self._script(keys=keys,
                                              args=[repr(rate), repr(burst), _USAGE_TTL_SECONDS, repr(cost)])
            except self._errors as exc:
                self._failed(exc)
            else:
                self._recovered()
                return Decision(bool(int(allowed)), float(retry))
        return self._fallback.hit(tenant_id, rate, burst=burst, cost=cost, count_usage=count_usage)

    def usage_today(self, tenant_id: str) -> int:
        if not self._use_fallback():
            try:
                value = self._client.get(self._keys(tenant_id)[1])
            except self._errors as exc:
                self._failed(exc)
            else:
                self._recovered()
                return int(value or 0) + self._fallback.usage_today(tenant_id)
        return self._fallback.usage_today(tenant_id)

    def ping(self) -> None:
        try:
            self._client.ping()
        except self._errors as exc:
            self._unreachable(exc)

    def _unreachable(self, exc: BaseException) -> NoReturn:
        """The store is down: the log names it, the caller only learns that it is unavailable."""
        logger.error("rate-limit store at %s is unreachable: %s", self._safe_url(), exc)
        raise ServiceUnavailableError("the rate-limit store is unreachable; retry later") from exc

    def _safe_url(self) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname}:{parts.port or 6379}"

    def close(self) -> None:
        self._client.close()


def make_rate_limiter(redis_url: str | None) -> RateLimiter:
    return RedisRateLimiter(redis_url) if redis_url else LocalRateLimiter()


def retry_after_header(seconds: float) -> str:
    return str(max(1, math.ceil(seconds)))
