"""docs/architecture.md stays a true map: it names every package of the tree, draws the import direction
in a mermaid diagram and lists every entry-point group that pyproject.toml declares."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = (ROOT / "docs" / "architecture.md").read_text()
TOP = ("shironzi", "ingestion", "transformations", "feature_store", "models", "serving", "apps", "orchestration",
       "monitoring")


def test_every_package_is_named() -> None:
    packages = sorted(
        str(init.parent.relative_to(ROOT))
        for top in TOP
        for init in (ROOT / top).rglob("__init__.py")
        if "migrations" not in init.parts
    )
    missing = [p for p in packages if f"{p.rsplit('/', 1)[-1]}/" not in DOC]
    assert missing == [], f"docs/architecture.md does not name {missing}"


def test_the_import_direction_is_drawn() -> None:
    assert "```mermaid" in DOC and "flowchart" in DOC
    for top in TOP:
        assert f"{top}/" in DOC


def test_every_entry_point_group_is_listed() -> None:
    groups = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    listed = set(re.findall(r"`(shironzi\.[a-z_]+)`", DOC))
    assert set(groups) <= listed, set(groups) - listed
