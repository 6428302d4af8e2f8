"""Fake Windows Python tooling that runs for real on Linux: a ``py`` launcher and a pyenv-win layout.

Both point at real interpreters (the pyenv Pythons of this machine) through symlinks named ``python.exe``, so the
code under test parses the documented output, then runs the listed paths exactly as it would on Windows.

Formats copied from CPython's sources:

* old launcher (``PC/launcher.c``, 3.7-3.10) ``show_python_list()``: stdout gets ``"\\n %-15ls%ls"`` per entry with
  the tag ``"-%ls-%d"`` (version, bits); the header ``Installed Pythons found by py Launcher for Windows``, the
  default marker ``" *"`` and ``No Installed Pythons Found!`` go to stderr; exit ``RC_NO_PYTHON`` (103) when
  nothing is installed (early builds returned 103 for every list call).
* new launcher (``PC/launcher2.c``, 3.11+) ``_printEnvironment()``: ``" %-16s %s\\n"`` with ``-V:<tag>`` for
  PythonCore or ``-V:<Company>/<tag>``, ``" *"`` appended to the default's argument; with nothing registered,
  ``listEnvironments()`` prints ``No installed Pythons found!`` on stdout and the list call exits 0.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path

RC_NO_PYTHON = 103
RC_NO_PYTHON_AT_ALL = 112

_LAUNCHER = '''#!{python}
"""Fake py.exe ({generation} generation): answers -0p / --list-paths like CPython's launcher does."""
import sys

ENTRIES = {entries!r}  # (tag, path, is_default)
EXIT_CODE = {exit_code!r}


def old():
    sys.stderr.write("Installed Pythons found by py Launcher for Windows")
    if not ENTRIES:
        sys.stderr.write("\\nNo Installed Pythons Found!")
    for tag, path, default in ENTRIES:
        sys.stdout.write("\\n %-15s%s" % (tag, path))
        sys.stdout.flush()
        if default:
            sys.stderr.write(" *")
    sys.stderr.write("\\n\\n")
    return {old_default_rc} if not ENTRIES else 0


def new():
    if not ENTRIES:
        sys.stdout.write("No installed Pythons found!\\n")
        return 0
    for tag, path, default in ENTRIES:
        argument = tag + (" *" if default else "")
        sys.stdout.write(" %-16s %s\\n" % (argument, path))
    return 0


def main():
    if sys.argv[1:] not in (["-0p"], ["--list-paths"]):
        sys.stderr.write("fake py launcher: only -0p / --list-paths are implemented\\n")
        return 109
    code = {function}()
    return code if EXIT_CODE is None else EXIT_CODE


sys.exit(main())
'''


@dataclass(frozen=True)
class Entry:
    """One registered Python as the launcher lists it."""

    tag: str  # "-3.8-64" (old) or "-V:3.11" / "-V:Company/Tag" (new)
    path: Path
    default: bool = False


def link_python(path: Path, target: Path) -> Path:
    """Make ``path`` (e.g. ``...\\Python38\\python.exe``) a symlink to a real interpreter."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)
    return path


def write_script(path: Path, body: str) -> Path:
    """An executable file at ``path`` (used for broken candidates: exits 1, prints garbage, not a program)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    path.chmod(0o755)
    return path


def make_py_launcher(bindir: Path, entries: list[Entry], *, generation: str = "new",
                     exit_code: int | None = None) -> Path:
    """Write an executable ``bindir/py`` that lists ``entries`` in the given launcher generation's format."""
    assert generation in ("old", "new")
    text = _LAUNCHER.format(
        python=sys.executable, generation=generation, exit_code=exit_code,
        entries=[(e.tag, os.fspath(e.path), e.default) for e in entries],
        function=generation, old_default_rc=RC_NO_PYTHON,
    )
    return write_script(bindir / "py", text)


def make_pyenv_win(root: Path, versions: dict[str, Path]) -> Path:
    """A pyenv-win tree ``root/versions/<ver>/python.exe`` (no ``bin``) linking to real interpreters."""
    for version, target in versions.items():
        link_python(root / "versions" / version / "python.exe", target)
    (root / "bin").mkdir(parents=True, exist_ok=True)
    (root / "shims").mkdir(parents=True, exist_ok=True)
    return root
