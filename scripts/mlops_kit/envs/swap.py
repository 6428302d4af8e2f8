"""Replacing a venv that may be in use: the old one is moved aside whole, the new one built at the real path, then
the old one deleted, or put back if the build fails. Never a venv half deleted.

Why aside, not beside: a venv is not relocatable (console-script launchers, ``pyvenv.cfg``'s prompt, ``kernel.json``
and ``env.json`` name its folder), so the new one must be built where it will live, and the old one must leave
that path first. It moves to ``<venv root>\\~<venv_name>`` (same volume: a rename, instant; one character longer,
which :mod:`mlops_kit.envs.pathbudget` counts; ``~`` cannot start a ``venv_name``, so no venv is ever called that).

* **Held open** (Windows: a JupyterLab kernel runs from it, so its ``python.exe`` and loaded ``.pyd`` files are in
  use): the rename fails with ``winerror`` 32 (sharing violation), 5 (access denied) or 33 (lock violation). Nothing
  was touched: :class:`EnvBuildError` (exit 4) names the venv and, where :mod:`psutil` finds them, the processes
  running from it; the venv still works. On Linux a rename of a folder in use succeeds: a running kernel keeps its
  open files and imports what it imports next from the new venv.
* **The build fails** (or is interrupted): the half-made new venv is deleted and the old one moved back.
* **The build succeeds**: the old one is deleted; if that fails (a file still held), it stays as ``~<venv_name>``
  and the next rebuild deletes it first. A leftover of a rebuild killed outright is deleted the same way, under the
  venv's build lock, and only when it carries the toolkit's marker.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..core import paths, proc
from ..core.console import warn
from ..core.errors import EnvBuildError

RETIRED_PREFIX = "~"
HELD_WINERRORS = (5, 32, 33)  # ERROR_ACCESS_DENIED, ERROR_SHARING_VIOLATION, ERROR_LOCK_VIOLATION


def _move(source: Path, target: Path) -> None:
    """The one rename (a seam: tests make it fail as Windows does for a folder in use)."""
    os.rename(source, target)


def retired_path(venv_dir: Path) -> Path:
    return venv_dir.with_name(RETIRED_PREFIX + venv_dir.name)


def retire(venv_dir: Path, *, marker: str) -> Path:
    """Move the venv (ours: it carries ``marker``) aside, clearing a leftover of an interrupted rebuild first;
    :class:`EnvBuildError` when it is held open, the venv untouched."""
    retired = retired_path(venv_dir)
    clear_leftover(retired, marker)
    try:
        _move(venv_dir, retired)
    except OSError as exc:
        if getattr(exc, "winerror", None) in HELD_WINERRORS:
            raise EnvBuildError(in_use(venv_dir, exc)) from None
        raise EnvBuildError(f"cannot move {venv_dir} aside to rebuild it ({exc.strerror or exc}); it is unchanged "
                            "and still works") from None
    return retired


def in_use(venv_dir: Path, exc: OSError) -> str:
    """The one line for a venv Windows will not let go of."""
    found = holders(venv_dir)
    who = f"held by {'; '.join(found[:3])}" if found else "held by a process psutil cannot see (another user's?)"
    return (f"{venv_dir} is in use and cannot be replaced now ({exc.strerror or exc}; {who}): close the Jupyter "
            "kernels and programs running from it, then run again; the venv is unchanged and still works")


def restore(retired: Path, venv_dir: Path) -> None:
    """A failed or interrupted rebuild: delete the half-made venv, move the old one back (a warning if it cannot)."""
    try:
        if venv_dir.exists():
            paths.rmtree(venv_dir)
        _move(retired, venv_dir)
    except OSError as exc:
        warn(f"the previous venv could not be put back ({exc.strerror or exc}); it is kept as {retired}")


def discard(retired: Path) -> None:
    """The rebuild succeeded: delete the old venv (if something still holds a file, the next rebuild will)."""
    try:
        _delete(retired)
    except OSError as exc:
        warn(f"the previous venv {retired} could not be deleted yet ({exc.strerror or exc}); the next rebuild "
             "deletes it")


def clear_leftover(retired: Path, marker: str) -> None:
    """Delete what a rebuild killed outright left at ``~<venv_name>`` (only when it carries ``marker``)."""
    if not os.path.lexists(retired):
        return
    if not (retired / marker).is_file():
        raise EnvBuildError(f"{retired} exists and was not left by create_venv.py (no {marker} marker); move it "
                            "away, the rebuild needs that name for a moment")
    try:
        _delete(retired)
    except OSError as exc:
        raise EnvBuildError(f"{retired}, left by an interrupted rebuild, cannot be deleted ({exc.strerror or exc}); "
                            "close what uses it and run again") from None


def sweep(retired: Path, marker: str) -> None:
    """A first build does not need ``~<venv_name>``: a leftover of ours is deleted when it can be (a warning when a
    file is still held), anything else there is left alone."""
    if not (retired / marker).is_file():
        return
    try:
        _delete(retired)
    except OSError as exc:
        warn(f"{retired}, left by an interrupted rebuild, could not be deleted yet ({exc.strerror or exc}); the "
             "next rebuild deletes it")


def _delete(folder: Path) -> None:
    """The folder, or only the link when the venv was a symlink (its target is not ours to empty)."""
    if folder.is_symlink():
        folder.unlink()
    else:
        paths.rmtree(folder)


def holders(folder: Path) -> list[str]:
    """The processes running from ``folder`` (their program, first argument or working folder is in it), as
    ``pid 1234 (python.exe -m ipykernel_launcher …)``, that psutil can see."""
    import psutil

    root = paths.norm(folder)
    found = []
    for process in psutil.process_iter(["exe", "cmdline", "cwd"]):
        with contextlib.suppress(psutil.Error):
            info = process.info
            cmdline = info.get("cmdline") or []
            places = [info.get("exe") or "", *cmdline[:1], info.get("cwd") or ""]
            if process.pid != os.getpid() and any(p and _within(paths.norm(p), root) for p in places):
                found.append(f"pid {process.pid} ({_shown(cmdline or [info.get('exe') or '?'])})")
    return found


def _shown(cmdline: list[str]) -> str:
    """The program in full (the path that holds the venv is the point), its arguments cut to 80 characters."""
    program, rest = proc.format_cmd(cmdline[:1]), proc.format_cmd(cmdline[1:])
    return program + (" " + (rest if len(rest) <= 80 else rest[:77] + "...") if rest else "")


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)
