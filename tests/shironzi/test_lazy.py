"""Lazy package exports: a name loads its module on first access and is cached; the three packages that
use the helper stay light to import (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from shironzi.lazy import lazy_attribute


def test_a_lazy_name_loads_its_module_and_is_cached_in_the_namespace() -> None:
    namespace: dict[str, Any] = {}
    assert lazy_attribute("pkg", {"dumps": "json"}, "dumps", namespace) is json.dumps
    assert namespace == {"dumps": json.dumps}


def test_an_unknown_name_is_an_attribute_error_naming_the_package() -> None:
    with pytest.raises(AttributeError, match="module 'pkg' has no attribute 'nope'"):
        lazy_attribute("pkg", {"dumps": "json"}, "nope", {})


CHECK = """
import sys
import feature_store, shironzi.audit, shironzi.lake
heavy = ("shironzi.lake.delta", "shironzi.audit.log", "feature_store.offline")
assert not [m for m in heavy if m in sys.modules], [m for m in heavy if m in sys.modules]
assert shironzi.lake.append is sys.modules["shironzi.lake.delta"].append and "append" in vars(shironzi.lake)
assert shironzi.audit.audit.__module__ == "shironzi.audit.log" and "audit" in vars(shironzi.audit)
assert feature_store.build_features.__module__ == "feature_store.offline"
for package in (feature_store, shironzi.audit, shironzi.lake):
    assert not hasattr(package, "no_such_name"), package
print("ok")
"""


def test_the_packages_load_their_exports_on_first_use() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
