"""The path budget of a stage venv on Windows: the longest path its build will write, checked before anything is
written against the limit that applies while long paths are off.

Windows, unless ``HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem\\LongPathsEnabled`` is 1 (read through
:mod:`mlops_kit.core.registry`), refuses a file path of 260 characters or more (``MAX_PATH`` counts the final NUL:
:data:`MAX_FILE` usable) and a folder path past :data:`MAX_FOLDER` (``CreateDirectory`` keeps room for an 8.3 name:
``MAX_PATH - 12``). pip then fails midway; uv may write such a file (Rust opens long paths itself) that Python then
can neither import nor delete, so the venv could never be rebuilt. Hence: exit 2 before anything is written, naming
the file and the two fixes (a shorter venv root; long paths on).

What a venv will hold is known before it is built from two measures, the larger wins:

* **the locked wheels** (:data:`TABLE`, ``wheel_paths.json``): per ``name==version``, the longest path of its
  Windows wheels (every ``win_amd64``/``win32``/``win_arm64``/``any`` wheel the lock's hashes allow), as installed in
  a Windows venv (:func:`in_venv`: ``Lib\\site-packages\\…``, ``Scripts\\…``, ``.data\\data`` files at the top),
  measured from the wheels themselves by ``tools/measure_wheel_paths.py``. A pin the table lacks is listed as
  unmeasured (a spec of your own: run the tool on its lock, or rely on the next measure);
* **the last build** of that venv on this platform: every build measures the venv it made
  (:func:`measure_venv`) and ``env.json`` records it (``longest_path``); a rebuild starts from it.

One character is added for a rebuild's swap (the old venv is moved to ``~<venv_name>`` beside it: see
:mod:`mlops_kit.envs.build`). Off Windows (or with long paths on) the budget is only reported.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..core import paths, registry
from ..core.errors import BadInput
from . import lockfile
from .audit import LongestPath

MAX_FILE = 259  # MAX_PATH (260) less the terminating NUL
MAX_FOLDER = 247  # CreateDirectory: MAX_PATH - 12 (an 8.3 name must still fit), less the NUL
SWAP = 1  # a rebuild moves the old venv to ~<venv_name>: one character longer
TABLE_FILE = Path(__file__).with_name("wheel_paths.json")
FIXES = ("use a shorter venv root (ML_VENV_ROOT or --venv-root, e.g. C:\\ml_venvs), or enable long paths: "
         "HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem LongPathsEnabled=1 (as administrator: "
         "reg add HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem /v LongPathsEnabled /t REG_DWORD /d 1 /f)")


@dataclass(frozen=True)
class Estimate:
    """The longest file and folder a venv at ``venv_dir`` will hold, and what the estimate rests on."""

    venv_dir: str
    longest: LongestPath | None
    source: str
    unmeasured: tuple[str, ...] = ()

    def absolute(self, relative: str) -> str:
        """``relative`` (either separator) under the venv, spelled as the platform the toolkit acts for does."""
        if paths.is_windows():
            return str(PureWindowsPath(self.venv_dir, relative.replace("/", "\\")))
        return str(PurePosixPath(self.venv_dir, relative.replace("\\", "/")))

    @property
    def file_length(self) -> int:
        return len(self.absolute(self.longest.file)) + SWAP if self.longest else 0

    @property
    def folder_length(self) -> int:
        return len(self.absolute(self.longest.folder)) + SWAP if self.longest else 0

    def over(self) -> str | None:
        """Why this venv does not fit Windows' limits (one clause naming the path), else ``None``."""
        if self.longest is None:
            return None
        if self.file_length > MAX_FILE:
            return (f"{self.absolute(self.longest.file)} would be {self.file_length} characters (with {SWAP} for a "
                    f"rebuild's swap), past Windows' limit of {MAX_FILE}")
        if self.folder_length > MAX_FOLDER:
            return (f"the folder {self.absolute(self.longest.folder)} would be {self.folder_length} characters (with "
                    f"{SWAP} for a rebuild's swap), past Windows' limit of {MAX_FOLDER} for folders")
        return None

    def describe(self) -> str:
        if self.longest is None:
            return f"{self.venv_dir}: nothing measured ({self.source})"
        gaps = f"; {len(self.unmeasured)} pin(s) unmeasured: {', '.join(self.unmeasured[:3])}" if self.unmeasured \
            else ""
        return (f"longest file {self.file_length} of {MAX_FILE} characters ({self.absolute(self.longest.file)}), "
                f"folder {self.folder_length} of {MAX_FOLDER}; from {self.source}{gaps}")


# ------------------------------------------------------------------------------------------------- estimate


