"""The fixed vocabulary of tenancy: industries, plans, placements, statuses and the module catalogue."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, get_args

from shironzi.errors import InvalidInputError, InvalidStateError, ModuleDependencyError

Industry = Literal["ecommerce", "healthcare", "education"]
Plan = Literal["free", "standard", "enterprise"]
Placement = Literal["pooled", "dedicated"]
Status = Literal["active", "suspended", "offboarding", "deleted"]
Scope = Literal["read", "write", "admin", "phi:read"]
"""`phi:read` (minimum necessary, HIPAA): with `read`, a key also sees PHI in clear; `read` alone sees it
protected (`shironzi.privacy.phi`)."""
PHI_READ_SCOPE = "phi:read"
Module = Literal[
    "analytics",
    "churn_prediction",
    "trend_forecast",
    "notifications",
    "dashboards",
    "data_export",
    "audit_access",
]

INDUSTRIES: tuple[str, ...] = get_args(Industry)
PLANS: tuple[str, ...] = get_args(Plan)
PLACEMENTS: tuple[str, ...] = get_args(Placement)
STATUSES: tuple[str, ...] = get_args(Status)
SCOPES: tuple[str, ...] = get_args(Scope)
MODULES: tuple[str, ...] = get_args(Module)

REGULATED_INDUSTRIES: frozenset[str] = frozenset({"healthcare"})

# module -> the modules it needs switched on first
MODULE_REQUIRES: dict[str, tuple[str, ...]] = {
    "churn_prediction": ("analytics",),
    "trend_forecast": ("analytics",),
}

_FREE = ("analytics", "dashboards")
_STANDARD = (*_FREE, "churn_prediction", "trend_forecast", "notifications", "data_export")
PLAN_DEFAULT_MODULES: dict[str, tuple[str, ...]] = {
    "free": _FREE,
    "standard": _STANDARD,
    "enterprise": MODULES,
}


@dataclass(frozen=True, slots=True)
class ExportLimits:
    """What a plan allows of the `data_export` module: exports started per UTC day and rows per export."""

    per_day: int
    max_rows: int


PLAN_EXPORT_LIMITS: dict[str, ExportLimits] = {
    "free": ExportLimits(per_day=1, max_rows=10_000),
    "standard": ExportLimits(per_day=20, max_rows=1_000_000),
    "enterprise": ExportLimits(per_day=200, max_rows=50_000_000),
}


@dataclass(frozen=True, slots=True)
class PlanQuota:
    """What one tenant of a plan may use: ingest rate (events/s, a token bucket holding `ingest_burst` events)
    and lake storage (GB across its rows in every layer). `SHIRONZI_PLAN_QUOTAS` overrides any field."""

    ingest_rate: float
    ingest_burst: float
    storage_gb: float


QUOTA_FIELDS: tuple[str, ...] = ("ingest_rate", "ingest_burst", "storage_gb")
PLAN_QUOTAS: dict[str, PlanQuota] = {
    "free": PlanQuota(ingest_rate=50.0, ingest_burst=500.0, storage_gb=1.0),
    "standard": PlanQuota(ingest_rate=1_000.0, ingest_burst=10_000.0, storage_gb=100.0),
    "enterprise": PlanQuota(ingest_rate=20_000.0, ingest_burst=200_000.0, storage_gb=10_000.0),
}


# status -> statuses it may move to
STATUS_TRANSITIONS: dict[str, frozenset[str]] = {
    "active": frozenset({"suspended", "offboarding"}),
    "suspended": frozenset({"active", "offboarding"}),
    "offboarding": frozenset({"active", "deleted"}),
    "deleted": frozenset(),
}

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")
MAX_NAME_LENGTH = 200
# Slugs that name a route, a path segment or a role of the platform itself (compared case-insensitively).
RESERVED_SLUGS: frozenset[str] = frozenset({
    "_platform", "platform", "admin", "administrator", "api", "v1", "v2", "root", "system", "internal",
    "shironzi", "tenants", "tenant", "healthz", "readyz", "metrics", "docs", "openapi", "redoc", "static",
    "auth", "login", "logout", "sign-in", "dashboard", "dashboards", "www", "null", "none", "default",
})
# Line/paragraph separators and the bidirectional overrides, which reorder how a name is displayed.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f" + "".join(map(chr, range(0x202A, 0x202F))) +
                           "".join(map(chr, range(0x2066, 0x206A))))


def _one_of(kind: str, value: object, allowed: Iterable[str]) -> str:
    allowed = tuple(allowed)
    if not isinstance(value, str) or value not in allowed:
        raise InvalidInputError(f"invalid {kind} {value!r}: expected one of {', '.join(allowed)}", field=kind)
    return value


def check_slug(slug: object) -> str:
    """A slug is 3-63 chars of lowercase letters, digits and '-', with no dash at either end, and not one
    of the platform's reserved words."""
    if isinstance(slug, str) and slug.strip().lower() in RESERVED_SLUGS:
        raise InvalidInputError(
            f"invalid slug {slug.strip()!r}: it is reserved for the platform; pick another", field="slug"
        )
    if not isinstance(slug, str) or not _SLUG.match(slug):
        raise InvalidInputError(
            f"invalid slug {slug!r}: use 3-63 lowercase letters, digits or '-', no '-' at either end",
            field="slug",
        )
    return slug


