"""The import direction of docs/architecture.md, read from the source with `ast`: serving never imports
ingestion (it reaches the contract check and the events producer through `shironzi.intake`), and the
kernel imports no other package of the project. Function-local imports count too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROJECT_PACKAGES = ("ingestion", "transformations", "feature_store", "models", "serving", "apps", "orchestration")


def imported_modules(source: str) -> set[str]:
    """Every absolute module an `import` or `from ... import` statement names, wherever it stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def offending_imports(package: str, forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    offences: dict[str, list[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        bad = sorted(
            name for name in imported_modules(path.read_text()) if name.split(".", 1)[0] in forbidden
        )
        if bad:
            offences[str(path.relative_to(ROOT))] = bad
    return offences


def test_the_scanner_sees_function_local_and_from_imports() -> None:
    source = "import os\ndef f():\n    from ingestion.contracts import x\n    import ingestion.stream\n"
    source += "from . import y\n"
    assert imported_modules(source) == {"os", "ingestion.contracts", "ingestion.stream"}


def test_serving_never_imports_ingestion() -> None:
    assert (ROOT / "serving" / "intake.py").exists()
    assert offending_imports("serving", ("ingestion",)) == {}


@pytest.mark.parametrize("package", ["shironzi"])
def test_the_kernel_imports_no_other_project_package(package: str) -> None:
    assert offending_imports(package, PROJECT_PACKAGES) == {}
