"""Builds run as several dbt invocations (the Airflow `dbt_build` DAG: one task per model) decide once per run
what the run does: whether it rebuilds in full, and which tenants it adds and removes (`plan_build`); every
model's build gets the same `changes`; the state is recorded when all succeeded (`finish_build`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from shironzi.lake import table_version
from shironzi.settings import Settings, get_settings
from transformations.dbt_runner import (
    _changes_since_build,
    _check_region,
    _full_refresh_needed,
    _invoke,
    bronze_events_uri,
    build_tables,
    dbt_home,
    write_registry_snapshot,
)
from transformations.dbt_state import (
    TenantChanges,
    delete_removed_tenants,
    read_build_state,
    record_build_state,
    tenant_changes,
)


def plan_build(*, region: str, settings: Settings | None = None, tenant_id: str | None = None) -> dict[str, Any]:
    """Whether the run rebuilds in full, and otherwise which tenants it adds (`changes`, for every model's
    `run_dbt_build(changes=...)`) and removes (their rows are deleted here, one predicate per table)."""
    settings = settings or get_settings()
    _check_region(settings, region)
    _, enabled = write_registry_snapshot(region=region, settings=settings, tenant_id=tenant_id)
    bronze = bronze_events_uri(settings, region, tenant_id)
    changes = _changes_since_build(settings, region, enabled, tenant_id, bronze)
    full = _full_refresh_needed(changes, bronze, settings)
    if not full and changes.removed:

        def parse() -> Path:
            _invoke("parse", settings=settings, region=region, tenant_id=tenant_id)
            return dbt_home(settings, region, tenant_id) / "target" / "manifest.json"

        delete_removed_tenants(settings, build_tables(settings, region, tenant_id, parse), changes.removed)
    return {
        "full_refresh": full,
        "changes": changes.as_dict(),
        "bronze_version": table_version(bronze, storage_options=settings.storage_options or None),
    }


def finish_build(
    planned: Mapping[str, Any], *, region: str, settings: Settings | None = None, tenant_id: str | None = None
) -> None:
    """Record the state a plan led to, once every model of the run succeeded: the tenants built before, plus the
    added, minus the removed (a full refresh records the registry's analytics tenants as they are now)."""
    settings = settings or get_settings()
    changes = TenantChanges.from_dict(dict(planned["changes"]))
    state = read_build_state(settings, region, tenant_id)
    if planned.get("full_refresh") or state is None:
        _, tenants = write_registry_snapshot(region=region, settings=settings, tenant_id=tenant_id)
    else:
        tenants = (state[0] - set(changes.removed)) | set(changes.added)  # an erased tenant is both: rebuilt
    record_build_state(
        settings, region, tenants=tenants, bronze_version=planned.get("bronze_version"), tenant_id=tenant_id
    )


def needs_full_refresh(*, region: str, settings: Settings | None = None, tenant_id: str | None = None) -> bool:
    """Would `run_dbt_build` rebuild this region's facts (or a dedicated tenant's) in full (no recorded build, or
    bronze lost rows since the last successful one)? A change of the analytics tenants never does."""
    settings = settings or get_settings()
    _check_region(settings, region)
    _, enabled = write_registry_snapshot(region=region, settings=settings, tenant_id=tenant_id)
    changes = tenant_changes(settings, region, enabled, tenant_id)
    return _full_refresh_needed(changes, bronze_events_uri(settings, region, tenant_id), settings)