def check_name(name: object) -> str:
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError("invalid name: it must not be empty", field="name")
    if len(name.strip()) > MAX_NAME_LENGTH:
        raise InvalidInputError(f"invalid name: longer than {MAX_NAME_LENGTH} characters", field="name")
    bad = next((c for c in name if unicodedata.category(c) in _INVISIBLE_CATEGORIES or c in _BIDI_CONTROLS), None)
    if bad is not None:
        raise InvalidInputError(
            f"invalid name: it contains the control character U+{ord(bad):04X}; use printable text",
            field="name",
        )
    return name.strip()


def check_industry(industry: object) -> str:
    return _one_of("industry", industry, INDUSTRIES)


def check_plan(plan: object) -> str:
    return _one_of("plan", plan, PLANS)


def check_placement(placement: object) -> str:
    return _one_of("placement", placement, PLACEMENTS)


def check_region(region: object, regions: Iterable[str]) -> str:
    return _one_of("region", region, regions)


def check_module(module: object) -> str:
    return _one_of("module", module, MODULES)


def check_scopes(scopes: object) -> tuple[str, ...]:
    """Scopes in catalogue order without duplicates; at least one."""
    if isinstance(scopes, str):
        scopes = [scopes]
    if not isinstance(scopes, Iterable):
        raise InvalidInputError(f"invalid scopes {scopes!r}", field="scopes")
    wanted = list(scopes)
    for scope in wanted:
        _one_of("scope", scope, SCOPES)
    if not wanted:
        raise InvalidInputError("a key needs at least one scope (read, write, admin, phi:read)", field="scopes")
    return tuple(s for s in SCOPES if s in wanted)


def default_placement(*, plan: str, industry: str) -> str:
    """Enterprise tenants in a regulated industry get their own table roots; everyone else shares."""
    return "dedicated" if plan == "enterprise" and industry in REGULATED_INDUSTRIES else "pooled"


def dependants_of(module: str, enabled: Iterable[str]) -> list[str]:
    """The enabled modules that need `module`."""
    return sorted(m for m in enabled if module in MODULE_REQUIRES.get(m, ()))


def check_can_enable(tenant_id: str, module: str, enabled: Iterable[str]) -> None:
    enabled = set(enabled)
    missing = [dep for dep in MODULE_REQUIRES.get(module, ()) if dep not in enabled]
    if missing:
        raise ModuleDependencyError(
            f"cannot enable {module!r} for tenant {tenant_id!r}: it requires {', '.join(missing)} "
            "(enable it first)",
            tenant=tenant_id,
            module=module,
            requires=missing,
        )


def check_can_disable(tenant_id: str, module: str, enabled: Iterable[str]) -> None:
    dependants = dependants_of(module, enabled)
    if dependants:
        raise ModuleDependencyError(
            f"cannot disable {module!r} for tenant {tenant_id!r}: enabled modules depend on it: "
            f"{', '.join(dependants)} (disable them first)",
            tenant=tenant_id,
            module=module,
            dependants=dependants,
        )


def check_transition(tenant_id: str, current: str, target: str) -> None:
    if target not in STATUS_TRANSITIONS[current]:
        raise InvalidStateError(
            f"tenant {tenant_id!r} is {current}: it cannot become {target}",
            tenant=tenant_id,
            status=current,
            target=target,
        )
