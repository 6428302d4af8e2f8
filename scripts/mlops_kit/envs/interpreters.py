"""Finding the Python a stage asks for: explicit path, then per-platform discovery, each candidate verified.

Order (nox style: each source is one small function, the result is cached per process):

* ``--python PATH`` wins: it must run and match the request, else :class:`BadInput` (exit 2).
* Installed interpreters. Windows: the Python Launcher (``py -0p``), pyenv-win (``versions\\<ver>\\python.exe``),
  then ``python3.X`` / ``python3`` / ``python`` on PATH. Linux/macOS: pyenv (``$PYENV_ROOT/versions/*/bin/python``,
  default ``~/.pyenv``), then ``python3.X`` / ``python3`` on PATH.
* Only when none of those satisfies the request: the uv-managed Pythons already in the toolkit's folder (``managed``:
  ``<folder>/cpython-3.10.13-linux-x86_64-gnu/bin/python3.10``, ``...-windows-x86_64-none\\python.exe``), so an
  installed interpreter always wins over a managed one, and a managed one on disk is reused without any network.
  Downloading one is the step after this (:mod:`mlops_kit.envs.managed`).

Every candidate is run (``sys.version_info``, ``sys.executable``) and duplicates (same real executable) are
dropped; the newest CPython that satisfies the request wins (an exact ``3.10.13`` request only matches itself).
Pre-releases (``3.14.0a1``, ``rc``) are left out of discovery: a stage gets one only through ``--python``.
Nothing found: :class:`NoMatchingPython` (a :class:`PythonNotFound`, exit 3) with one line listing what was found,
what was searched and how to install the missing version.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from ..core import paths, proc
from ..core.errors import BadInput, PythonNotFound
from . import probe
from .audit import ManagedInfo
from .spec import PythonRequest

_PROBE = (
    "import json, sys; print(json.dumps({'version': list(sys.version_info[:3]), 'executable': sys.executable, "
    "'implementation': sys.implementation.name, 'releaselevel': sys.version_info[3]}))"
)
_PROBE_TIMEOUT = 30.0
_MINORS = range(15, 7, -1)  # python3.15 ... python3.8 on PATH
_WORKERS = 8

# Python Launcher for Windows exit codes, from CPython PC/launcher.c and PC/launcher2.c:
#   #define RC_NO_PYTHON 103          (old launcher: also returned by `py -0p` itself in early 3.7-era builds)
#   #define RC_NO_PYTHON_AT_ALL 112   (launcher2.c, 3.11+: selectEnvironment() with no environments at all)
# Both mean "no Pythons registered": an empty source, not an error.
_PY_NO_PYTHON_CODES = (103, 112)

# `py -0p` / `py --list-paths` line formats (read from CPython's sources, not guessed):
# * old launcher (PC/launcher.c, Python 3.7-3.10): show_python_list() prints to stdout "\n %-15ls%ls" with the
#   tag "-%ls-%d" (version, bits), e.g. " -3.8-64        C:\Python38\python.exe"; the header, the default
#   marker " *" and "No Installed Pythons Found!" go to stderr (so " *" can appear after the path when merged);
#   an active venv is listed as "(venv)".
# * new launcher (PC/launcher2.c, 3.11+, PEP 514 tags): _printEnvironment() prints " %-*s %s\n" with
#   TAGWIDTH 16 and the argument "-V:<tag>" for PythonCore or "-V:<Company>/<tag>" otherwise, plus " *" for the
#   default, e.g. " -V:3.11 *        C:\...\Python311\python.exe",
#   " -V:ContinuumAnalytics/Anaconda39-64 D:\anaconda3\python.exe"; the path may be followed by executable
#   arguments, or be the install folder when no ExecutablePath is registered; with nothing registered it prints
#   "No installed Pythons found!" on stdout and exits 0.
# uv's py_launcher.rs parses the same lines with r"^ -(?:V:)?(\d).(\d+)-?(?:arm)?\d*\s*\*?\s*(.*)$".
_PY_LIST_LINE = re.compile(r"^\s*(?P<tag>-\S+)(?:\s+\*)?\s+(?P<rest>\S.*?)(?:\s+\*)?\s*$")
_EXE_THEN_ARGS = re.compile(r"^(?P<exe>.*?\.exe)(?:\s+.*)?$", re.IGNORECASE)


@dataclass(frozen=True)
class Interpreter:
    """A verified interpreter: the path we ran, what it reported, and where we found it."""

    path: Path
    version: tuple[int, int, int]
    source: str
    implementation: str = "cpython"
    executable: Path | None = None  # sys.executable as reported (a symlink or launcher entry may differ)
    releaselevel: str = "final"  # alpha/beta/candidate: never picked by discovery, only by an explicit --python
    managed: ManagedInfo | None = None  # a uv-managed interpreter: its build and download
    downloaded: bool = False  # this process downloaded it (a replay's report says so)

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


@dataclass(frozen=True)
class Source:
    """What one discovery step looked at (shown when nothing matches) and the paths it proposes."""

    name: str
    searched: str
    paths: tuple[Path, ...] = ()


@dataclass(frozen=True)
class Discovery:
    """Every verified interpreter found on this machine, best source first, plus what was searched."""

    found: tuple[Interpreter, ...]
    searched: tuple[str, ...]


# --------------------------------------------------------------------------------------------- verification


def inspect_interpreter(path: Path, *, source: str = "explicit") -> Interpreter | None:
    """Run ``path`` and return what it reports, or ``None`` if it does not run (broken, removed, not Python)."""
    info = _probe(str(path))
    if info is None:
        return None
    version, executable, implementation, level = info
    return Interpreter(Path(path), version, source, implementation, Path(executable) if executable else None, level)


_ProbeInfo = tuple[tuple[int, int, int], str, str, str]  # version, executable, implementation, releaselevel


def _probe(path: str) -> _ProbeInfo | None:
    try:
        info = probe.ask(path, _PROBE, timeout=_PROBE_TIMEOUT)
        version = tuple(int(part) for part in info["version"])
        if len(version) != 3:
            return None
        return ((version[0], version[1], version[2]), str(info.get("executable") or ""),
                str(info.get("implementation") or "cpython"), str(info.get("releaselevel") or "final"))
    except (probe.ProbeFailed, ValueError, KeyError, TypeError):  # missing, not Python, a timeout, an odd answer
        return None


@functools.lru_cache(maxsize=None)
def _probe_cached(path: str, stamp: tuple[int, int]) -> _ProbeInfo | None:
    """``_probe`` keyed by the file's identity, so an upgraded interpreter at the same path is run again."""
    return _probe(path)


