#!/usr/bin/env python3
"""Import graph of the product modules: no circles, and the layering of docs/architecture.md.

Usage: ``python tools/check_imports.py [REPO_ROOT]``. Exit 0 when the tree passes, 1 listing every
problem (2: the tree could not be read).

The graph (built with ``ast``; nothing is imported or run):

* nodes: every module of the ``ecg_atlas`` import package, found through the package-dir mapping
  in pyproject.toml (``ecg_atlas.embedder`` -> ``embedder/``, ``ecg_atlas.v1`` ->
  ``proto/ecg_atlas/v1``, ...): a package is a folder with ``__init__.py``;
* edges: every ``import`` / ``from ... import`` anywhere in a module, function-level (lazy)
  imports included, relative ones resolved. ``from P import N`` is an edge to the module ``P.N``
  when there is one, else to ``P``. Imports under ``if TYPE_CHECKING:`` never run and are left out.
  Importing ``P.M`` runs ``P/__init__.py`` first, but that implied edge to the parent package is
  not drawn: a package's ``__init__`` importing its own submodules is the usual layout, and it only
  closes a circle when a submodule imports the package itself by name, which is an explicit edge;
* dynamic imports: where a module calls ``importlib.import_module`` (or ``__import__``) on a
  computed name (a table of lazy exports or subcommands), every string constant in that module
  naming one of its own package's modules (``__main__`` aside: ``python -m`` runs it, nothing
  imports it) counts as an import of it; a constant name is resolved like an ``import`` statement.

Checks:

1. circles: every strongly connected component of more than one module is listed, with each of
   its edges (file and line);
2. layering: ``ecg_atlas.embedder`` and ``ecg_atlas.index`` never import each other, and neither
   imports ``ecg_atlas.analysis``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT_PACKAGE = "ecg_atlas"
#: (importer prefix, imported prefix, why it is forbidden)
FORBIDDEN = (
    ("ecg_atlas.embedder", "ecg_atlas.index", "embedder and index never import each other"),
    ("ecg_atlas.index", "ecg_atlas.embedder", "embedder and index never import each other"),
    ("ecg_atlas.embedder", "ecg_atlas.analysis", "analysis sits above embedder: embedder never imports it"),
    ("ecg_atlas.index", "ecg_atlas.analysis", "analysis sits above index: index never imports it"),
)
DYNAMIC_IMPORTERS = {"import_module", "__import__"}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: Path
    line: int


def package_dirs(root: Path) -> dict[str, Path]:
    """Import package -> folder, from pyproject.toml (the root package maps to its own name)."""
    with open(root / "pyproject.toml", "rb") as fh:
        tool = tomllib.load(fh).get("tool", {}).get("setuptools", {})
    mapping = {name: root / folder for name, folder in tool.get("package-dir", {}).items() if name}
    mapping.setdefault(ROOT_PACKAGE, root / ROOT_PACKAGE)
    return mapping


def find_modules(root: Path) -> dict[str, Path]:
    """Module name -> file, for every module under the mapped package folders."""
    mapping = package_dirs(root)
    mapped_dirs = {folder.resolve() for folder in mapping.values()}
    modules: dict[str, Path] = {}

    def walk(package: str, folder: Path) -> None:
        if not (folder / "__init__.py").is_file():
            return
        modules[package] = folder / "__init__.py"
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and entry.resolve() not in mapped_dirs:
                walk(f"{package}.{entry.name}", entry)
            elif entry.suffix == ".py" and entry.name != "__init__.py":
                modules[f"{package}.{entry.stem}"] = entry

    for package, folder in mapping.items():
        walk(package, folder)
    return modules


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """ids of the statements under ``if TYPE_CHECKING:`` (never run)."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            name = test.id if isinstance(test, ast.Name) else test.attr if isinstance(test, ast.Attribute) else ""
            if name == "TYPE_CHECKING":
                for child in node.body:
                    skipped.update(id(n) for n in ast.walk(child))
    return skipped


def _known(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of dotted ``name`` that is a module of ours (None: not ours)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def _package_of(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _absolute(module: str, path: Path, level: int, name: str | None) -> str:
    """The absolute module a (possibly relative) import names."""
    if not level:
        return name or ""
    base = _package_of(module, path).split(".")
    base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> Iterator[Edge]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    skipped = _type_checking_nodes(tree)
    dynamic = False
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, path, node.level, node.module)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.append(full if full in modules else base)
        elif isinstance(node, ast.Call) and _called_name(node.func) in DYNAMIC_IMPORTERS and node.args:
            first = node.args[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str):
                package = next((kw.value.value for kw in node.keywords if kw.arg == "package"
                                and isinstance(kw.value, ast.Constant)), None)
                name = first.value
                if name.startswith(".") and package:
                    level = len(name) - len(name.lstrip("."))
                    base = package.split(".")
                    name = ".".join([*base[: len(base) - (level - 1)], name.lstrip(".")])
                targets = [name]
            else:
                dynamic = True
        for target in targets:
            found = _known(target, modules)
            if found and found != module:
                yield Edge(module, found, path, node.lineno)
    if dynamic:
        package = _package_of(module, path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value != "__main__":
                target = f"{package}.{node.value}"
                if target in modules and target != module:
                    yield Edge(module, target, path, node.lineno)


def _called_name(func: ast.expr) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def build_graph(root: Path) -> tuple[dict[str, Path], list[Edge]]:
    modules = find_modules(root)
    edges: dict[tuple[str, str], Edge] = {}
    for module, path in modules.items():
        for edge in imports_of(module, path, modules):
            edges.setdefault((edge.source, edge.target), edge)  # the first place each edge is made
    return modules, list(edges.values())


def cycles(modules: dict[str, Path], edges: list[Edge]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative), sorted."""
    graph: dict[str, list[str]] = {m: [] for m in modules}
    for edge in edges:
        graph[edge.source].append(edge.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(graph[start]))]
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
                    work.append((child, iter(graph[child])))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
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
    return sorted(found)


def layering_violations(edges: list[Edge]) -> list[tuple[Edge, str]]:
    def within(name: str, prefix: str) -> bool:
        return name == prefix or name.startswith(prefix + ".")

    return [(edge, why) for edge in sorted(edges, key=lambda e: (e.source, e.target))
            for importer, imported, why in FORBIDDEN
            if within(edge.source, importer) and within(edge.target, imported)]


def main(argv: list[str]) -> int:
    root = Path(argv[1] if len(argv) > 1 else Path(__file__).resolve().parent.parent).resolve()
    try:
        modules, edges = build_graph(root)
    except (OSError, SyntaxError, tomllib.TOMLDecodeError) as exc:
        print(f"check_imports: cannot read the tree at {root}: {exc}", file=sys.stderr)
        return 2

    def where(edge: Edge) -> str:
        return f"{edge.path.relative_to(root)}:{edge.line}"

    circles = cycles(modules, edges)
    for component in circles:
        members = set(component)
        print(f"import circle among {len(component)} modules: {', '.join(component)}")
        for edge in sorted(edges, key=lambda e: (e.source, e.target)):
            if edge.source in members and edge.target in members:
                print(f"    {edge.source} -> {edge.target}  ({where(edge)})")
    violations = layering_violations(edges)
    for edge, why in violations:
        print(f"layering: {edge.source} imports {edge.target} ({where(edge)}): {why}")
    if circles or violations:
        print(f"check_imports: {len(circles)} import circle(s), {len(violations)} layering violation(s) "
              f"in {len(modules)} modules")
        return 1
    print(f"check_imports: {len(modules)} modules, {len(edges)} imports: no circles, layering holds")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
