"""Lazy package exports: a package names what it re-exports from heavier submodules and loads each on
first use, so that importing the package stays fast.

    _LAZY = {"read_arrow": "shironzi.lake.delta", ...}

    def __getattr__(name: str) -> Any:
        return lazy_attribute(__name__, _LAZY, name, globals())
"""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from importlib import import_module
from typing import Any


def lazy_attribute(package: str, lazy: Mapping[str, str], name: str, namespace: MutableMapping[str, Any]) -> Any:
    """`name` from the module `lazy` maps it to, cached in the package's `namespace` (its globals()) so the
    next access is a plain lookup; AttributeError, as for any module, for a name `lazy` does not hold."""
    module = lazy.get(name)
    if module is None:
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    namespace[name] = value
    return value
