"""The package's layout as the README promises it: every module listed in ``mlops_kit/__init__`` (and nothing
else), each opening with a docstring that names its job, and no import cycle between them."""

from __future__ import annotations

import ast
import re

from helpers import SCRIPTS

PACKAGE = SCRIPTS / "mlops_kit"
MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")


def _imports(module: str) -> set[str]:
    """The package modules ``module`` imports, at module level or inside functions (``from . import x``,
    ``from .x import y``)."""
    found = set()
    for node in ast.walk(ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            names = [node.module.split(".")[0]] if node.module else [alias.name for alias in node.names]
            found.update(name for name in names if name in MODULES)
    return found


def test_init_lists_every_module_and_only_those() -> None:
    listed = set(re.findall(r"``(\w+)``", ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))))
    assert listed == set(MODULES)


def test_every_module_opens_with_its_job() -> None:
    for module in MODULES:
        doc = ast.get_docstring(ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8")))
        assert doc and len(doc.splitlines()[0]) > 20, module


def test_no_import_cycle() -> None:
    graph = {module: _imports(module) for module in MODULES}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, " -> ".join((*path, module))
        if module in done:
            return
        for imported in graph[module]:
            visit(imported, (*path, module))
        done.add(module)

    for module in MODULES:
        visit(module, ())


def test_entry_points_are_thin() -> None:
    """The scripts parse arguments and call the modules: no logic of their own beyond a few small helpers."""
    for script in ("create_venv.py", "run_notebook.py", "run_pipeline.py", "replay_run.py"):
        tree = ast.parse((SCRIPTS / script).read_text(encoding="utf-8"))
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert all(n.end_lineno - n.lineno < 60 for n in functions), script