def _inspect_candidate(source: str, path: Path) -> Interpreter | None:
    try:
        st = path.stat()
    except OSError:
        return None
    info = _probe_cached(str(path), (st.st_mtime_ns, st.st_size))
    if info is None or info[3] != "final":  # a 3.14.0a1 or rc is no stage Python unless given with --python
        return None
    version, executable, implementation, level = info
    return Interpreter(path, version, source, implementation, Path(executable) if executable else None, level)


# ----------------------------------------------------------------------------------------------- public API


def find_python(request: PythonRequest, *, explicit: Path | None = None,
                managed: Path | None = None) -> Interpreter:
    """Return the best verified interpreter for ``request``: ``explicit`` wins, then installed interpreters, then
    (only when none matches) the uv-managed ones in the folder ``managed``."""
    if explicit is not None:
        return _explicit(request, Path(explicit))
    installed = discover()
    best = _best(request, installed.found)
    if best is not None:
        return best
    on_disk = discover_managed(managed) if managed is not None else Discovery((), ())
    best = _best(request, on_disk.found)
    if best is None:
        raise NoMatchingPython(request, installed, on_disk)
    return best


def _best(request: PythonRequest, found: tuple[Interpreter, ...]) -> Interpreter | None:
    matching = [i for i in found if i.implementation == "cpython" and request.accepts(i.version)]
    return max(matching, key=lambda i: i.version) if matching else None  # first of equals = best source


