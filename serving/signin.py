"""Failed sign-ins: throttled per key prefix and per client address, and audited once per window.

Guessing a key's secret (a wrong secret, a malformed key) takes a token from two buckets of the API's rate
limiter (`serving.ratelimit`: in-process, or shared through Redis): one per key prefix and one per client
address. An empty bucket makes every later unverified attempt a 429 with `Retry-After`, until it refills. A
key whose exact check is cached as valid is not an attempt and is never throttled.

Every authentication failure is audited, but a flood must not cost one durable write each: the first
failure of a (client address, key prefix) in a window is written at once; the rest of that window are
counted in memory and written as one aggregated `api_auth_failed` event when the window closes (from a
background thread, or at shutdown).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from serving.ratelimit import RateLimiter
from shironzi.audit.events import AuditEvent
from shironzi.audit.log import get_audit_log
from shironzi.errors import InvalidKeyError, MalformedKeyError, RateLimitedError, ShironziError

logger = logging.getLogger("shironzi.serving")

WINDOW_SECONDS = 60.0
FAILURES_PER_PREFIX = 10  # wrong secrets for one key prefix per window, then 429
FAILURES_PER_ADDRESS = 30  # wrong or malformed keys from one client address per window, then 429
MAX_TRACKED = 10_000  # (address, prefix) windows held in memory; beyond it they fold into one per address
GUESSES = (InvalidKeyError, MalformedKeyError)


def _buckets(prefix: str | None, address: str) -> list[tuple[str, float]]:
    buckets = [(f"signin:addr:{address}", float(FAILURES_PER_ADDRESS))]
    if prefix:
        buckets.append((f"signin:prefix:{prefix}", float(FAILURES_PER_PREFIX)))
    return buckets


class SignInThrottle:
    """Token buckets of failed sign-ins, per key prefix and per client address."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    def check(self, prefix: str | None, address: str) -> None:
        """Raise a 429 when this prefix or address has used up its failures (takes no token)."""
        for bucket, burst in _buckets(prefix, address):
            decision = self.limiter.hit(bucket, burst / WINDOW_SECONDS, burst=burst, cost=0.0, count_usage=False)
            if not decision.allowed:
                what = "this API key" if bucket.startswith("signin:prefix") else "this client address"
                raise RateLimitedError(
                    f"too many failed sign-ins for {what}; retry after {decision.retry_after:.0f}s",
                    retry_after=round(decision.retry_after, 3),
                )

    def failed(self, prefix: str | None, address: str) -> None:
        """One failed guess: a token from each bucket."""
        for bucket, burst in _buckets(prefix, address):
            self.limiter.hit(bucket, burst / WINDOW_SECONDS, burst=burst, count_usage=False)


@dataclass
class _Window:
    started: float
    first_event: dict[str, Any]
    count: int = 0  # failures after the first (the first was written at once)
    codes: dict[str, int] = field(default_factory=dict)


class FailedSignInAudit:
    """One durable audit event for the first failure of a (address, prefix) per window, then one aggregate."""

    def __init__(self, *, window_seconds: float = WINDOW_SECONDS) -> None:
        self.window_seconds = window_seconds
        self._windows: dict[tuple[str, str | None], _Window] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def record(self, *, address: str, prefix: str | None, code: str, event: Callable[[], dict[str, Any]]) -> None:
        """A failed authentication; `event()` builds the AuditEvent fields, only when the first of its window."""
        now = time.monotonic()
        with self._lock:
            key = (address, prefix)
            if key not in self._windows and len(self._windows) >= MAX_TRACKED:
                key = (address, "*")
            window = self._windows.get(key)
            if window is not None and now - window.started < self.window_seconds:
                window.count += 1
                window.codes[code] = window.codes.get(code, 0) + 1
                return
            window = self._windows[key] = _Window(started=now, first_event={})
            self._start()
        window.first_event = fields = event()  # outside the lock: it may look the key's tenant up
        _write(fields, durable=True)

    def flush(self, *, everything: bool = False) -> int:
        """Write the aggregate of each closed window (all of them with `everything`); returns how many."""
        now = time.monotonic()
        with self._lock:
            due = [k for k, w in self._windows.items() if everything or now - w.started >= self.window_seconds]
            closed = [self._windows.pop(k) for k in due]
        written = 0
        for window in closed:
            if window.count:
                _write(_aggregate(window, self.window_seconds), durable=True)
                written += 1
        return written

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="shironzi-signin-audit", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(min(5.0, self.window_seconds / 4)):
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - the next round retries; the log says why
                logger.exception("could not write the aggregated failed sign-in audit events")

    def close(self) -> None:
        self._stop.set()
        self.flush(everything=True)


def _aggregate(window: _Window, window_seconds: float) -> dict[str, Any]:
    first = window.first_event
    return {
        **first,
        "request_id": None,
        "details": {
            "aggregated": True,
            "failures": window.count,
            "codes": dict(window.codes),
            "window_seconds": window_seconds,
            "first_request_id": first.get("request_id"),
        },
    }


def _write(fields: dict[str, Any], *, durable: bool) -> None:
    try:
        get_audit_log().record(AuditEvent(**fields), durable=durable)
    except ShironziError:  # the refusal stands even when the audit store is down; the writer retries
        logger.error("could not write the failed sign-in audit event")
