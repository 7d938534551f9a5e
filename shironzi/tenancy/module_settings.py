"""Per-tenant module settings: a pydantic schema per module, event-sourced like every tenant change.

Each configurable module declares its settings as a pydantic model (`SCHEMAS`); `settings_json_schema`
exports it as JSON Schema, where a field that tenants may change themselves carries `"x-tenant-editable":
true` (the rest is for platform admins). A `module_settings_changed` event carries the values it sets (None
resets a setting to its default); a module's current settings are the fold of its events, re-validated
against the schema (no projection table: a tenant has a handful of them, read by one indexed query).
Pipelines read every tenant's settings of a module in one query (`module_settings_of`), never one query
per tenant. The API reads through a per-process cache that the registry invalidation drops, so a change
reaches running workers within about a second.

    registry.set_module_settings(ctx, "acme-shop", "churn_prediction", {"inactivity_days": 60})
    registry.module_settings("acme-shop", "churn_prediction")   # {"inactivity_days": 60}: the overrides
    registry.effective_module_settings("acme-shop", "notifications").webhook_urls
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Literal, cast
from urllib.parse import urlsplit

import sqlalchemy as sa
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, model_validator
from sqlalchemy.engine import Connection, Engine

from shironzi.errors import InvalidInputError, InvalidStateError, PermissionDeniedError
from shironzi.settings import Settings
from shironzi.tenancy import catalog
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.events import ProjectionState, TenantEvent
from shironzi.tenancy.invalidation import Invalidation
from shironzi.tenancy.models import tenant_events
from shironzi.tenancy.store import RegistryStore, require_live
from shironzi.webhooks.signing import ROTATION_GRACE_SECONDS, webhook_secret

SETTINGS_EVENT = "module_settings_changed"
ROTATION_EVENT = "webhook_secret_rotated"
TENANT_EDITABLE = "x-tenant-editable"
Editor = Literal["admin", "tenant"]
ConfigurableModule = Literal["churn_prediction", "trend_forecast", "notifications", "data_export"]
NotificationEvent = Literal["at_risk", "anomaly", "pipeline_failure", "erasure_completed", "alert"]
NOTIFICATION_EVENTS: tuple[str, ...] = ("at_risk", "anomaly", "pipeline_failure", "erasure_completed", "alert")
MAX_WEBHOOK_URLS = 5
MAX_URL_LENGTH = 2000


def _tenant_editable(default: Any, **constraints: Any) -> Any:
    return Field(default, json_schema_extra={TENANT_EDITABLE: True}, **constraints)


class _ModuleSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _safe_webhook_url(url: str, info: ValidationInfo) -> str:
    problem = webhook_url_problem(url, prod=bool((info.context or {}).get("prod")))
    if problem:
        raise ValueError(problem)
    return url


WebhookUrl = Annotated[str, AfterValidator(_safe_webhook_url)]


class ChurnPredictionSettings(_ModuleSettings):
    """Churn labelling windows (admin: they change the training labels), risk bands and the at-risk alert."""

    inactivity_days: int | None = Field(None, ge=7, le=365, description="Days without activity that label a "
                                        "customer churned (default: the dbt project's).")
    horizon_days: int | None = Field(None, ge=7, le=365, description="Prediction horizon in days.")
    medium_risk_from: float | None = _tenant_editable(None, ge=0, le=1, description="Probability from which a "
                                                      "customer is medium risk (default: the model's per-tenant cut).")
    high_risk_from: float | None = _tenant_editable(None, ge=0, le=1, description="Probability from which a "
                                                    "customer is high risk.")
    at_risk_threshold: float = _tenant_editable(0.6, gt=0, le=1, description="A customer whose score crosses "
                                                "this after a scoring run is an `at_risk` notification.")

    @model_validator(mode="after")
    def _bands_in_order(self) -> ChurnPredictionSettings:
        if self.medium_risk_from is not None and self.high_risk_from is not None \
                and self.medium_risk_from >= self.high_risk_from:
            raise ValueError("medium_risk_from must be below high_risk_from")
        return self


class TrendForecastSettings(_ModuleSettings):
    horizon_days: int = _tenant_editable(28, ge=1, le=365, description="Days forecast ahead.")
    interval_level: float = _tenant_editable(0.8, ge=0.5, le=0.99, description="Prediction interval coverage.")


class NotificationsSettings(_ModuleSettings):
    """Where the tenant's webhooks go and which events it wants (signed with its rotatable secret)."""

    webhook_urls: list[WebhookUrl] = _tenant_editable([], max_length=MAX_WEBHOOK_URLS,
                                                      description="https endpoints that receive the events.")
    event_types: list[NotificationEvent] = _tenant_editable(list(NOTIFICATION_EVENTS),
                                                            description="Events delivered.")