def discover() -> Discovery:
    """All interpreters this machine offers (cached per process and per PATH/pyenv/home settings)."""
    return _discover_for(_cache_key())


def clear_cache() -> None:
    """Forget discovered and probed interpreters (tests; a long-lived process after installing a Python)."""
    _discover_for.cache_clear()
    _probe_cached.cache_clear()


def _cache_key() -> tuple[str | None, ...]:
    names = ("PATH", "PATHEXT", "PYENV_ROOT", "PYENV", "PYENV_HOME", "USERPROFILE", "HOME")
    return (paths._PLATFORM, *(os.environ.get(name) for name in names))


@functools.lru_cache(maxsize=16)
def _discover_for(key: tuple[str | None, ...]) -> Discovery:
    sources = _windows_sources() if paths.is_windows() else _posix_sources()
    candidates = _unique_candidates(sources)
    with concurrent.futures.ThreadPoolExecutor(max_workers=_WORKERS) as pool:
        results = list(pool.map(lambda c: _inspect_candidate(*c), candidates))
    return Discovery(tuple(_dedupe_by_executable([r for r in results if r is not None])),
                     tuple(s.searched for s in sources))


def _windows_sources() -> list[Source]:
    return [_py_launcher(), _pyenv_win(), _path_pythons([*(f"python3.{m}" for m in _MINORS), "python3", "python"])]


def _posix_sources() -> list[Source]:
    return [_pyenv(), _path_pythons([*(f"python3.{m}" for m in _MINORS), "python3"])]


def _identity(path: Path) -> str:
    try:
        path = path.resolve()
    except (OSError, RuntimeError):
        path = path.absolute()
    return os.path.normcase(str(path))


def _unique_candidates(sources: list[Source]) -> list[tuple[str, Path]]:
    seen: set[str] = set()
    out = []
    for source in sources:
        for path in source.paths:
            key = _identity(path)
            if key not in seen:
                seen.add(key)
                out.append((source.name, path))
    return out


def _dedupe_by_executable(found: list[Interpreter]) -> list[Interpreter]:
    seen: set[str] = set()
    out = []
    for interp in found:
        key = _identity(interp.executable or interp.path)
        if key not in seen:
            seen.add(key)
            out.append(interp)
    return out


# ------------------------------------------------------------------------------------------------- sources


def _py_launcher() -> Source:
    """Windows: the Python Launcher lists registered Pythons (PEP 514) with ``py -0p``."""
    exe = shutil.which("py")  # py.exe on real Windows (PATHEXT); a script named "py" in tests
    if exe is None:
        return Source("py launcher", "py launcher (not installed)")
    try:
        result = proc.run([exe, "-0p"], check=False, timeout=_PROBE_TIMEOUT)
    except proc.CommandError:
        return Source("py launcher", f"py launcher {exe} (did not run)")
    # launcher2.c writes UTF-8 (_O_U8TEXT); the old launcher writes the console code page, so a non-ASCII path
    # may come back mangled: it then fails to run and is skipped, and pyenv-win / PATH still get searched.
    paths = tuple(Path(path) for _tag, path in parse_py_list(result.stdout))
    if not paths and result.returncode not in (0, *_PY_NO_PYTHON_CODES):
        return Source("py launcher", f"'{exe} -0p' (failed with exit code {result.returncode})")
    return Source("py launcher", f"'{exe} -0p' ({len(paths)} listed)", paths)


def parse_py_list(text: str) -> list[tuple[str, str]]:
    """``(tag, python.exe path)`` pairs from ``py -0p`` output of either launcher generation (see above)."""
    out = []
    for line in text.splitlines():
        match = _PY_LIST_LINE.match(line)
        if match is None:  # header, "No installed Pythons found!", "(venv)", a tag without a path
            continue
        rest = match["rest"]
        exe = _EXE_THEN_ARGS.match(rest)
        if exe is not None:
            out.append((match["tag"], exe["exe"]))
        elif PureWindowsPath(rest).suffix == "":  # launcher2 prints the install folder when no ExecutablePath
            out.append((match["tag"], str(Path(rest) / "python.exe")))
    return out


