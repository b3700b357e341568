"""The package's layers import only downward, and no module imports itself back in a circle.

Imports are read with ``ast`` from every module under cnncli/, at module level and inside
functions alike (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "cnncli"

#: Folders bottom to top. A module may import its own layer and the layers below it. The
#: top-level modules (errors.py, files.py, ...) are the bottom layer: small helpers everything
#: may use. The package root ("": ``cnncli/__init__.py``, the public API) builds models from
#: nn, config and parallel; ``__main__`` runs the CLI.
LAYERS = (("nn",), ("config",), ("data",), ("parallel",), ("",), ("training",), ("interop",),
          ("inspect",), ("cli", "__main__"))


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """The cnncli modules ``name`` imports: ``from cnncli.a import b`` counts as cnncli.a.b
    when that is a module, else as cnncli.a; relative imports are resolved."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # import cnncli.a.b.func -> cnncli.a.b
                target = target.rpartition(".")[0]
            if target.split(".")[0] == "cnncli" and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _layer(module: str) -> int:
    """0 for a top-level helper module, else 1 + the index of its folder in LAYERS."""
    top = module.split(".")[1] if "." in module else ""
    for level, names in enumerate(LAYERS, start=1):
        if top in names:
            return level
    if (PACKAGE / f"{top}.py").is_file():
        return 0
    raise AssertionError(f"{module} belongs to no layer: add its folder to LAYERS")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def test_the_graph_sees_every_kind_of_import():
    graph = _graph()
    assert "cnncli.errors" in graph["cnncli.nn.losses"]            # from cnncli.errors import
    assert "cnncli.inspect.pictures" in graph["cnncli.cli.show"]    # from package import module
    assert "cnncli.config" in graph["cnncli"]                        # inside a function
    assert all(target in graph for targets in graph.values() for target in targets)


def test_no_import_cycles():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_layers_import_only_downward():
    graph = _graph()
    upward = sorted(f"{source} -> {target}" for source, targets in graph.items()
                    for target in targets if _layer(target) > _layer(source))
    assert not upward, "upward imports:\n  " + "\n  ".join(upward)


@pytest.mark.parametrize("source, target, upward", [
    ("cnncli.data.download", "cnncli.files", False),
    ("cnncli.errors", "cnncli.nn.losses", True),
    ("cnncli", "cnncli.parallel.threads", False),
    ("cnncli.training.checkpoint", "cnncli", False),
    ("cnncli.nn.model", "cnncli.config.resolve", True),
    ("cnncli.cli.show", "cnncli.inspect.pictures", False),
    ("cnncli.training.checkpoint", "cnncli.inspect.plot", True),
])
def test_layer_order(source, target, upward):
    assert (_layer(target) > _layer(source)) is upward


def test_cycle_finder_reports_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c"]]
