"""The package's import graph: layers that only import downwards, so there is no cycle between packages,
hidden or not (an import written inside a function counts like any other), and no cycle between the
modules of a package. Imports under ``if TYPE_CHECKING:`` are annotations, not arrows, and are left out.

A new top-level module or package must be given a layer here: that is where its place in the
architecture is decided."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import robustloss

SOURCE = Path(robustloss.__file__).parent

# Top to bottom; a unit may import its own layer's units only if no cycle results (checked below).
LAYERS = [
    {"__main__", "launch"},
    {"cli", "demo"},
    {"report"},
    {"experiments"},
    {"analysis"},
    {"evaluate"},
    {"defenses"},
    {"train"},
    {"attacks"},
    {"models", "losses"},
    {"data", "reference"},
    {"distributed", "checkpoint", "figures", "precision", "progress", "device", "config"},
    {"registry", "errors", "__init__"},
]
RANK = {unit: depth for depth, layer in enumerate(LAYERS) for unit in layer}


def _modules() -> dict[str, Path]:
    found = {}
    for path in SOURCE.rglob("*.py"):
        parts = list(path.relative_to(SOURCE.parent).with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes inside ``if TYPE_CHECKING:`` blocks."""
    hidden = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            hidden |= {id(n) for child in node.body for n in ast.walk(child)}
    return hidden


def _imports() -> dict[str, set[str]]:
    """module -> the robustloss modules it imports at run time (at the top or inside functions)."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        tree = ast.parse(path.read_text())
        hidden = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in hidden:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "robustloss":
                for alias in node.names:
                    target = f"{node.module}.{alias.name}"
                    graph[name].add(target if target in modules else node.module)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name in modules}
        graph[name].discard(name)
    return graph


def _unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(set(graph) | {t for ts in graph.values() for t in ts}):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
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
    return found


def test_every_package_and_module_has_a_layer():
    units = {_unit(m) for m in _modules()}
    assert units - set(RANK) == set(), "give these a layer in LAYERS"


def test_imports_only_go_down_the_layers():
    upward = sorted(f"{module} -> {target}" for module, targets in _imports().items() for target in targets
                    if RANK[_unit(target)] < RANK[_unit(module)])
    assert upward == []


def test_no_cycles_between_packages():
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in _imports().items():
        packages[_unit(module)] |= {_unit(t) for t in targets if _unit(t) != _unit(module)}
    assert _cycles(packages) == []


def test_no_cycles_between_modules():
    assert _cycles(_imports()) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
