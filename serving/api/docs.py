"""OpenAPI annotations that say who may call an operation; the BOLA tests read them from the document."""

from __future__ import annotations

from typing import Any

BEARER: list[dict[str, list[str]]] = [{"bearerAuth": []}]


def tenant_op(scope: str, *, module: str | None = None) -> dict[str, Any]:
    """A tenant operation: a tenant key with `scope` (and `module` on for the tenant)."""
    extra: dict[str, Any] = {"security": BEARER, "x-shironzi-auth": "tenant", "x-shironzi-scope": scope}
    if module:
        extra["x-shironzi-module"] = module
    return extra


def admin_op(*, write: bool) -> dict[str, Any]:
    """A platform-admin operation (`write`: it changes state and is a durable audit event)."""
    return {"security": BEARER, "x-shironzi-auth": "admin", "x-shironzi-write": write}


PUBLIC_OP: dict[str, Any] = {"security": [], "x-shironzi-auth": "none"}
