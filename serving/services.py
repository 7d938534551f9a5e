"""What one API app holds: the registry, the online store, the model, the limiter, metrics and tracer."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from serving.model import ModelHolder
from serving.ratelimit import RateLimiter, make_rate_limiter
from serving.telemetry import ApiMetrics
from shironzi.intake import IntakeSink, event_intake
from shironzi.settings import Settings
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


class ApiServices:
    """Long-lived collaborators of one app instance; built by `create_app`, closed on shutdown."""

    def __init__(self, settings: Settings, *, metrics: ApiMetrics, tracer: Any, registry: Registry) -> None:
        self.settings = settings
        self.metrics = metrics
        self.tracer = tracer
        self.registry = registry
        self.limiter: RateLimiter = make_rate_limiter(settings.redis_url)
        self.model = ModelHolder(settings, on_version=metrics.set_model_version)
        self._online: Any = None
        self._sink: IntakeSink | None = None
        self._sink_lock = threading.Lock()
        self._tenants: dict[str, tuple[float, TenantFacts]] = {}
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

    def rate_for(self, plan: str) -> float:
        return float(self.settings.api_rate_limits.get(plan, self.settings.api_rate_limits.get("free", 10.0)))

    # backends ---------------------------------------------------------------------------------------------

    @property
    def online_store(self) -> Any:
        if self._online is None:
            from feature_store.online import open_online_store

            self._online = open_online_store(settings=self.settings)
        return self._online

    def sink(self) -> IntakeSink:
        """The Kafka producer for event intake (created on first use, with the events topic if missing)."""
        with self._sink_lock:
            if self._sink is None:
                self._sink = event_intake().open_sink(
                    self.settings, topic=self.settings.api_events_topic, partitions=EVENTS_TOPIC_PARTITIONS
                )
            return self._sink

    def close(self) -> None:
        self.model.stop()
        if self._sink is not None:
            with contextlib.suppress(Exception):  # shutting down: nothing left to report to
                self._sink.close(5.0)
            self._sink = None
        if self._online is not None:
            self._online.close()
            self._online = None
        self.limiter.close()