def _pyenv_win() -> Source:
    """Windows: pyenv-win keeps ``versions\\<ver>\\python.exe`` (no ``bin``) under its ``pyenv-win`` folder."""
    folders = _pyenv_win_versions_dirs()
    paths = tuple(exe for folder in folders for exe in sorted(folder.glob("*/python.exe")) if exe.is_file())
    if not folders:
        return Source("pyenv-win", "pyenv-win (no versions folder under %PYENV_ROOT%, %PYENV%, %PYENV_HOME% or "
                                   "%USERPROFILE%\\.pyenv\\pyenv-win)")
    return Source("pyenv-win", f"pyenv-win {', '.join(map(str, folders))} ({len(paths)} candidates)", paths)


def _pyenv_win_versions_dirs() -> list[Path]:
    # pyenv-win's installer sets PYENV, PYENV_ROOT and PYENV_HOME to "%USERPROFILE%\.pyenv\pyenv-win\" (the
    # pyenv-win folder itself, trailing backslash); some users point them at the parent ".pyenv": accept both.
    roots = [Path(v.strip().strip('"')) for v in (os.environ.get(n, "") for n in ("PYENV_ROOT", "PYENV", "PYENV_HOME"))
             if v.strip().strip('"')]
    if os.environ.get("USERPROFILE"):
        roots.append(Path(os.environ["USERPROFILE"]) / ".pyenv" / "pyenv-win")
    out: list[Path] = []
    for root in roots:
        for folder in (root / "versions", root / "pyenv-win" / "versions"):
            if folder.is_dir() and _identity(folder) not in map(_identity, out):
                out.append(folder)
    return out


def _pyenv() -> Source:
    """Linux/macOS: pyenv builds live in ``$PYENV_ROOT/versions/<ver>/bin/python`` (default ``~/.pyenv``)."""
    versions = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    paths = tuple(p for p in sorted(versions.glob("*/bin/python")) if p.is_file())
    return Source("pyenv", f"pyenv {versions} ({len(paths)} candidates)", paths)


def _path_pythons(names: list[str]) -> Source:
    """``python3.X`` (and ``python3``/``python``) on PATH, as ``shutil.which`` finds them (PATHEXT on Windows)."""
    found = (shutil.which(name) for name in names)
    paths = tuple(Path(f) for f in found if f and not _is_pyenv_shim(Path(f)))
    versioned = [n for n in names if n.startswith("python3.")]
    label = ", ".join(([f"{versioned[-1]}..{versioned[0]}"] if versioned else []) + names[len(versioned):])
    return Source("PATH", f"PATH ({label}: {len(paths)} found)", paths)


def _is_pyenv_shim(path: Path) -> bool:
    """pyenv / pyenv-win shims (``<root>/shims/python3.X``) start a shell per call (~1 s each under load) and only
    lead to interpreters the pyenv source already lists from ``versions/``: skipping them keeps discovery fast."""
    return path.parent.name.lower() == "shims" and (path.parent.parent / "versions").is_dir()


# ---------------------------------------------------------------------------------------------- uv-managed

# uv names an installation folder by its key, ``<implementation>-<version>-<os>-<arch>-<libc>``; the minor-version
# links (``cpython-3.10-linux-x86_64-gnu``), variants (``cpython-3.13.0+freethreaded-...``), pre-releases and other
# implementations do not match, so only plain CPython builds of a patch are offered.
_MANAGED_KEY = re.compile(r"^cpython-(?P<version>3\.\d+\.\d+)-(?P<os>[a-z]+)-(?P<arch>[a-z0-9_]+)-(?P<libc>[a-z]+)$")
MANAGED_RECORD = "MLOPS_KIT_DOWNLOAD.json"  # what the toolkit knows of a build it downloaded (written last)


def uv_os() -> str:
    """The ``<os>`` part of uv's keys for the platform the toolkit acts for."""
    return "windows" if paths.is_windows() else "macos" if paths._PLATFORM == "darwin" else "linux"


