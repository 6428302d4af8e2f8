"""Finding the Python a stage asks for: explicit path, then per-platform discovery, each candidate verified.

SKELETON (POSIX discovery only): the Windows sources (py launcher, pyenv-win) are added by the interpreter
discovery work. Public API used by other modules: :class:`Interpreter`, :func:`inspect_interpreter`,
:func:`find_python`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from . import proc
from .errors import BadInput, PythonNotFound
from .spec import PythonRequest

_PLATFORM = sys.platform  # seam: tests patch it to "win32" to exercise the Windows branches on Linux
_PROBE = "import json, sys; print(json.dumps({'version': list(sys.version_info[:3]), 'executable': sys.executable, 'implementation': sys.implementation.name}))"


@dataclass(frozen=True)
class Interpreter:
    """A verified interpreter: the path we ran, what it reported, and where we found it."""

    path: Path
    version: tuple[int, int, int]
    source: str
    implementation: str = "cpython"

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


def inspect_interpreter(path: Path, *, source: str = "explicit") -> Interpreter | None:
    """Run ``path`` and return what it reports, or ``None`` if it does not run (broken, removed, not Python)."""
    try:
        result = proc.run([path, "-I", "-c", _PROBE], check=False, timeout=30)
    except proc.CommandError:
        return None
    if result.returncode != 0:
        return None
    try:
        info = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return None
    return Interpreter(Path(path), tuple(info["version"]), source, info.get("implementation", "cpython"))


def find_python(request: PythonRequest, *, explicit: Path | None = None) -> Interpreter:
    """Return the best verified interpreter for ``request`` (``explicit`` wins over discovery)."""
    if explicit is not None:
        return _explicit(request, explicit)
    found = [i for i in (inspect_interpreter(p, source=s) for s, p in _candidates(request)) if i is not None]
    matching = [i for i in found if request.accepts(i.version)]
    if not matching:
        raise PythonNotFound(_not_found_message(request, found))
    return max(matching, key=lambda i: i.version)


def _explicit(request: PythonRequest, path: Path) -> Interpreter:
    interp = inspect_interpreter(path)
    if interp is None:
        raise BadInput(f"--python {path}: not a working Python interpreter")
    if not request.accepts(interp.version):
        raise BadInput(f"--python {path}: is Python {interp.version_text}, the spec asks for {request.text}")
    return interp


def _candidates(request: PythonRequest) -> list[tuple[str, Path]]:
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    out = [("pyenv", p) for p in sorted((root / "versions").glob("*/bin/python")) if p.is_file()]
    for minor in range(8, 16):
        exe = shutil.which(f"python3.{minor}")
        if exe:
            out.append(("PATH", Path(exe)))
    return out


def _not_found_message(request: PythonRequest, found: list[Interpreter]) -> str:
    have = ", ".join(sorted({i.version_text for i in found})) or "none"
    v = request.hint_version
    return (f"no Python matching {request.text!r} found (found: {have}); install it with "
            f"'pyenv install {v}' (or on Windows 'py install {v}' / 'winget install Python.Python.{'.'.join(v.split('.')[:2])}'), "
            "or pass --python PATH")