class DataExportSettings(_ModuleSettings):
    formats: list[Literal["parquet", "csv"]] = Field(["parquet", "csv"], min_length=1,
                                                     description="Export formats allowed (plan-dependent).")


SCHEMAS: dict[str, type[_ModuleSettings]] = {
    "churn_prediction": ChurnPredictionSettings,
    "trend_forecast": TrendForecastSettings,
    "notifications": NotificationsSettings,
    "data_export": DataExportSettings,
}


def webhook_url_problem(url: object, *, prod: bool) -> str | None:
    """Why a webhook URL is refused (None: fine). Outside prod any http(s) URL goes (tests run receivers on
    loopback); in prod only https to a public address, so a tenant cannot aim the platform at its own network."""
    if not isinstance(url, str):
        return "must be a string"
    if len(url) > MAX_URL_LENGTH or any(c.isspace() or not c.isprintable() for c in url):
        return f"must be a URL of at most {MAX_URL_LENGTH} printable characters without spaces"
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "must be an http(s) URL with a host"
    if not prod:
        return None
    if parts.scheme != "https":
        return "must use https when SHIRONZI_ENV=prod"
    for address in _addresses(parts.hostname):
        if not address.is_global:
            return "points at a private, loopback or reserved address"
    return None


def _addresses(host: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host.strip("[]"))]
    except ValueError:
        pass
    if host == "localhost" or host.endswith((".localhost", ".local", ".internal")):
        return [ipaddress.ip_address("127.0.0.1")]
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return []  # unresolvable now: delivery re-checks the address it connects to
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


def settings_json_schema(module: str) -> dict[str, Any]:
    """The JSON Schema of a module's settings (`x-tenant-editable` marks what tenants may change)."""
    return _schema_of(module).model_json_schema()


def tenant_editable_fields(module: str) -> frozenset[str]:
    schema = _schema_of(module)
    return frozenset(name for name, info in schema.model_fields.items()
                     if isinstance(info.json_schema_extra, dict) and info.json_schema_extra.get(TENANT_EDITABLE))


def _schema_of(module: str) -> type[_ModuleSettings]:
    schema = SCHEMAS.get(catalog.check_module(module))
    if schema is None:
        raise InvalidInputError(f"module {module!r} has no settings; configurable: {', '.join(SCHEMAS)}",
                                field="module")
    return schema


