"""Dependency aliases: who is calling (tenant or platform admin), with which scopes, within which limits.

    @router.get("/thing")
    async def read_thing(caller: TenantReadDep) -> ThingPublic: ...

Keys come only from `Authorization: Bearer shz_...`; a key in the query string is refused. Every failed
authentication is audited (the first per client and key prefix in a window at once, the rest of the window
as one aggregate, see `serving.signin`); reads of tenant data are buffered audit events.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import Depends, Request

from serving.errors import request_id_of
from serving.services import ApiServices, TenantFacts
from serving.signin import GUESSES
from shironzi.audit.disclosures import subject_tokens
from shironzi.audit.events import AuditEvent
from shironzi.audit.log import audit, audit_admin_action, get_audit_log
from shironzi.errors import (
    AuthenticationError,
    KeyInQueryError,
    ModuleDisabledError,
    PermissionDeniedError,
    RateLimitedError,
    ScopeDeniedError,
    ShironziError,
)
from shironzi.tenancy.context import TenantContext
from shironzi.tenancy.keys import KeyPrincipal, cache_key, parse_key

KEY_QUERY_NAMES = frozenset({"api_key", "apikey", "api-key", "key", "token", "access_token", "auth"})


def services_of(request: Request) -> ApiServices:
    services: ApiServices = request.app.state.services
    return services


def _route_template(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", None)  # not getattr(..., request.url.path): that builds a URL every call
    return str(path if path is not None else request.url.path)


@dataclass(frozen=True)
class TenantAccess:
    """A verified tenant caller: its key, tenant, context and request id."""

    principal: KeyPrincipal
    tenant: TenantFacts
    ctx: TenantContext
    request_id: str
    route: str
    services: ApiServices

    @property
    def tenant_id(self) -> str:
        return self.tenant.id

    def audit_read(self, *, subjects: Sequence[str] = (), **details: Any) -> None:
        """A read of this tenant's data (buffered audit event); `subjects` are the customer ids whose data
        the answer disclosed, recorded pseudonymised for the accounting of disclosures."""

        audit(self.ctx, "api_read", resource=self.route, request_id=self.request_id, details=details,
              subjects=subject_tokens(self.tenant_id, subjects))

    def audit_failure(self, code: str, message: str) -> None:
        """The call was authorised but failed (not found, conflict, bad input): buffered, like reads."""
        self.audit_write("api_request_failed", outcome="failure", code=code, message=message)

    def audit_write(self, action: str, *, outcome: str = "success", **details: Any) -> None:
        audit(
            self.ctx,
            action,
            resource=self.route,
            request_id=self.request_id,
            outcome=outcome,  # type: ignore[arg-type]
            details=details,
        )


@dataclass(frozen=True)
class AdminAccess:
    """A verified platform admin caller."""

    principal: KeyPrincipal
    ctx: TenantContext
    request_id: str
    route: str
    method: str
    services: ApiServices

    def audit_write(self, action: str, *, tenant_id: str | None, outcome: str = "success", **details: Any) -> None:
        """An admin write (durable audit event, in the table before the response is sent)."""

        audit_admin_action(
            self.ctx,
            action,
            tenant_id=tenant_id,
            resource=f"api:{self.method} {self.route}",
            request_id=self.request_id,
            outcome=outcome,  # type: ignore[arg-type]
            details=details,
        )

    def audit_failure(self, code: str, message: str) -> None:
        """An admin call that failed after authorisation: durable, like every admin action."""
        self.audit_write("api_admin_failed", tenant_id=None, outcome="failure", code=code, message=message)

    def audit_read(self, action: str, *, tenant_id: str | None, **details: Any) -> None:
        audit(self.ctx, action, tenant_id=tenant_id, resource=f"api:{self.method} {self.route}",
              request_id=self.request_id, details=details)


def _denied_event(
    request: Request, exc: ShironziError, *, key_prefix: str | None, tenant_id: str | None, **extra: Any
) -> dict[str, Any]:
    return {
        "action": "api_auth_failed" if isinstance(exc, AuthenticationError | RateLimitedError) else "api_access_denied",
        "actor": f"key:{key_prefix}" if key_prefix else "anonymous",
        "actor_kind": "key",
        "tenant_id": tenant_id,
        "resource": f"api:{request.method} {_route_template(request)}",
        "purpose": "api",
        "outcome": "denied",
        "request_id": request_id_of(request),
        "details": {"code": exc.code, "message": exc.message, **extra},
    }


def _audit_denied(request: Request, exc: ShironziError, *, key_prefix: str | None, tenant_id: str | None) -> None:
    """A refused access of an authenticated caller: durable, so a crash cannot lose it."""

    event = AuditEvent(**_denied_event(request, exc, key_prefix=key_prefix, tenant_id=tenant_id))
    try:
        get_audit_log().record(event, durable=True)
    except ShironziError:  # the refusal stands even when the audit store is down; the writer retries
        import logging

        logging.getLogger("shironzi.serving").error("could not write the denied-access audit event")


def _audit_sign_in_failure(request: Request, exc: ShironziError, raw: str | None, address: str) -> None:
    """A failed authentication: the first of its window is durable at once, the rest one aggregate."""
    services = services_of(request)
    prefix = _prefix_of(raw)

    def event() -> dict[str, Any]:
        _, tenant_id = _prefix_and_tenant(services, raw)
        return _denied_event(request, exc, key_prefix=prefix, tenant_id=tenant_id, client=address)

    services.signin_audit.record(address=address, prefix=prefix, code=exc.code, event=event)


def _presented_key(request: Request) -> str:
    query = request.scope.get("query_string", b"")
    if query:
        params = request.query_params
        if any(name.lower() in KEY_QUERY_NAMES for name in params) or any(
            v.startswith("shz_") for v in params.values()
        ):
            raise KeyInQueryError(
                "API keys in the query string are refused (they leak into logs): "
                "send them as `Authorization: Bearer shz_...`"
            )
    header = request.headers.get("authorization")
    if not header:
        raise AuthenticationError("missing API key: send `Authorization: Bearer shz_...`")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise AuthenticationError("the Authorization header must be `Bearer shz_...`")
    return raw.strip()


def _prefix_of(raw: str | None) -> str | None:
    try:
        return parse_key(raw)[0] if raw else None
    except ShironziError:
        return None


def _prefix_and_tenant(services: ApiServices, raw: str | None) -> tuple[str | None, str | None]:
    prefix = _prefix_of(raw)
    if prefix is None:
        return None, None
    try:
        return prefix, services.registry.get_key(prefix).tenant_id
    except ShironziError:
        return prefix, None


def authenticate(request: Request) -> KeyPrincipal:
    """Verify the caller's key (cached by the registry for the key-cache TTL) or raise a 401/403; a key not
    cached as valid is refused with 429 while its prefix or the client address has too many failures."""

    services = services_of(request)
    raw: str | None = None
    address = request.client.host if request.client else "unknown"
    try:
        raw = _presented_key(request)
        cached = services.registry.key_cache.get(cache_key(raw))
        if cached is None or cached.outcome != "ok":
            services.signin_throttle.check(_prefix_of(raw), address)
        return services.registry.verify_key(raw)
    except RateLimitedError as exc:
        services.metrics.auth_failures.labels(code="signin_throttled").inc()
        _audit_sign_in_failure(request, exc, raw, address)
        raise
    except (AuthenticationError, PermissionDeniedError) as exc:
        services.metrics.auth_failures.labels(code=exc.code).inc()
        if isinstance(exc, GUESSES):
            services.signin_throttle.failed(_prefix_of(raw), address)
        if isinstance(exc, AuthenticationError):
            _audit_sign_in_failure(request, exc, raw, address)
        else:
            prefix, tenant_id = _prefix_and_tenant(services, raw)
            _audit_denied(request, exc, key_prefix=prefix, tenant_id=tenant_id)
        raise


def _set_span_tenant(tenant_id: str) -> None:
    from opentelemetry import trace

    trace.get_current_span().set_attribute("shironzi.tenant_id", tenant_id)


def _tenant_access(request: Request, scope: str) -> TenantAccess:
    services = services_of(request)
    principal = authenticate(request)
    if principal.tenant_id is None:
        exc = PermissionDeniedError(
            "tenant routes need a tenant API key; platform admin keys act through /v1/admin"
        )
        _audit_denied(request, exc, key_prefix=principal.key_prefix, tenant_id=None)
        raise exc
    tenant = services.tenant(principal.tenant_id)
    _set_span_tenant(tenant.id)
    decision = services.limiter.hit(tenant.id, services.rate_for(tenant.plan))
    if not decision.allowed:
        services.metrics.rate_limited.labels(plan=tenant.plan).inc()
        raise RateLimitedError(
            f"rate limit of the {tenant.plan} plan exceeded; retry after {decision.retry_after:.2f}s",
            retry_after=round(decision.retry_after, 3),
            plan=tenant.plan,
        )
    services.metrics.plan_requests.labels(plan=tenant.plan).inc()
    ctx = TenantContext.for_tenant(tenant.id, actor=f"key:{principal.key_prefix}", purpose="api")
    if scope not in principal.scopes:
        denied = ScopeDeniedError(
            f"this route needs the {scope!r} scope; the key has {', '.join(principal.scopes)}",
            scope=scope,
        )
        _audit_denied(request, denied, key_prefix=principal.key_prefix, tenant_id=tenant.id)
        raise denied
    access = TenantAccess(principal, tenant, ctx, request_id_of(request), _route_template(request), services)
    request.state.caller = access  # the error handlers audit a failure of this call
    return access


async def tenant_reader(request: Request) -> TenantAccess:
    return _tenant_access(request, "read")


async def tenant_writer(request: Request) -> TenantAccess:
    return _tenant_access(request, "write")


def module_gate(module: str, *, scope: str = "read") -> Callable[[Request], Awaitable[TenantAccess]]:
    """A dependency: a tenant caller with `scope` whose tenant has `module` on (else 403 module_disabled)."""

    async def gate(request: Request) -> TenantAccess:
        access = _tenant_access(request, scope)
        if not access.services.registry.is_enabled(access.tenant_id, module):
            exc = ModuleDisabledError(access.tenant.slug, module)
            _audit_denied(request, exc, key_prefix=access.principal.key_prefix, tenant_id=access.tenant_id)
            raise exc
        return access

    gate.__name__ = f"require_{module}"
    return gate


async def admin_caller(request: Request) -> AdminAccess:
    principal = authenticate(request)
    if not principal.is_admin:
        exc = PermissionDeniedError("admin routes need a platform admin key")
        _audit_denied(request, exc, key_prefix=principal.key_prefix, tenant_id=principal.tenant_id)
        raise exc
    route = _route_template(request)
    ctx = TenantContext.admin(actor=f"key:{principal.key_prefix}", purpose=f"api {request.method} {route}")
    access = AdminAccess(principal, ctx, request_id_of(request), route, request.method, services_of(request))
    request.state.caller = access  # the error handlers audit a failure of this call
    return access


TenantReadDep = Annotated[TenantAccess, Depends(tenant_reader)]
TenantWriteDep = Annotated[TenantAccess, Depends(tenant_writer)]
ChurnDep = Annotated[TenantAccess, Depends(module_gate("churn_prediction"))]
ForecastDep = Annotated[TenantAccess, Depends(module_gate("trend_forecast"))]
ExportDep = Annotated[TenantAccess, Depends(module_gate("data_export"))]
AdminDep = Annotated[AdminAccess, Depends(admin_caller)]
ServicesDep = Annotated[ApiServices, Depends(services_of)]
