"""The speed boundary holds: nn/ (the plain math) imports nothing above it, so no layer can
reach for threads or processes, and parallel/ imports only what lies below it."""

import ast
from pathlib import Path

import pytest

import cnncli

PACKAGE = Path(cnncli.__file__).parent
# What each folder may import from cnncli (the house's layers below it, and itself).
ALLOWED = {"nn": {"cnncli.errors", "cnncli.nn"},
           "parallel": {"cnncli.errors", "cnncli.nn", "cnncli.config", "cnncli.data",
                        "cnncli.parallel"}}


def _cnncli_imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return {name for name in names if name == "cnncli" or name.startswith("cnncli.")}


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_imports_go_downward_only(folder):
    files = sorted((PACKAGE / folder).rglob("*.py"))
    assert files
    for path in files:
        for name in _cnncli_imports(path):
            assert any(name == ok or name.startswith(ok + ".") for ok in ALLOWED[folder]), (
                f"{path.relative_to(PACKAGE)} imports {name}")
