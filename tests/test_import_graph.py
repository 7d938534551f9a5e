"""The project's modules import each other without a circle.

Every project package is parsed with `ast` (nothing is imported), every `import` and `from ... import`
becomes an edge, including the ones inside functions, which hide a circle from the interpreter without
removing it. Imports under `if TYPE_CHECKING:` are left out: they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("shironzi", "ingestion", "transformations", "feature_store", "models", "serving", "apps", "orchestration",
            "dbt_project", "monitoring")
# Packages whose modules import the project at the top of the file (heavy third-party libraries stay lazy), and
# the modules that must not: a CLI plugin loads at every `shironzi` start.
TOP_LEVEL_IMPORTS = ("models", "serving", "feature_store", "apps", "ingestion", "shironzi")
LAZY_BY_DESIGN = (
    # CLI plugin modules: every `shironzi` start loads them.
    "models.cli", "serving.cli", "feature_store.cli", "apps.cli", "ingestion.synthetic.cli", "monitoring.cli",
    "ingestion.dr_cli",
    # Its whole job is to import the dashboards' stack (streamlit, polars, delta-rs) before Streamlit starts.
    "apps.warm_start",
)
# Single lazy imports inside a module that otherwise imports at the top: (module, imported module) -> reason.
LAZY_IMPORTS = {
    # the audit log loads pyarrow/numpy/cloudpickle; at the top it would double `import shironzi.tenancy`
    ("shironzi.tenancy.store", "shironzi.audit.admin"),
    # warm_up() exists to import the data layer while the sign-in form is on screen
    ("apps.auth", "apps.data"),
}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project packages."""
    found: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if all(part.isidentifier() for part in parts):
                found[".".join(parts)] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement under `node`, at any depth, except the bodies of `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                if isinstance(other, ast.Import | ast.ImportFrom):
                    yield other
                yield from _imports(other)
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child
        yield from _imports(child)


def _resolve_from(module: str, path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """module -> the project modules it imports (a `from package import name` counts as the submodule when
    `name` is one, else as the package)."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = _resolve_from(module, path, node)
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            for target in targets:
                while target and target not in modules:  # `import a.b.c` where only a.b is a module here
                    target = target.rpartition(".")[0]
                if target and target != module:
                    graph[module].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(start: str) -> None:
        nonlocal counter
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(found)


def test_the_graph_sees_function_local_imports(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "__init__.py").write_text("")
    (tmp_path / "models" / "a.py").write_text("def f():\n    from models.b import g\n")
    (tmp_path / "models" / "b.py").write_text("from . import a\nfrom typing import TYPE_CHECKING\n"
                                              "if TYPE_CHECKING:\n    from models import c\n")
    (tmp_path / "models" / "c.py").write_text("import models.a\n")
    graph = import_graph(project_modules(tmp_path))
    assert graph["models.a"] == {"models.b"} and graph["models.b"] == {"models.a"}
    assert cycles(graph) == [["models.a", "models.b"]]


def test_no_import_cycles() -> None:
    found = cycles(import_graph(project_modules()))
    assert found == [], "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def _function_local_project_imports(module: str, path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for function in ast.walk(tree):
        if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        for node in ast.walk(function):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            found += [f"{path.name}:{node.lineno} {name}" for name in names if name.split(".")[0] in PACKAGES
                      and (module, name) not in LAZY_IMPORTS]
    return found


@pytest.mark.parametrize("package", TOP_LEVEL_IMPORTS)
def test_project_modules_are_imported_at_the_top(package: str) -> None:
    modules = {name: path for name, path in project_modules().items()
               if name.split(".")[0] == package and name not in LAZY_BY_DESIGN}
    assert modules
    local = [hit for name, path in modules.items() for hit in _function_local_project_imports(name, path)]
    assert local == [], "function-local imports of project modules:\n" + "\n".join(local)
