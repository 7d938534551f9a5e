"""dbt's build state is local to a host (SHIRONZI_HOME/dbt/<region>/: the DuckDB file, target/, state.json) while
the lake it builds is shared, so the state is trusted only while the lake agrees with it.

A build records the version of every table its merged (incremental) models own. Before the next build on that
host, a commit other than maintenance past a recorded version means someone else wrote the table (a build on
another host, an erasure): the local state is stale and the facts are rebuilt in full. A host with no state at
all has an empty DuckDB file too, so dbt builds every model in full there anyway.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shironzi.errors import TableNotFoundError
from shironzi.lake import history, table_version
from shironzi.settings import Settings
from transformations.dbt_targets import model_tables

# Commits that change no rows: compaction and z-ordering, vacuum.
MAINTENANCE_OPERATIONS = frozenset({"OPTIMIZE", "VACUUM START", "VACUUM END"})


def merged_table_versions(work: Path, settings: Settings) -> dict[str, int]:
    """The current version of each table a merged model owns, from the build's manifest in `work`."""
    manifest = work / "target" / "manifest.json"
    if not manifest.exists():
        return {}
    options = settings.storage_options or None
    versions = {}
    for table in model_tables(manifest):
        if table.incremental:
            try:
                versions[table.location] = table_version(table.location, storage_options=options)
            except TableNotFoundError:
                continue
    return versions


def record_build(state_file: Path, state: Mapping[str, Any] | None, merged_versions: Mapping[str, int]) -> None:
    """Write the build state with the merged tables' versions the build left behind. A failed incremental build
    passes its predecessor's state (its own merges are no one else's writes); a failed full refresh passes None
    and records nothing, so the next build sees its rewrites as foreign and rebuilds in full again."""
    if state is not None:
        state_file.write_text(json.dumps({**state, "merged_versions": dict(merged_versions)}))


def written_elsewhere(recorded: Mapping[str, int] | None, settings: Settings) -> bool:
    """Did anything but maintenance commit to a merged model's table after this host's last build recorded it?"""
    options = settings.storage_options or None
    for location, version in (recorded or {}).items():
        try:
            current = table_version(location, storage_options=options)
        except TableNotFoundError:
            return True
        if current == version:
            continue
        newer = [c for c in history(location, current - version, storage_options=options) if c["version"] > version]
        if len(newer) < current - version:  # the log was truncated past the recorded version
            return True
        if any(str(c.get("operation", "")).upper() not in MAINTENANCE_OPERATIONS for c in newer):
            return True
    return False
