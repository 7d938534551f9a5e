"""Circuit breakers for the API's backends, so an outage degrades the API instead of stalling it.

A breaker per dependency (`online-store`, `kafka`): after `failures` consecutive failures it OPENS, and calls
are refused at once (no socket timeout per request) for `cooldown_s`; then it HALF-OPENS and lets one call
through as a trial: a success closes it, a failure opens it again for another cool-down. What a refused
call does instead is the caller's choice: the churn API serves the latest batch score with
`X-Shironzi-Degraded: online-store`; `POST /v1/events` answers 503 with `Retry-After` (it never answers 202
for an event the broker has not acknowledged, so no accepted event is lost).

Metrics (labels: the dependency, never a tenant): `shironzi_api_degraded_total` counts answers served
degraded, `shironzi_api_circuit_open` is 1 while a breaker is open.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

BreakerState = Literal["closed", "open", "half_open"]
DEGRADED_HEADER = "X-Shironzi-Degraded"

log = logging.getLogger("shironzi.serving")


class BreakerMetrics:
    """The breakers' metrics, in the API's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.degraded = Counter(
            "shironzi_api_degraded_total", "Answers served degraded because a backend's breaker was open or a "
            "call to it failed, by dependency.", ["dependency"], registry=registry,
        )
        self.open = Gauge(
            "shironzi_api_circuit_open", "1 while the circuit breaker of a dependency is open.", ["dependency"],
            registry=registry,
        )


class CircuitBreaker:
    """Closed -> (N consecutive failures) -> open -> (cool-down) -> half-open -> one trial -> closed or open."""

    def __init__(self, name: str, *, failures: int = 3, cooldown_s: float = 10.0,
                 metrics: BreakerMetrics | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.name = name
        self.failure_threshold = max(1, failures)
        self.cooldown_s = cooldown_s
        self.metrics = metrics
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_running = False
        if metrics is not None:
            metrics.open.labels(dependency=name).set(0)

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._state()

    def _state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        return "half_open" if self._clock() - self._opened_at >= self.cooldown_s else "open"

    def retry_after(self) -> float:
        """Seconds until the breaker lets a trial call through (0 when it is not open)."""
        with self._lock:
            if self._opened_at is None:
                return 0.0
            return max(0.0, self.cooldown_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """May a call go to the dependency now? Half-open lets one trial through at a time."""
        with self._lock:
            state = self._state()
            if state == "closed":
                return True
            if state == "half_open" and not self._trial_running:
                self._trial_running = True
                return True
            return False

    def succeeded(self) -> None:
        with self._lock:
            was_open = self._opened_at is not None
            self._failures, self._opened_at, self._trial_running = 0, None, False
        if was_open:
            log.warning("circuit %s closed: the dependency answers again", self.name)
            if self.metrics is not None:
                self.metrics.open.labels(dependency=self.name).set(0)

    def failed(self) -> None:
        with self._lock:
            self._failures += 1
            trial, self._trial_running = self._trial_running, False
            opening = trial or (self._opened_at is None and self._failures >= self.failure_threshold)
            if opening:
                self._opened_at = self._clock()
        if opening:
            log.warning("circuit %s open for %.0fs after %d failure(s)", self.name, self.cooldown_s, self._failures)
            if self.metrics is not None:
                self.metrics.open.labels(dependency=self.name).set(1)

    def abandoned(self) -> None:
        """An allowed call that never reached the dependency: a half-open trial slot is free again."""
        with self._lock:
            self._trial_running = False

    def degraded(self) -> None:
        """Count one answer served degraded because of this dependency."""
        if self.metrics is not None:
            self.metrics.degraded.labels(dependency=self.name).inc()
