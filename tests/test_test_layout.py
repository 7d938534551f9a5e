"""The tests' own layout: shared helpers live in underscore modules (`tests/<area>/_fixtures.py`, and the real
service launchers in `tests/_services.py`), and no test imports from another test module or a conftest."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _test_files() -> list[Path]:
    return sorted(p for p in TESTS.rglob("*.py") if "__pycache__" not in p.parts)


def test_helper_modules_are_underscore_modules() -> None:
    helpers = [
        p.relative_to(TESTS).as_posix()
        for p in _test_files()
        if not (p.name.startswith(("test_", "_")) or p.name == "conftest.py")
    ]
    assert helpers == [], f"name test helper modules _fixtures.py (or another _module): {helpers}"


def test_no_test_imports_a_test_module_or_a_conftest() -> None:
    offending = []
    for path in _test_files():
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            )
            for name in names:
                last = name.rsplit(".", 1)[-1]
                if name.startswith("tests.") and (last.startswith("test_") or last == "conftest"):
                    offending.append(f"{path.relative_to(TESTS)}: {name}")
    assert offending == [], f"move shared helpers into a _fixtures module: {offending}"
