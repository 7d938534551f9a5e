"""Who is acting, for which tenant, and why: passed to every registry write and recorded on its event."""

from __future__ import annotations

from dataclasses import dataclass

from shironzi.errors import InvalidInputError, PermissionDeniedError

ALL_TENANTS = "*"


@dataclass(frozen=True)
class TenantContext:
    """A tenant-scoped (or, explicitly, platform-wide admin) context for reads and writes of tenant data."""

    tenant_id: str
    actor: str
    purpose: str
    is_admin: bool = False

    def __post_init__(self) -> None:
        for field_name in ("tenant_id", "actor", "purpose"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not value.strip():
                raise InvalidInputError(
                    f"TenantContext.{field_name} must be a non-empty string", field=field_name
                )
        if self.tenant_id == ALL_TENANTS and not self.is_admin:
            raise InvalidInputError("only an admin context may span all tenants", field="tenant_id")

    @classmethod
    def for_tenant(cls, tenant_id: str, *, actor: str, purpose: str) -> TenantContext:
        """A context limited to one tenant."""
        return cls(tenant_id=tenant_id, actor=actor, purpose=purpose, is_admin=False)

    @classmethod
    def admin(cls, *, actor: str, purpose: str) -> TenantContext:
        """A platform admin context for work that spans tenants (the audit trail records it)."""
        return cls(tenant_id=ALL_TENANTS, actor=actor, purpose=purpose, is_admin=True)

    def can_access(self, tenant_id: str | None) -> bool:
        return self.is_admin or (tenant_id is not None and tenant_id == self.tenant_id)

    def require_tenant(self, tenant_id: str | None) -> None:
        """Refuse unless this context is admin or is for `tenant_id`."""
        if not self.can_access(tenant_id):
            target = "platform-wide resources" if tenant_id is None else f"tenant {tenant_id!r}"
            raise PermissionDeniedError(
                f"context for tenant {self.tenant_id!r} may not act on {target}: an admin context is needed",
                tenant=tenant_id,
                actor=self.actor,
            )

    def require_admin(self, action: str) -> None:
        if not self.is_admin:
            raise PermissionDeniedError(
                f"{action} needs an admin context (actor {self.actor!r} acts for tenant {self.tenant_id!r})",
                actor=self.actor,
            )
