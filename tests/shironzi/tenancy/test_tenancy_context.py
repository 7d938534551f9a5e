"""TenantContext: frozen, validated, and explicit about admin scope."""

from __future__ import annotations

import dataclasses

import pytest

from shironzi.errors import InvalidInputError, PermissionDeniedError
from shironzi.tenancy import TenantContext


def test_tenant_and_admin_contexts() -> None:
    ctx = TenantContext.for_tenant("t_abc", actor="alice", purpose="dashboard")
    assert (ctx.tenant_id, ctx.actor, ctx.purpose, ctx.is_admin) == ("t_abc", "alice", "dashboard", False)
    ctx.require_tenant("t_abc")
    with pytest.raises(PermissionDeniedError, match="t_other"):
        ctx.require_tenant("t_other")
    with pytest.raises(PermissionDeniedError):
        ctx.require_tenant(None)
    with pytest.raises(PermissionDeniedError, match="admin"):
        ctx.require_admin("rebuilding")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ctx.tenant_id = "t_other"  # type: ignore[misc]

    admin = TenantContext.admin(actor="ops", purpose="migration")
    assert admin.is_admin
    admin.require_tenant("t_anything")
    admin.require_tenant(None)
    admin.require_admin("rebuilding")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tenant_id": "", "actor": "a", "purpose": "p"},
        {"tenant_id": "t_x", "actor": " ", "purpose": "p"},
        {"tenant_id": "t_x", "actor": "a", "purpose": ""},
        {"tenant_id": "*", "actor": "a", "purpose": "p"},
    ],
)
def test_context_fields_are_validated(kwargs: dict[str, str]) -> None:
    with pytest.raises(InvalidInputError):
        TenantContext(**kwargs)