def check_module_settings(module: str, values: Mapping[str, Any], *, current: Mapping[str, Any] | None = None,
                          editor: Editor = "admin", prod: bool = False) -> dict[str, Any]:
    """The validated changes to a module's settings (None resets a setting to its default).

    The whole result (`current` with the changes) must pass the schema, so rules across fields hold. A bad
    value raises InvalidInputError with the field's path (`details["fields"]`); a tenant changing a field
    that is not tenant-editable raises PermissionDeniedError.
    """
    schema = _schema_of(module)
    if not isinstance(values, Mapping) or not values:
        raise InvalidInputError(f"no setting given; {module} has: {', '.join(schema.model_fields)}",
                                fields=[module])
    unknown = [name for name in values if name not in schema.model_fields]
    if unknown:
        raise InvalidInputError(f"module {module!r} has no setting {unknown[0]!r}; it has: "
                                f"{', '.join(schema.model_fields)}", fields=[f"{module}.{n}" for n in unknown])
    if editor == "tenant":
        locked = sorted(set(values) - tenant_editable_fields(module))
        if locked:
            raise PermissionDeniedError(f"{module}.{locked[0]} is set by the platform admin, not the tenant",
                                        fields=[f"{module}.{n}" for n in locked])
    merged = {**(current or {}), **values}
    merged = {name: value for name, value in merged.items() if value is not None}
    try:
        checked = schema.model_validate(merged, context={"prod": prod})
    except ValidationError as exc:
        fields = [".".join([module, *(str(p) for p in e["loc"])]) if e["loc"] else module for e in exc.errors()]
        first = exc.errors()[0]
        raise InvalidInputError(f"invalid {fields[0]}: {first['msg']}", fields=fields) from None
    dumped = checked.model_dump(mode="json")
    return {name: (None if values[name] is None else dumped[name]) for name in values}


def _fold(events: list[dict[str, Any]]) -> dict[str, Any]:
    current: dict[str, Any] = {}
    for payload in events:
        for name, value in payload.get("settings", {}).items():
            if value is None:
                current.pop(name, None)
            else:
                current[name] = value
    return current


