"""No import cycles among trainerkit's modules.

The graph is built from the source with ``ast``, without importing anything.
An edge ``a -> b`` means that importing module ``a`` runs module ``b`` first:

* only imports executed when the module is imported count: statements at module
  level, including those inside module-level ``if``/``try``/``with`` blocks and
  class bodies. Imports inside functions are lazy (they run at the first call,
  when every module is loaded) and are the sanctioned way to break a cycle;
  imports under ``if TYPE_CHECKING:`` never run;
* ``from .pkg import name`` is an edge to ``pkg.name`` when that is a module,
  else to ``pkg`` (its ``__init__``, whose re-exports are edges of their own);
* importing ``a.b.c`` also runs the ``__init__`` of ``a.b``: an edge to every
  enclosing subpackage, except the root ``trainerkit`` (always initialised
  first) and the importer's own packages (already running).

One layering rule is stricter: the trainer core never reaches the config
loader or the type registry, not even lazily (they build trainers, not the
other way round).
"""

from __future__ import annotations

import ast
import os
from typing import Iterator, Optional

PACKAGE = "trainerkit"
PACKAGE_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), PACKAGE)


def _module_files() -> dict[str, str]:
    """Dotted module name -> file, for every module of the package."""
    modules: dict[str, str] = {}
    root = os.path.dirname(PACKAGE_DIR)
    for directory, subdirectories, files in os.walk(PACKAGE_DIR):
        subdirectories[:] = [d for d in subdirectories if os.path.exists(os.path.join(directory, d, "__init__.py"))]
        for file in files:
            if not file.endswith(".py"):
                continue
            parts = os.path.relpath(os.path.join(directory, file), root)[: -len(".py")].split(os.sep)
            if parts[-1] == "__init__":
                parts.pop()
            modules[".".join(parts)] = os.path.join(directory, file)
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _statements(body: list[ast.stmt], lazy: bool) -> Iterator[ast.stmt]:
    """The statements of ``body`` that run when the module is imported (with
    ``lazy``, also those inside functions); never ``if TYPE_CHECKING:`` blocks."""
    for node in body:
        yield node
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            if lazy:
                yield from _statements(node.body, lazy)
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _statements(node.body, lazy)
            yield from _statements(node.orelse, lazy)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _statements(block, lazy)
        elif isinstance(node, (ast.With, ast.ClassDef, ast.For, ast.While)):
            yield from _statements(node.body, lazy)


def _resolve_from(module: str, is_package: bool, node: ast.ImportFrom) -> Optional[str]:
    """The absolute module name a ``from ... import`` statement reads from."""
    if node.level == 0:
        return node.module
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level > 1:
        base = base[: -(node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(*, lazy: bool = False) -> dict[str, set[str]]:
    """``module -> modules it imports at import time`` within the package
    (with ``lazy``, also the imports inside its functions)."""
    files = _module_files()
    graph: dict[str, set[str]] = {name: set() for name in files}
    for module, path in files.items():
        is_package = os.path.basename(path) == "__init__.py"
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), path)
        targets: set[str] = set()
        for node in _statements(tree.body, lazy):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                source = _resolve_from(module, is_package, node)
                if source is None:
                    continue
                for alias in node.names:
                    submodule = f"{source}.{alias.name}"
                    targets.add(submodule if submodule in files else source)
        own = set(_ancestors(module)) | {module}
        for target in targets:
            if target not in files:
                continue  # outside the package
            for name in [*_ancestors(target), target]:
                if name != PACKAGE and name not in own and name in files:
                    graph[module].add(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> Optional[list[str]]:
    """One cycle (``[a, b, ..., a]``), or None."""
    WHITE, GREY, BLACK = 0, 1, 2
    colour = dict.fromkeys(graph, WHITE)
    stack: list[str] = []

    def visit(node: str) -> Optional[list[str]]:
        colour[node] = GREY
        stack.append(node)
        for target in sorted(graph[node]):
            if colour[target] == GREY:
                return stack[stack.index(target):] + [target]
            if colour[target] == WHITE:
                cycle = visit(target)
                if cycle:
                    return cycle
        stack.pop()
        colour[node] = BLACK
        return None

    for node in sorted(graph):
        if colour[node] == WHITE:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


# -- the graph builder itself ---------------------------------------------------------


def test_the_graph_sees_relative_subpackage_and_reexport_imports():
    graph = import_graph()
    assert "trainerkit.errors" in graph["trainerkit.config"]  # from .errors import ConfigError
    assert "trainerkit.store" in graph["trainerkit.trainer"]  # from .store import ... (a package)
    assert "trainerkit.store.base" in graph["trainerkit.store"]  # the package's re-export
    assert "trainerkit.info" in graph["trainerkit.store.sqlite"]  # from ..info import ...


def test_imports_inside_functions_and_type_checking_blocks_are_not_edges():
    # registry imports trainer only inside a function and under TYPE_CHECKING.
    assert "trainerkit.trainer" not in import_graph()["trainerkit.registry"]


def test_find_cycle_names_the_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# -- the package ----------------------------------------------------------------------


def test_trainerkit_has_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen: set[str] = set()
    todo = [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_the_trainer_core_never_reaches_config_loading_or_the_registry():
    # The configuration layer builds trainers; the trainers must not need it
    # back, even through an import inside a function.
    reached = _reachable(import_graph(lazy=True), "trainerkit.trainer")
    assert not reached & {"trainerkit.config", "trainerkit.registry"}, sorted(reached)
