"""The package's layout as the README promises it: five subpackages that are the architecture, every module listed
in its subpackage's docstring (and nothing else), each module opening with a docstring that names its job, no import
cycle, and no import against the layers (core <- envs <- run <- {replay, rehearsal})."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from helpers import SCRIPTS

PACKAGE = SCRIPTS / "mlops_kit"
# What each layer may import besides itself: a lower layer never imports a higher one, and the two top layers
# (replaying a record, rehearsing a GoCD config) never import each other.
ALLOWED = {
    "core": set(),
    "envs": {"core"},
    "run": {"core", "envs"},
    "replay": {"core", "envs", "run"},
    "rehearsal": {"core", "envs", "run"},
}
MODULES = {f"{sub}.{p.stem}": p for sub in ALLOWED for p in sorted((PACKAGE / sub).glob("*.py"))
           if p.stem != "__init__"}


def _docstring(path: Path) -> str:
    return ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""


def _imports(module: str) -> set[str]:
    """The package modules ``module`` (``sub.name``) imports, at module level or inside functions."""
    sub = module.split(".")[0]
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text(encoding="utf-8"))):
        if not isinstance(node, ast.ImportFrom) or node.level == 0:
            continue
        assert node.level <= 2, f"{module}: import from above the package ({'.' * node.level}{node.module})"
        parts = (node.module or "").split(".") if node.module else []
        package = sub if node.level == 1 else (parts.pop(0) if parts else "")
        if parts:
            found.add(f"{package}.{parts[0]}")
        else:
            found.update(f"{package}.{alias.name}" for alias in node.names if f"{package}.{alias.name}" in MODULES)
    return found


def test_every_subpackage_says_its_job_and_what_it_may_import() -> None:
    for sub, allowed in ALLOWED.items():
        doc = _docstring(PACKAGE / sub / "__init__.py")
        assert len(doc.splitlines()[0]) > 20, sub
        may = re.search(r"May import: (.*?)\.", doc)
        assert may, f"{sub}/__init__.py does not say what it may import"
        named = set(re.findall(r"``(\w+)``", may.group(1)))
        assert named == allowed, (sub, named)


def test_each_subpackage_lists_its_modules_and_only_those() -> None:
    for sub in ALLOWED:
        listed = set(re.findall(r"^\* ``(\w+)``", _docstring(PACKAGE / sub / "__init__.py"), re.MULTILINE))
        assert listed == {m.split(".")[1] for m in MODULES if m.startswith(f"{sub}.")}, sub


def test_the_top_package_shows_the_layers() -> None:
    doc = _docstring(PACKAGE / "__init__.py")
    for sub in ALLOWED:
        assert f"``{sub}``" in doc, sub
    assert sorted(p.name for p in PACKAGE.iterdir() if p.suffix == ".py") == ["__init__.py"], \
        "every module lives in a subpackage"


def test_every_module_opens_with_its_job() -> None:
    for module, path in MODULES.items():
        doc = _docstring(path)
        assert doc and len(doc.splitlines()[0]) > 20, module


def test_no_import_against_the_layers() -> None:
    wrong = []
    for module in MODULES:
        sub = module.split(".")[0]
        for imported in _imports(module):
            other = imported.split(".")[0]
            if other != sub and other not in ALLOWED[sub]:
                wrong.append(f"{module} imports {imported}")
    assert not wrong, wrong


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
    for script in ("create_venv.py", "run_notebook.py", "run_pipeline.py", "replay_run.py", "doctor.py"):
        tree = ast.parse((SCRIPTS / script).read_text(encoding="utf-8"))
        functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert all(n.end_lineno - n.lineno < 60 for n in functions), script
