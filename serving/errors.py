"""One place that turns every failure into `{"error": {"code", "message", "request_id"}}`.

`ShironziError` subclasses carry their status and code; validation errors, unknown routes and unexpected
exceptions use the same shape, and a 500 never carries a traceback or an exception's text.
"""

from __future__ import annotations

import logging
import math
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from serving.schemas import ErrorResponse
from shironzi.errors import AuthenticationError, PermissionDeniedError, RateLimitedError, ShironziError

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


def _jsonable(details: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in details.items():
        out[key] = value if isinstance(value, str | int | float | bool | type(None) | list | dict) else str(value)
    return out


async def _shironzi_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ShironziError)
    headers: dict[str, str] = {}
    if isinstance(exc, RateLimitedError):
        headers["Retry-After"] = str(max(1, math.ceil(float(exc.details.get("retry_after", 1)))))
    if exc.status >= 500:
        logger.error("request %s failed: %s: %s", request_id_of(request), exc.code, exc.message)
    if not isinstance(exc, RateLimitedError | AuthenticationError | PermissionDeniedError):  # refusals: deps
        _audit_failure(request, exc.code, exc.message)
    return error_response(
        request, exc.status, exc.code, exc.message, details=_jsonable(exc.details) or None, headers=headers
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


async def _unexpected_error(request: Request, exc: Exception) -> JSONResponse:
    logger.exception("request %s failed with an unexpected error", request_id_of(request), exc_info=exc)
    _audit_failure(request, "internal_error", type(exc).__name__)
    return error_response(request, 500, "internal_error", "internal error; quote the request id to support")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ShironziError, _shironzi_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
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
