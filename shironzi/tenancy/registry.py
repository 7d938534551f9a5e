"""The tenant registry: event-sourced tenants, modules and API keys on SQLite or PostgreSQL.

`Registry` is a thin facade over its parts, each in its own module on a shared `RegistryStore`:

- `store`: the engine, tenant and event reads, the write path (`_commit`), cache invalidation, `rebuild`;
- `onboarding`: `validate_spec`, `provision_tenant`, `provision_many`, `import_tenants`;
- `lifecycle`: `change_plan`, `suspend`, `resume`, `offboard`, `complete_offboarding`;
- `module_toggles`: `enable_module`, `disable_module`, `is_enabled`, `tenants_with_module` and their cache;
- `api_keys`: `issue_key`, `revoke_key`, `list_keys`, `verify_key` and the key-check cache;
- `channels`: `set_channel`, `tenant_channels`, and the model rollouts' rows (`create_rollout`, `update_rollout`).
"""

from __future__ import annotations

import threading

from shironzi.settings import Settings, get_settings
from shironzi.tenancy.api_keys import ApiKeys
from shironzi.tenancy.channels import ReleaseChannels
from shironzi.tenancy.lifecycle import TenantLifecycle
from shironzi.tenancy.module_settings import ModuleSettings
from shironzi.tenancy.module_toggles import ModuleToggles
from shironzi.tenancy.onboarding import INITIAL_KEY_SCOPES, TenantOnboarding, new_tenant_id
from shironzi.tenancy.placement import TenantPlacement
from shironzi.tenancy.store import MAX_PAGE_SIZE, RebuildResult

__all__ = [
    "INITIAL_KEY_SCOPES",
    "MAX_PAGE_SIZE",
    "RebuildResult",
    "Registry",
    "get_registry",
    "init_registry",
    "new_tenant_id",
    "reset_registries",
]


class Registry(TenantPlacement, TenantOnboarding, TenantLifecycle, ModuleToggles, ModuleSettings, ApiKeys,
               ReleaseChannels):
    """Engine + session factory for one registry database, with the tenancy operations on top."""


# --- one registry per database URL --------------------------------------------------------------------

_registries: dict[str, Registry] = {}
_registries_lock = threading.Lock()


def get_registry(settings: Settings | None = None) -> Registry:
    """The process's registry for the configured database URL (migrated on first use)."""
    settings = settings or get_settings()
    url = settings.resolved_database_url
    registry = _registries.get(url)
    if registry is None:
        with _registries_lock:
            registry = _registries.get(url)
            if registry is None:
                registry = Registry.from_settings(settings)
                _registries[url] = registry
    return registry


def init_registry(settings: Settings | None = None) -> Registry:
    """Create or upgrade the registry schema and return the registry."""
    registry = get_registry(settings)
    registry.init_schema()
    return registry


def reset_registries() -> None:
    """Dispose every cached registry (tests, forks)."""
    with _registries_lock:
        for registry in _registries.values():
            registry.close()
        _registries.clear()