def estimate(venv_dir: Path | str, lock: lockfile.Lock | None, recorded: LongestPath | None = None) -> Estimate:
    """The budget of the venv at ``venv_dir``: the longest of the lock's Windows pins in :data:`TABLE` and of
    ``recorded`` (the last build's measure), whichever is longer."""
    candidates: list[tuple[LongestPath, str]] = []
    unmeasured: list[str] = []
    if lock is not None:
        measured = []
        for pin in sorted(windows_pins(lock)):
            entry = table().get(pin)
            if entry is None:
                unmeasured.append(pin)
            else:
                measured.append(entry)
        if measured:
            source = f"the locked wheels ({len(measured)} pins measured, {TABLE_FILE.name})"
            candidates.append((_longest(measured), source))
    if recorded is not None:
        candidates.append((recorded, "the last build of this venv (env.json)"))
    if not candidates:
        why = "no lock and no earlier build" if lock is None else "no pin of the lock is in the table"
        return Estimate(str(venv_dir), None, why, tuple(unmeasured))
    longest = _longest([c for c, _ in candidates])
    source = next(s for c, s in candidates if len(c.file) == len(longest.file))
    return Estimate(str(venv_dir), longest, source, tuple(unmeasured))


def _longest(measures: Iterable[LongestPath]) -> LongestPath:
    found = list(measures)
    return LongestPath(file=max((m.file for m in found), key=len), folder=max((m.folder for m in found), key=len))


def windows_pins(lock: lockfile.Lock) -> set[str]:
    """``name==version`` of every pin the lock installs on Windows at any Python it serves."""
    out = set()
    for platform_name, env in lockfile.marker_environments(lock.python):
        if platform_name == "windows":
            out |= {f"{pin.name}=={pin.version}" for pin in lock.pins if pin.applies(env)}
    return out


@functools.lru_cache(maxsize=1)
def table() -> dict[str, LongestPath]:
    """The measured wheels: ``{"name==version": LongestPath}`` (empty when the file is missing)."""
    try:
        data = json.loads(TABLE_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {pin: LongestPath(file=entry["file"], folder=entry["folder"]) for pin, entry in data["pins"].items()}


def check(found: Estimate, *, spec: Path, long_paths: bool | None = None) -> None:
    """:class:`BadInput` (exit 2, nothing written yet) when ``found`` passes Windows' limits while long paths are
    off; nothing off Windows or with long paths on (``long_paths``: default, the registry's setting)."""
    if not paths.is_windows():
        return
    enabled = registry.long_paths_enabled() if long_paths is None else long_paths
    problem = found.over()
    if problem is None or enabled:
        return
    raise BadInput(f"{spec}: {problem}, and long paths are off on this machine; {FIXES}")


# -------------------------------------------------------------------------------------------------- measure


def in_venv(member: str) -> str:
    """Where a wheel's ``member`` lands in a Windows venv (relative, backslashes): ``<dist>.data\\scripts\\x`` in
    ``Scripts``, ``<dist>.data\\data\\x`` at the top, ``.data\\headers`` under ``Include\\site``,
    ``purelib``/``platlib`` and everything else in ``Lib\\site-packages``."""
    parts = PurePosixPath(member).parts
    if len(parts) >= 3 and parts[0].endswith(".data"):
        kind, rest = parts[1], parts[2:]
        if kind == "scripts":
            return "\\".join(("Scripts", *rest))
        if kind == "data":
            return "\\".join(rest)
        if kind == "headers":
            return "\\".join(("Include", "site", "python3.XX", parts[0][:-len(".data")].split("-")[0], *rest))
        return "\\".join(("Lib", "site-packages", *rest))
    return "\\".join(("Lib", "site-packages", *parts))


def longest_of(relative_files: Iterable[str]) -> LongestPath | None:
    """The longest file, and the longest folder holding a file, of relative Windows-style paths."""
    files = list(relative_files)
    if not files:
        return None
    folders = [f.rsplit("\\", 1)[0] if "\\" in f else "" for f in files]
    return LongestPath(file=max(files, key=len), folder=max(folders, key=len))


def measure_venv(venv_dir: Path) -> LongestPath | None:
    """The longest file and folder a built venv holds, relative to it (the platform's separators). ``__pycache__``
    is left out, as in the table: bytecode is optional (Python and pip skip what they cannot write)."""
    found: list[str] = []
    for folder, dirs, files in os.walk(venv_dir):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        found.extend(os.path.relpath(os.path.join(folder, name), venv_dir) for name in files)
    if not found:
        return None
    folders = [os.path.dirname(f) for f in found]
    return LongestPath(file=max(found, key=len), folder=max(folders, key=len))
