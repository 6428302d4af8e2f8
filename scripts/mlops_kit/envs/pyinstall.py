"""Installing a missing Python with the platform's installer (``create_venv.py --install-python``).

Discovery (:mod:`mlops_kit.envs.interpreters`) runs first; only when it finds nothing is one installer run: the first
one on PATH, in this order (each command below was read from the tool's own documentation or source):

Windows
  1. Python install manager (PEP 773, python.org / Microsoft Store, the 3.14-era ``py``):
     ``pymanager install --yes 3.12`` (or ``3.12.1``). ``pymanager install`` is the documented equivalent of
     ``py install``; we call ``pymanager`` because only the install manager ships it, whereas a ``py.exe`` on PATH
     may be the legacy launcher, which would run a script named ``install``. Tags match by prefix, so ``3.12`` is
     the newest 3.12.x and ``3.12.1`` exactly that release; ``--yes`` answers its prompts (a GoCD agent has none).
  2. winget: ``winget install --id Python.Python.3.12 --exact --source winget --silent --scope user
     --accept-package-agreements --accept-source-agreements`` (+ ``--version 3.12.1`` for an exact request).
     winget ids name a minor only; a patch is chosen with ``--version``, and exists only if python.org published a
     Windows installer for it (security-only releases such as 3.10.13 have none).
  3. pyenv-win: ``pyenv install --quiet 3.12.1``; it needs an exact version, so a minor (or a specifier) becomes
     the newest final ``3.X.Y`` that ``pyenv install --list`` offers and the request accepts.
  4. Chocolatey: ``choco install python312 --yes --no-progress`` (+ ``--version 3.12.1``); the per-minor packages
     ``python3XY`` install to ``%SystemDrive%\\Python3XY`` (machine-wide: needs an elevated shell).

Linux/macOS
  ``pyenv install -s 3.12.1`` (``-s``: skip if present), the patch resolved from ``pyenv install --list`` as above.

A specifier such as ``>=3.10,<3.13`` installs the newest minor in :data:`SUPPORTED_MINORS` that it admits (3.12);
pyenv instead gets the newest release its own list offers within the specifier (its list is the better authority).
No installer: :class:`PythonNotFound` (exit 3) with hints. An installer failing: :class:`PythonNotFound` naming its
command, exit code and last output line; we do not fall through to the next installer, so what ran is auditable.
"""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from ..core import paths, proc
from ..core.console import Echo
from ..core.errors import PythonNotFound
from . import interpreters
from .interpreters import Interpreter
from .spec import PythonRequest

SUPPORTED_MINORS = tuple(range(14, 7, -1))  # 3.14 ... 3.8, newest first: what a specifier may install
_MINOR_TEXT = re.compile(r"^3\.\d{1,2}$")
_RELEASE_LINE = re.compile(r"^\s*3\.(\d+)\.(\d+)\s*$")  # final releases in `pyenv install --list`; no -dev/t/a1
_LIST_TIMEOUT = 120.0


@dataclass(frozen=True)
class InstallMethod:
    """One installer command that would provide the requested Python, and where it puts ``python``."""

    name: str
    argv: tuple[str, ...]
    version: str  # what the command installs: "3.12" (newest patch, installer's choice) or "3.12.1"
    expected: tuple[Path, ...] = ()  # checked when this process cannot see the install yet (stale PATH)

    @property
    def command(self) -> str:
        return proc.format_cmd(self.argv)


# ----------------------------------------------------------------------------------------------- public API


def install_python(request: PythonRequest, *, echo: Echo = print, managed: Path | None = None) -> Interpreter:
    """Return a verified interpreter for ``request``, installing it first when discovery (the uv-managed Pythons in
    ``managed`` included) finds none."""
    try:
        return interpreters.find_python(request, managed=managed)
    except PythonNotFound:
        pass
    plan, looked_for = survey(request)
    if not plan:
        raise PythonNotFound(_nothing_available(request, looked_for))
    method = plan[0]
    echo(f"Python {request.text!r} not found: installing {method.version} with {method.name}: {method.command}")
    _run(method, echo)
    interpreters.clear_cache()  # discovery results are cached per process
    return _find_installed(request, method)


def install_target(request: PythonRequest) -> str:
    """The version to ask an installer for: the exact/minor text, or the newest supported minor a specifier admits."""
    if request.exact is not None or _MINOR_TEXT.match(request.text):
        return request.text
    for minor in SUPPORTED_MINORS:
        if any(request.accepts((3, minor, patch)) for patch in range(100)):
            return f"3.{minor}"
    supported = f"3.{SUPPORTED_MINORS[-1]}-3.{SUPPORTED_MINORS[0]}"
    raise PythonNotFound(f"cannot install Python {request.text!r}: no supported release ({supported}) satisfies it; "
                         "install one yourself and pass --python PATH")


# --------------------------------------------------------------------------------------------- the survey


class Survey(NamedTuple):
    methods: list[InstallMethod]  # the installers available here, best first (install_python runs the first)
    looked_for: list[str]  # what was looked for (for the "nothing available" message)


def survey(request: PythonRequest) -> Survey:
    """The installers available here for ``request``, and what was looked for."""
    target = install_target(request)
    builders = _WINDOWS_BUILDERS if paths.is_windows() else _POSIX_BUILDERS
    plan: list[InstallMethod] = []
    looked_for: list[str] = []
    for build in builders:
        method, note = build(target, request)
        if method is not None:
            plan.append(method)
        looked_for.append(note)
    return Survey(plan, looked_for)


