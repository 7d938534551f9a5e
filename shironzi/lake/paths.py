"""Where a table lives. Pooled data: `{lake}/{region}/{layer}/{table}`;
dedicated tenants: `{lake}/{region}/tenants/{tenant_id}/{layer}/{table}`."""

from __future__ import annotations

import re
from typing import Literal, get_args

from shironzi.errors import InvalidInputError

Layer = Literal["bronze", "silver", "gold", "features", "predictions", "quarantine", "audit"]
Placement = Literal["pooled", "dedicated"]
LAYERS: tuple[str, ...] = get_args(Layer)

_NAME = re.compile(r"^[a-z0-9][a-z0-9_\-]{0,127}$")


def _check_name(kind: str, value: str) -> str:
    if not _NAME.match(value):
        raise InvalidInputError(f"invalid {kind} {value!r}: use lowercase letters, digits, '_' or '-'")
    return value


def table_uri(
    lake_uri: str,
    *,
    layer: Layer,
    table: str,
    region: str,
    placement: Placement = "pooled",
    tenant_id: str | None = None,
) -> str:
    """The URI of one Delta table, following the pooled/dedicated path rules."""
    if layer not in LAYERS:
        raise InvalidInputError(f"unknown layer {layer!r}; expected one of {', '.join(LAYERS)}")
    _check_name("table", table)
    _check_name("region", region)
    root = lake_uri.rstrip("/")
    if placement == "dedicated":
        if not tenant_id:
            raise InvalidInputError("a dedicated table path needs a tenant_id")
        return f"{root}/{region}/tenants/{_check_name('tenant id', tenant_id)}/{layer}/{table}"
    if placement != "pooled":
        raise InvalidInputError(f"unknown placement {placement!r}")
    return f"{root}/{region}/{layer}/{table}"


def platform_uri(lake_uri: str, *parts: str) -> str:
    """Platform-wide tables that belong to no region (run logs, manifests, audit receipts)."""
    for part in parts:
        _check_name("path part", part)
    return "/".join([lake_uri.rstrip("/"), "_platform", *parts])
