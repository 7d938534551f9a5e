"""A pyarrow filesystem for a lake URI, configured from the storage options (for code that lists or reads
lake files directly: discovery, the erasure scans). Local paths get the local filesystem."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from shironzi.settings import get_settings

if TYPE_CHECKING:
    import pyarrow.fs as pafs


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _s3_options(options: Mapping[str, str]) -> dict[str, object]:
    """pyarrow S3FileSystem arguments from delta-rs/object_store S3 options (AWS_* or short names)."""
    given = {k.lower().removeprefix("aws_"): v for k, v in options.items()}
    kwargs: dict[str, object] = {}
    endpoint = given.get("endpoint_url") or given.get("endpoint")
    if endpoint:
        parts = urlsplit(endpoint)
        kwargs["endpoint_override"] = parts.netloc or endpoint
        kwargs["scheme"] = parts.scheme or "https"
    if given.get("access_key_id"):
        kwargs["access_key"] = given["access_key_id"]
        kwargs["secret_key"] = given.get("secret_access_key", "")
        if given.get("session_token"):
            kwargs["session_token"] = given["session_token"]
    if given.get("region") or given.get("default_region"):
        kwargs["region"] = given.get("region") or given["default_region"]
    return kwargs


def lake_filesystem(
    uri: str, storage_options: Mapping[str, str] | None = None
) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for `uri`; object stores use `storage_options` (default: the settings')."""
    import pyarrow.fs as pafs

    if is_local(uri):
        return pafs.LocalFileSystem(), uri.removeprefix("file://")
    options = get_settings().storage_options if storage_options is None else storage_options
    scheme, rest = uri.split("://", 1)
    if scheme in ("s3", "s3a"):
        return pafs.S3FileSystem(**_s3_options(options)), rest  # type: ignore[arg-type]
    return pafs.FileSystem.from_uri(uri)
