"""Read models returned by the registry."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any, NamedTuple


@dataclass(frozen=True, slots=True)
class Tenant:
    """A tenant as the projection holds it now."""

    id: str
    slug: str
    name: str
    industry: str
    region: str
    plan: str
    placement: str
    status: str
    lake_namespace: str
    created_at: datetime
    updated_at: datetime
    channel: str = "stable"  # release channel: stable, canary or pinned:<model>@<version>

    @classmethod
    def from_row(cls, row: Any) -> Tenant:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__ if name in row})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat()
        out["updated_at"] = self.updated_at.isoformat()
        return out


class TenantInfo(NamedTuple):
    """The few fields ingestion needs to validate events of many tenants at once."""

    tenant_id: str
    slug: str
    industry: str
    region: str
    plan: str
    placement: str
    status: str


@dataclass(frozen=True, slots=True)
class ProvisionSpec:
    """One tenant to provision, already validated; `line` is where it came from in an import file."""

    slug: str
    name: str
    industry: str
    region: str
    plan: str
    placement: str
    line: int | None = None


@dataclass(frozen=True, slots=True)
class ProvisionedTenant:
    tenant: Tenant
    api_key: str  # plaintext, shown once


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What a bulk import created; the plaintext keys exist only here."""

    tenants: list[ProvisionedTenant]
    seconds: float

    @property
    def count(self) -> int:
        return len(self.tenants)
