"""The package's import graph, read with `ast`: every module's run-time imports (imports under
`if TYPE_CHECKING:` are type hints only and are not edges). Used by the layer table's tests
(test_layers.py) and the import-each-module-alone test (test_import_alone.py)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "agenthuman_local"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def runtime_imports(tree: ast.AST, module: str) -> set[str]:
    """Absolute names of every module imported at run time, package-local ones without prefix."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = ("agenthuman_local." + module).split(".")[: -node.level]
                base = ".".join([*anchor, base]) if base else ".".join(anchor)
            found.add(base)
            # The names may be submodules: `from aiohttp import web` is an edge to aiohttp.web.
            found.update(f"{base}.{alias.name}" for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    local = set()
    for name in found:
        if name == "agenthuman_local" or name.startswith("agenthuman_local."):
            inner = name.removeprefix("agenthuman_local").lstrip(".")
            if inner and _module_exists(inner):
                local.add(inner)
        else:
            local.add("!" + name)  # third party / stdlib, marked
    return local


def _module_exists(name: str) -> bool:
    base = PACKAGE.joinpath(*name.split("."))
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def graph() -> dict[str, set[str]]:
    edges = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = module_name(path)
        if not module:
            continue
        edges[module] = runtime_imports(ast.parse(path.read_text(encoding="utf-8")), module)
    return edges