class ModuleSettings(RegistryStore):
    """The module-settings part of `Registry`, with its per-tenant cache of settings."""

    def __init__(self, engine: Engine, *, settings: Settings | None = None) -> None:
        super().__init__(engine, settings=settings)
        self._settings_cache: dict[tuple[str, str], tuple[float, dict[str, Any], int]] = {}

    def set_module_settings(self, ctx: TenantContext, tenant_id: str, module: str, values: Mapping[str, Any],
                            *, editor: Editor = "admin") -> dict[str, Any]:
        """Record new settings of a module that is on for the tenant; returns its overrides after the change."""
        _schema_of(module)
        prod = self.settings.env == "prod"

        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            ((tid, row),) = state.tenants.items()
            require_live(tid, row)
            if module not in state.enabled_modules(tid):
                raise InvalidStateError(f"module {module!r} is not enabled for tenant {tid!r}", tenant=tid,
                                        module=module)
            current, _version = self._read_settings(conn, module, [tid]).get(tid, ({}, 0))
            checked = check_module_settings(module, values, current=current, editor=editor, prod=prod)
            return [self._event(ctx, SETTINGS_EVENT, tid, module=module, settings=checked, editor=editor)]

        state, _ = self._commit(decide, tenant=tenant_id, ctx=ctx)
        ((tid, _row),) = state.tenants.items()
        return self.module_settings(tid, module)

    def module_settings(self, tenant_id: str, module: str) -> dict[str, Any]:
        """A tenant's current overrides of a module's settings (empty: every setting at its default)."""
        return self.module_settings_versioned(tenant_id, module, fresh=True)[0]

    def module_settings_versioned(self, tenant_id: str, module: str, *, fresh: bool = False
                                  ) -> tuple[dict[str, Any], int]:
        """(overrides, version): the version counts the tenant's changes of the module's settings. Cached for
        settings.module_cache_ttl_seconds unless `fresh`; a change anywhere drops the entry (invalidation)."""
        catalog.check_module(module)
        ttl = self.settings.module_cache_ttl_seconds
        key = (tenant_id, module)
        hit = self._settings_cache.get(key)
        if not fresh and ttl > 0 and hit is not None and hit[0] >= time.monotonic():
            return dict(hit[1]), hit[2]
        with self._hot_reads.connect() as conn:
            tid = self._tenant_row(conn, tenant_id)["id"]
            values, version = self._read_settings(conn, module, [tid]).get(tid, ({}, 0))
        if ttl > 0:
            self._settings_cache[key] = (time.monotonic() + ttl, values, version)
        return dict(values), version

    def effective_module_settings(self, tenant_id: str, module: str, *, fresh: bool = False) -> Any:
        """The module's settings model for a tenant: its overrides over the schema's defaults."""
        values, _ = self.module_settings_versioned(tenant_id, module, fresh=fresh)
        return _schema_of(module).model_validate(values)

    def module_settings_of(self, module: str, tenant_ids: list[str] | None = None) -> dict[str, dict[str, Any]]:
        """Every tenant's (or the given tenants') non-default settings of a module, in one query."""
        catalog.check_module(module)
        with self.engine.connect() as conn:
            found = self._read_settings(conn, module, tenant_ids)
        return {tid: values for tid, (values, _) in found.items() if values}

    def _read_settings(self, conn: Connection, module: str, tenant_ids: list[str] | None
                       ) -> dict[str, tuple[dict[str, Any], int]]:
        query = (sa.select(tenant_events.c.tenant_id, tenant_events.c.payload)
                 .where(tenant_events.c.type == SETTINGS_EVENT).order_by(tenant_events.c.sequence))
        if tenant_ids is not None:
            query = query.where(tenant_events.c.tenant_id.in_(tenant_ids))
        by_tenant: dict[str, list[dict[str, Any]]] = {}
        for tid, payload in conn.execute(query).all():
            if isinstance(payload, dict) and payload.get("module") == module:
                by_tenant.setdefault(str(tid), []).append(payload)
        return {tid: (_fold(events), len(events)) for tid, events in by_tenant.items()}

    # --- the notifications module's signing secret ----------------------------------------------------

    def rotate_webhook_secret(self, ctx: TenantContext, tenant_id: str) -> str:
        """Start a new generation of the tenant's webhook signing secret and return it (the previous one still
        signs alongside it for `ROTATION_GRACE_SECONDS`)."""

        def decide(conn: Connection, state: ProjectionState) -> list[TenantEvent]:
            ((tid, row),) = state.tenants.items()
            require_live(tid, row)
            generation = len(self._rotations(conn, [tid]).get(tid, [])) + 1
            return [self._event(ctx, ROTATION_EVENT, tid, generation=generation)]

        state, events = self._commit(decide, tenant=tenant_id, ctx=ctx)
        ((tid, _row),) = state.tenants.items()
        return webhook_secret(self.settings, tid, int(events[0].payload["generation"]))

    def webhook_secrets_of(self, tenant_ids: list[str]) -> dict[str, list[str]]:
        """Each tenant's signing secrets, newest first (two during a rotation's grace period), in one query."""
        with self.engine.connect() as conn:
            rotations = self._rotations(conn, tenant_ids)
        now = time.time()
        out: dict[str, list[str]] = {}
        for tid in tenant_ids:
            stamps = rotations.get(tid, [])
            secrets = [webhook_secret(self.settings, tid, len(stamps))]
            if stamps and now - stamps[-1] < ROTATION_GRACE_SECONDS:
                secrets.append(webhook_secret(self.settings, tid, len(stamps) - 1))
            out[tid] = secrets
        return out

    def _rotations(self, conn: Connection, tenant_ids: list[str]) -> dict[str, list[float]]:
        query = (sa.select(tenant_events.c.tenant_id, tenant_events.c.occurred_at)
                 .where(tenant_events.c.type == ROTATION_EVENT, tenant_events.c.tenant_id.in_(tenant_ids))
                 .order_by(tenant_events.c.sequence))
        found: dict[str, list[float]] = {}
        for tid, at in conn.execute(query).all():
            found.setdefault(str(tid), []).append(cast(datetime, at).timestamp())
        return found

    def apply_invalidation(self, change: Invalidation) -> None:
        super().apply_invalidation(change)
        if change.everything:
            self._settings_cache.clear()
            return
        stale = {*change.tenants, *change.slugs}
        for key in [k for k in self._settings_cache if k[0] in stale]:
            self._settings_cache.pop(key, None)