def _pymanager(target: str, request: PythonRequest) -> tuple[InstallMethod | None, str]:
    exe = shutil.which("pymanager")
    if exe is None:
        return None, "pymanager (Python install manager) not on PATH"
    root = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local") / "Python"
    minor = _minor(target)
    expected = tuple(root / f"pythoncore-{minor}{arch}" / "python.exe" for arch in ("-64", "-arm64", "-32"))
    return InstallMethod("Python install manager", (exe, "install", "--yes", target), target, expected), exe


def _winget(target: str, request: PythonRequest) -> tuple[InstallMethod | None, str]:
    exe = shutil.which("winget")
    if exe is None:
        return None, "winget not on PATH"
    minor = _minor(target)
    argv = [exe, "install", "--id", f"Python.Python.{minor}", "--exact", "--source", "winget", "--silent",
            "--scope", "user", "--accept-package-agreements", "--accept-source-agreements"]
    if target != minor:
        argv += ["--version", target]
    local = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    expected = (local / "Programs" / "Python" / f"Python{minor.replace('.', '')}" / "python.exe",)
    return InstallMethod("winget", tuple(argv), target, expected), exe


def _pyenv_win(target: str, request: PythonRequest) -> tuple[InstallMethod | None, str]:
    exe = shutil.which("pyenv")  # pyenv-win's bin\pyenv.bat (PATHEXT)
    if exe is None:
        return None, "pyenv-win not on PATH"
    version = _pyenv_version(exe, target, request)
    if version is None:
        return None, f"pyenv-win {exe} ('pyenv install --list' offers no release matching {request.text!r})"
    expected = (Path(exe).resolve().parent.parent / "versions" / version / "python.exe",)
    return InstallMethod("pyenv-win", (exe, "install", "--quiet", version), version, expected), exe


def _choco(target: str, request: PythonRequest) -> tuple[InstallMethod | None, str]:
    exe = shutil.which("choco")
    if exe is None:
        return None, "choco not on PATH"
    minor = _minor(target)
    argv = [exe, "install", f"python{minor.replace('.', '')}", "--yes", "--no-progress"]
    if target != minor:
        argv += ["--version", target]
    drive = os.environ.get("SystemDrive") or "C:"
    expected = (Path(drive + os.sep) / f"Python{minor.replace('.', '')}" / "python.exe",)
    return InstallMethod("Chocolatey", tuple(argv), target, expected), exe


def _pyenv(target: str, request: PythonRequest) -> tuple[InstallMethod | None, str]:
    exe = shutil.which("pyenv")
    if exe is None:
        return None, "pyenv not on PATH"
    version = _pyenv_version(exe, target, request)
    if version is None:
        return None, f"pyenv {exe} ('pyenv install --list' offers no release matching {request.text!r}; update pyenv)"
    root = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
    expected = (root / "versions" / version / "bin" / "python",)
    return InstallMethod("pyenv", (exe, "install", "-s", version), version, expected), exe


_WINDOWS_BUILDERS = (_pymanager, _winget, _pyenv_win, _choco)
_POSIX_BUILDERS = (_pyenv,)


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _pyenv_version(exe: str, target: str, request: PythonRequest) -> str | None:
    """pyenv wants an exact version: keep ``3.X.Y``, else the newest final release its list offers for the request."""
    if target.count(".") == 2:
        return target
    try:
        listed = proc.run([exe, "install", "--list"], check=False, timeout=_LIST_TIMEOUT)
    except proc.CommandError:
        return None
    releases = [(3, int(m[1]), int(m[2])) for m in map(_RELEASE_LINE.match, listed.stdout.splitlines()) if m]
    wanted = [v for v in releases if request.accepts(v)]
    return ".".join(map(str, max(wanted))) if wanted else None


# ------------------------------------------------------------------------------------------ run + verify


def _run(method: InstallMethod, echo: Echo) -> None:
    try:
        proc.run(method.argv, stream=True, echo=lambda line: echo(line.rstrip("\r\n")))
    except proc.CommandError as exc:
        result = exc.result
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        last = f": {lines[-1]}" if lines else ""
        raise PythonNotFound(f"installing Python {method.version} with {method.name} failed: {method.command} "
                             f"exited with {_code_text(result.returncode)}{last}") from None


def _code_text(code: int) -> str:
    """winget/msiexec report HRESULTs (0x8A150014 = no package found): show them in hex as their docs do."""
    if code < 0 or code > 0xFFFF:
        return f"{code} (0x{code & 0xFFFFFFFF:08X})"
    return str(code)


def _find_installed(request: PythonRequest, method: InstallMethod) -> Interpreter:
    """Discovery again; then the installer's own folder, which this process may not see on PATH yet."""
    try:
        return interpreters.find_python(request)
    except PythonNotFound:
        pass
    for path in method.expected:
        interp = interpreters.inspect_interpreter(path, source=method.name) if path.exists() else None
        if interp is not None and interp.implementation == "cpython" and request.accepts(interp.version):
            return interp
    checked = ", ".join(str(p) for p in method.expected) or "nothing else"
    raise PythonNotFound(f"{method.command} finished but no Python matching {request.text!r} can be found "
                         f"by discovery or at {checked}; open a new console so PATH changes apply, "
                         "or pass --python PATH")


def _nothing_available(request: PythonRequest, looked_for: list[str]) -> str:
    version = install_target(request)
    if paths.is_windows():
        hints = (f"install the Python install manager (https://www.python.org/downloads/windows/) and run "
                 f"'py install {version}', or 'winget install --id Python.Python.{_minor(version)} --exact'")
    else:
        hints = (f"install pyenv (https://github.com/pyenv/pyenv#installation) and run 'pyenv install {version}', "
                 "or use your system's package manager")
    return (f"Python {request.text!r} not found and no installer available ({'; '.join(looked_for)}): "
            f"{hints}, then run again, or pass --python PATH")