def managed_python(folder: Path) -> Path:
    """Where a uv-managed build keeps its interpreter: ``python.exe`` at the top on Windows (no ``bin``), else
    ``bin/python3.X`` (what uv itself runs)."""
    if paths.is_windows():
        return folder / "python.exe"
    match = _MANAGED_KEY.match(folder.name)
    minor = ".".join(match["version"].split(".")[:2]) if match else "3"
    return folder / "bin" / f"python{minor}"


def discover_managed(folder: Path) -> Discovery:
    """The uv-managed CPython builds for this platform in ``folder``, verified like every candidate."""
    builds = []
    if folder.is_dir():
        builds = [entry for entry in sorted(folder.iterdir())
                  if (m := _MANAGED_KEY.match(entry.name)) is not None and m["os"] == uv_os()]
    found = []
    for build in builds:
        interp = _inspect_candidate("uv-managed", managed_python(build))
        if interp is not None:
            found.append(dataclasses.replace(interp, managed=read_managed_info(build)))
    searched = f"uv-managed {folder} ({len(builds)} builds)" if folder.is_dir() else f"uv-managed {folder} (none yet)"
    return Discovery(tuple(_dedupe_by_executable(found)), (searched,))


def read_managed_info(build: Path) -> ManagedInfo:
    """uv's build name and release tag (its ``BUILD`` file), plus the toolkit's download record when it has one."""
    try:
        tag = (build / "BUILD").read_text(encoding="utf-8").strip() or None
    except OSError:
        tag = None
    try:
        record = json.loads((build / MANAGED_RECORD).read_text(encoding="utf-8"))
        return ManagedInfo(key=build.name, build=tag, sha256=record.get("sha256"),
                           verified=bool(record.get("verified")), url=record.get("url"),
                           downloaded_at=record.get("downloaded_at"))
    except (OSError, ValueError, AttributeError):
        return ManagedInfo(key=build.name, build=tag)


# ---------------------------------------------------------------------------------------- explicit + errors


def _explicit(request: PythonRequest, path: Path) -> Interpreter:
    interp = inspect_interpreter(_explicit_path(path), source="--python")
    if interp is None:
        raise BadInput(f"--python {path}: not a working Python interpreter (running it failed)")
    if not request.accepts(interp.version):
        raise BadInput(f"--python {path}: is Python {interp.version_text}, the spec asks for {request.text}")
    return interp


def _explicit_path(path: Path) -> Path:
    if path.is_dir():
        raise BadInput(f"--python {path}: is a folder; give the interpreter itself (python.exe / bin/python)")
    if path.exists():
        return path
    found = shutil.which(str(path))  # a bare name such as "python3.10"
    if found:
        return Path(found)
    raise BadInput(f"--python {path}: no such file")


class NoMatchingPython(PythonNotFound):
    """Nothing installed (nor managed, when a folder was given) satisfies the request: the parts of the one-line
    message are kept, so the download step (:mod:`mlops_kit.envs.managed`) can say what it adds."""

    def __init__(self, request: PythonRequest, installed: Discovery, managed: Discovery) -> None:
        self.request = request
        found = sorted(installed.found + managed.found, key=lambda i: i.version)
        have = ", ".join(f"{i.version_text} ({i.source})" for i in found) or "none"
        self.what = (f"no Python matching {request.text!r} found (found: {have}; searched: "
                     f"{'; '.join(installed.searched + managed.searched)})")
        self.install_hint = f"install it with {_install_hints(request)}, or pass --python PATH"
        super().__init__(f"{self.what}; {self.install_hint}")


def _install_hints(request: PythonRequest) -> str:
    version = request.hint_version
    minor = ".".join(version.split(".")[:2])
    windows = [f"'py install {version}'", f"'winget install Python.Python.{minor}'"]
    pyenv = [f"'pyenv install {version}'"]
    hints = windows + pyenv if paths.is_windows() else pyenv + windows
    return f"{', '.join(hints[:-1])} or {hints[-1]}"
