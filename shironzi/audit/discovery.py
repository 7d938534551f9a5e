"""Find every Delta table under the lake (by its `_delta_log` directory) and list its files directly."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from shironzi.lake.filesystem import lake_filesystem
from shironzi.lake.paths import LAYERS
from shironzi.settings import get_settings


@dataclass(frozen=True)
class LakeTable:
    """One discovered Delta table and where it sits in the lake layout."""

    uri: str
    relative: str
    region: str | None
    layer: str | None
    name: str
    tenant_id: str | None  # set for a dedicated tenant's table
    platform: bool  # under `_platform/` (audit, the PII table, manifests)

    @property
    def is_audit(self) -> bool:
        return self.platform and self.relative.startswith("_platform/audit/")


def _classify(root: str, relative: str) -> LakeTable:
    parts = relative.split("/")
    uri = f"{root}/{relative}"
    if parts[0] == "_platform":
        return LakeTable(uri, relative, None, parts[1] if len(parts) > 1 else None, parts[-1], None, True)
    if len(parts) == 5 and parts[1] == "tenants" and parts[3] in LAYERS:
        return LakeTable(uri, relative, parts[0], parts[3], parts[4], parts[2], False)
    if len(parts) == 3 and parts[1] in LAYERS:
        return LakeTable(uri, relative, parts[0], parts[1], parts[2], None, False)
    return LakeTable(uri, relative, parts[0] if len(parts) > 1 else None, None, parts[-1], None, False)


def _walk_local(root: Path) -> Iterator[str]:
    for current, dirs, _files in os.walk(root):
        if "_delta_log" in dirs:
            yield Path(current).relative_to(root).as_posix()
            dirs[:] = []  # a table's partitions hold no nested tables
            continue
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))


def _is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def _walk_remote(root: str) -> Iterator[str]:
    import pyarrow.fs as pafs

    fs, base = lake_filesystem(root)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    seen: set[str] = set()
    for info in infos:
        if info.type == pafs.FileType.Directory and info.base_name == "_delta_log":
            table = info.path.rsplit("/", 1)[0][len(base.rstrip("/")) + 1 :]
            if table and not any(table.startswith(s + "/") for s in seen):
                seen.add(table)
                yield table


def discover_tables(
    lake_uri: str | None = None, *, include_platform: bool = True, include_audit: bool = False
) -> list[LakeTable]:
    """Every Delta table under the lake, pooled and dedicated (and, by default, platform tables
    except the audit trail itself)."""
    root = (lake_uri or get_settings().resolved_lake_uri).rstrip("/")
    if _is_local(root):
        local = Path(root.removeprefix("file://"))
        relatives = list(_walk_local(local)) if local.exists() else []
    else:
        relatives = list(_walk_remote(root))
    tables = [_classify(root, rel) for rel in sorted(relatives) if rel not in ("", ".")]
    return [t for t in tables if (include_platform or not t.platform) and (include_audit or not t.is_audit)]


def list_parquet_files(table_uri: str) -> list[str]:
    """Every Parquet file under the table directory, referenced by the log or not (for erasure scans)."""
    if _is_local(table_uri):
        root = Path(table_uri.removeprefix("file://"))
        return sorted(
            str(p) for p in root.rglob("*.parquet") if "_delta_log" not in p.relative_to(root).parts
        )
    import pyarrow.fs as pafs

    fs, base = lake_filesystem(table_uri)
    infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
    scheme = table_uri.split("://", 1)[0]
    return sorted(
        f"{scheme}://{i.path}" for i in infos if i.path.endswith(".parquet") and "/_delta_log/" not in i.path
    )


def list_log_files(table_uri: str) -> list[str]:
    """The table's `_delta_log` commit JSON and checkpoint files."""
    if _is_local(table_uri):
        log = Path(table_uri.removeprefix("file://")) / "_delta_log"
        return (
            sorted(str(p) for p in log.iterdir() if p.suffix in (".json", ".parquet")) if log.exists() else []
        )
    import pyarrow.fs as pafs

    fs, base = lake_filesystem(table_uri + "/_delta_log")
    infos = fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    scheme = table_uri.split("://", 1)[0]
    return sorted(f"{scheme}://{i.path}" for i in infos if i.path.endswith((".json", ".parquet")))
