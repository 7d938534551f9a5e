"""One place that turns every failure into `{"error": {"code", "message", "request_id"}}`.

`ShironziError` subclasses carry their status and code; validation errors, unknown routes and unexpected
exceptions use the same shape, and a 500 never carries a traceback or an exception's text. Messages and
details shown to callers never carry the server's paths, hostnames or settings (`public_text`,
`public_details`); the log keeps the full text.
"""

from __future__ import annotations

import logging
import math
import re
import uuid
from typing import Any

import sqlalchemy.exc as sa_exc
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.schemas import ErrorResponse
from shironzi.errors import (
    AuthenticationError,
    PermissionDeniedError,
    RateLimitedError,
    RegistryUnavailableError,
    ServiceUnavailableError,
    ShironziError,
)

logger = logging.getLogger("shironzi.serving")

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


_URI = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"`),;]+")
_PATH = re.compile(r"(?<![\w.<>/~-])(?:~|\.{1,2})?/(?!v1(?:/|\b))[^\s'\"`),;]+")
_HOST_PORT = re.compile(r"\b(?=[a-z0-9.-]*[a-z])[a-z0-9][a-z0-9.-]*:\d{2,5}\b")
_IP = re.compile(r"\b(?:\d{1,3}\.){3}\d{1,3}(?::\d{1,5})?\b")
_SETTING = re.compile(r"\b(?:SHIRONZI|MLFLOW|AIRFLOW|OTEL)_[A-Z0-9_]+\b")
_PRIVATE_KEYS = re.compile(r"(^|_)(home|path|paths|uri|uris|url|urls|bootstrap|host|hosts|hostname|endpoint|dsn|"
                           r"dir|directory|file|root|settings|lake)($|_)")


def public_text(text: str) -> str:
    """`text` without URIs, filesystem paths, host:port pairs, IP addresses or setting names (API routes such
    as `/v1/tenant` and timestamps stay)."""
    text = _URI.sub("<uri>", text)
    text = _IP.sub("<host>", text)
    text = _HOST_PORT.sub("<host>", text)
    text = _PATH.sub("<path>", text)
    return _SETTING.sub("<setting>", text)


def _public_value(value: Any) -> Any:
    if isinstance(value, str):
        return value if public_text(value) == value else None
    if isinstance(value, list):
        kept = [_public_value(v) for v in value]
        return kept if None not in kept else None
    if isinstance(value, dict):
        return public_details(value)
    return value if isinstance(value, int | float | bool | type(None)) else _public_value(str(value))


def public_details(details: dict[str, Any]) -> dict[str, Any]:
    """The details a caller may see: no key naming a path, URI, host or setting, and no value that holds one."""
    out: dict[str, Any] = {}
    for key, value in details.items():
        if _PRIVATE_KEYS.search(str(key).lower()):
            continue
        shown = _public_value(value)
        if shown is not None or value is None:
            out[key] = shown
    return out


def request_id_of(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = uuid.uuid4().hex
        request.state.request_id = rid
    return str(rid)


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    details: dict[str, Any] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    rid = request_id_of(request)
    body: dict[str, Any] = {"code": code, "message": message, "request_id": rid}
    if details:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers={"X-Request-ID": rid, **(headers or {})})


def _audit_failure(request: Request, code: str, message: str) -> None:
    """An authorised call that ends in an error still leaves its audit event (refusals before authorisation
    are audited where they happen, in `serving.deps`)."""
    caller = getattr(request.state, "caller", None)
    if caller is None:
        return
    try:
        caller.audit_failure(code, message)
    except Exception:  # noqa: BLE001 - the error response stands even when the audit store is down
        logger.error("request %s: could not audit the failure %s", request_id_of(request), code)


async def _shironzi_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ShironziError)
    headers: dict[str, str] = {}
    retry_later = isinstance(exc, ServiceUnavailableError) and "retry_after" in exc.details  # a breaker is open
    if isinstance(exc, RateLimitedError) or retry_later:
        headers["Retry-After"] = str(max(1, math.ceil(float(exc.details.get("retry_after", 1)))))
    if exc.status >= 500:
        logger.error("request %s failed: %s: %s", request_id_of(request), exc.code, exc.message)
    if not isinstance(exc, RateLimitedError | AuthenticationError | PermissionDeniedError):  # refusals: deps
        _audit_failure(request, exc.code, exc.message)
    return error_response(
        request, exc.status, exc.code, public_text(exc.message), details=public_details(exc.details) or None,
        headers=headers,
    )


def _location(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(part) for part in loc if part not in ("body",)) or "body"


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(request, 400, "invalid_json", "the request body is not valid JSON")
    shown = "; ".join(f"{_location(e.get('loc', ()))}: {e.get('msg', 'invalid')}" for e in errors[:5])
    fields = [_location(e.get("loc", ())) for e in errors[:20]]
    _audit_failure(request, "invalid_input", shown)
    return error_response(
        request, 422, "invalid_input", f"invalid request: {shown}", details={"fields": fields}
    )


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ")
    return error_response(request, exc.status_code, code, message, headers=dict(exc.headers or {}))


REGISTRY_RETRY_AFTER_S = 5


async def _registry_unreachable(request: Request, exc: Exception) -> JSONResponse:
    """A lost or refused connection to the registry database is an outage to wait out (503 + Retry-After), not
    a bug (500); any other database error still is one."""
    assert isinstance(exc, sa_exc.DBAPIError)
    if not (isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError) or exc.connection_invalidated):
        return await _unexpected_error(request, exc)
    logger.error("request %s: the registry database is unreachable: %s", request_id_of(request), exc.orig)
    unavailable = RegistryUnavailableError("the tenant registry is unavailable; retry shortly",
                                           retry_after=REGISTRY_RETRY_AFTER_S)
    return await _shironzi_error(request, unavailable)


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("request %s failed with an unexpected error", request_id_of(request), exc_info=exc)
    _audit_failure(request, "internal_error", type(exc).__name__)
    return error_response(request, 500, "internal_error", "internal error; quote the request id to support")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ShironziError, _shironzi_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(sa_exc.DBAPIError, _registry_unreachable)
    app.add_exception_handler(Exception, _unexpected_error)


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text}
    for status, text in (
        (400, "Bad request (e.g. a body that is not JSON)"),
        (401, "Missing, malformed, unknown, revoked or expired API key"),
        (403, "Wrong scope, module disabled, suspended tenant, or not this tenant's resource"),
        (404, "Not found (for this tenant)"),
        (409, "Conflict with the current state"),
        (413, "Request body too large"),
        (422, "Invalid request"),
        (429, "Rate limited; retry after the `Retry-After` seconds"),
        (500, "Internal error (never a traceback)"),
        (503, "A backend (model, broker, store) is unavailable"),
    )
}
ERROR_RESPONSES[429]["headers"] = {
    "Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "integer"}}
}
