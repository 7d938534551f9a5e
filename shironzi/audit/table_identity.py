"""Lake-relative table identities for audit events, so that a home restored elsewhere still resolves them.

A training run records the tables it read as `region/layer/table` (or `region/tenants/<id>/layer/table`,
`_platform/...`): the path under the lake root, resolved against the current settings when read. Tables
outside the lake keep their normalised URI. Events written before this recorded absolute paths; those are
matched best effort by the lake-relative tail of the old path.
"""

from __future__ import annotations

from shironzi.lake.discovery import LakeTable
from shironzi.lake.leases import lake_relative, normalise_uri
from shironzi.settings import get_settings


def _lake_root(lake_uri: str | None) -> str:
    return normalise_uri(lake_uri or get_settings().resolved_lake_uri)


def is_lake_relative(identity: str) -> bool:
    return "://" not in identity and not identity.startswith("/")


def lake_identity(uri: str, *, lake_uri: str | None = None) -> str:
    """`eu-west/gold/dim_customers` for a table URI under the lake root; the normalised URI otherwise."""
    return lake_relative(uri, lake_uri=lake_uri)


def resolve_identity(identity: str, *, lake_uri: str | None = None) -> str:
    """The table's normalised URI under the current lake (identities outside the lake stay as they are)."""
    if is_lake_relative(identity):
        return f"{_lake_root(lake_uri)}/{identity}"
    return normalise_uri(identity)


def identity_matches(identity: str, table: LakeTable | str, *, lake_uri: str | None = None) -> bool:
    """Whether a recorded identity names `table` (a discovered table, or a normalised table URI).

    A lake-relative identity is compared after resolving it; an absolute path from an older event matches
    the same path, or (the home has moved) a path ending in the table's lake-relative part.
    """
    uri = normalise_uri(table.uri if isinstance(table, LakeTable) else table)
    if resolve_identity(identity, lake_uri=lake_uri) == uri:
        return True
    if is_lake_relative(identity):
        return False
    relative = table.relative if isinstance(table, LakeTable) else lake_identity(uri, lake_uri=lake_uri)
    return is_lake_relative(relative) and relative.count("/") >= 2 and identity.rstrip("/").endswith("/" + relative)
