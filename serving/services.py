"""What one API app holds: the registry, the online store, the model, the limiter, metrics and tracer."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from feature_store.online import open_online_store
from serving.breaker import BreakerMetrics, CircuitBreaker
from serving.model import ModelHolder
from serving.ratelimit import RateLimiter, make_rate_limiter
from serving.signin import FailedSignInAudit, SignInThrottle
from serving.telemetry import ApiMetrics
from shironzi.errors import ServiceUnavailableError
from shironzi.intake import IntakeSink, event_intake
from shironzi.metering.api_requests import ApiUsageCounter
from shironzi.settings import Settings
from shironzi.tenancy.invalidation import Invalidation, RegistryWatcher
from shironzi.tenancy.registry import Registry


@dataclass(frozen=True, slots=True)
class TenantFacts:
    """The few tenant fields a request needs (cached for the module-cache TTL)."""

    id: str
    slug: str
    industry: str
    plan: str
    status: str
    region: str
    placement: str


EVENTS_TOPIC_PARTITIONS = 4
logger = logging.getLogger("shironzi.serving")


class ApiServices:
    """Long-lived collaborators of one app instance; built by `create_app`, closed on shutdown."""

    def __init__(self, settings: Settings, *, metrics: ApiMetrics, tracer: Any, registry: Registry) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tracer = tracer
        self.registry = registry
        self.limiter: RateLimiter = make_rate_limiter(settings.redis_url)
        self.usage = ApiUsageCounter(settings)  # per tenant and route group, flushed to Redis or the lake
        self.signin_throttle = SignInThrottle(self.limiter)
        self.signin_audit = FailedSignInAudit()
        self.model = ModelHolder(settings, on_version=metrics.set_model_version)
        breaker_metrics = BreakerMetrics(metrics.registry)
        self.online_breaker, self.kafka_breaker = (
            CircuitBreaker(name, failures=settings.api_breaker_failures,
                           cooldown_s=settings.api_breaker_cooldown_seconds, metrics=breaker_metrics)
            for name in ("online-store", "kafka")
        )
        self._online: Any = None
        self._sink: IntakeSink | None = None
        self._sink_lock = threading.Lock()
        self._tenants: dict[str, tuple[float, TenantFacts]] = {}
        # revocations, suspensions and module toggles made by other processes reach this worker within ~1 s
        self.registry_watch = RegistryWatcher(registry, on_change=self._registry_changed)
        metrics.set_model_version("shironzi-churn", None)

    # tenants ---------------------------------------------------------------------------------------------

    def tenant(self, tenant_id: str) -> TenantFacts:
        hit = self._tenants.get(tenant_id)
        now = time.monotonic()
        if hit is not None and hit[0] >= now:
            return hit[1]
        row = self.registry.get_tenant(tenant_id)
        facts = TenantFacts(row.id, row.slug, row.industry, row.plan, row.status, row.region, row.placement)
        ttl = self.settings.module_cache_ttl_seconds
        if ttl > 0:
            self._tenants[tenant_id] = (now + ttl, facts)
        return facts

    def forget_tenant(self, tenant_id: str) -> None:
        self._tenants.pop(tenant_id, None)

    def _registry_changed(self, change: Invalidation) -> None:
        if change.routing or change.everything:  # a release channel or rollout moved: re-route in the background
            self.model.refresh()
        if change.everything:
            self._tenants.clear()
        for tenant_id in change.tenants:
            self.forget_tenant(tenant_id)

    def rate_for(self, plan: str) -> float:
        return float(self.settings.api_rate_limits.get(plan, self.settings.api_rate_limits.get("free", 10.0)))

    # backends ---------------------------------------------------------------------------------------------

    @property
    def online_store(self) -> Any:
        if self._online is None:
            self._online = open_online_store(settings=self.settings)
        return self._online

    def sink(self) -> IntakeSink:
        """The Kafka producer for event intake (created on first use, with the events topic if missing)."""
        with self._sink_lock:
            if self._sink is None:
                try:
                    self._sink = event_intake().open_sink(
                        self.settings, topic=self.settings.api_events_topic, partitions=EVENTS_TOPIC_PARTITIONS
                    )
                except ServiceUnavailableError as exc:  # its text may name the server's home: log it only
                    logger.error("event intake has no broker: %s %s", exc.message, exc.details)
                    raise ServiceUnavailableError("event intake is unavailable: no broker is reachable") from None
            return self._sink

    def drop_sink(self) -> None:
        """Forget a producer whose flush failed: its late delivery reports would fail the next flush, so the
        next call opens a fresh one (the events it did not deliver were not accepted)."""
        with self._sink_lock:
            sink, self._sink = self._sink, None
        if sink is not None:
            with contextlib.suppress(Exception):  # it already failed: nothing more to report
                sink.close(0.5)

    def close(self) -> None:
        self.registry_watch.stop()
        self.model.stop()
        self.signin_audit.close()
        if self._sink is not None:
            with contextlib.suppress(Exception):  # shutting down: nothing left to report to
                self._sink.close(5.0)
            self._sink = None
        if self._online is not None:
            self._online.close()
            self._online = None
        self.limiter.close()
        self.usage.close()
