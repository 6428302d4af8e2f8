"""Where things live on this platform: the one platform seam, the venv layout, per-user folders, safe file writes.

Every Windows/POSIX branch of the toolkit asks :func:`is_windows`, which reads :data:`_PLATFORM`: tests set that one
attribute to ``"win32"`` to run the Windows branches (``Scripts\\python.exe``, ``%LOCALAPPDATA%``, ``cmd /s /c``) on
Linux. A Windows service account (LocalSystem & co., :mod:`mlops_kit.core.account`) gets its defaults under
``%ProgramData%\\mlops_kit`` (:func:`service_folder`), never under its ``system32`` profile. Writes that readers must
never see half done (``env.json``, ``kernel.json``, manifests, locks, counters) go
through :func:`write_text_atomic`: a temp file unique to the call, flushed, then ``os.replace``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import sys
import uuid
from pathlib import Path
from typing import Any, Callable, Literal

from . import account

_PLATFORM = sys.platform  # the seam: tests patch this attribute, and only this one


def is_windows() -> bool:
    return _PLATFORM == "win32"


def is_linux() -> bool:
    """Linux-only facilities (a child subreaper, ``/proc``) are asked for through this, never ``sys.platform``."""
    return _PLATFORM.startswith("linux")


def path_list_separator() -> str:
    """``;`` on Windows, ``:`` elsewhere (``os.pathsep`` of the platform the toolkit is acting for)."""
    return ";" if is_windows() else ":"


# ------------------------------------------------------------------------------------------------------ venvs


def venv_bin_dir(venv_dir: Path | str) -> Path:
    """``Scripts`` on Windows, ``bin`` elsewhere."""
    return Path(venv_dir) / ("Scripts" if is_windows() else "bin")


def venv_python(venv_dir: Path | str) -> Path:
    """The venv's interpreter: ``Scripts\\python.exe`` on Windows, ``bin/python`` elsewhere."""
    return venv_bin_dir(venv_dir) / ("python.exe" if is_windows() else "python")


def default_venv_root() -> Path:
    """Default venv root: ``%LOCALAPPDATA%\\mlops_kit\\venvs`` or ``~/.local/share/mlops_kit/venvs``; for a Windows
    service account ``%ProgramData%\\mlops_kit\\venvs`` (see :func:`service_folder`)."""
    service = service_folder("venvs")
    if service is not None:
        return service
    if is_windows():
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mlops_kit" / "venvs"


def venv_root(arg: Path | str | None = None) -> Path:
    """The one rule for where stage venvs live (create_venv, run_notebook --spec and run_pipeline agree on it):
    ``--venv-root``, else ``ML_VENV_ROOT`` (GoCD sets it; a stray trailing space from ``set X=... `` is dropped),
    else :func:`default_venv_root`. Absolute, not resolved: a symlinked root keeps the name the user gave."""
    env = os.environ.get("ML_VENV_ROOT", "").strip()
    root = Path(arg) if arg is not None and str(arg).strip() else Path(env) if env else default_venv_root()
    return Path(os.path.abspath(root))


# -------------------------------------------------------------------------------------------- service accounts

ServiceFolder = Literal["venvs", "uv-cache", "jupyter"]  # managed Pythons: beside the venv root (envs.managed)
SERVICE_SETTINGS: dict[ServiceFolder, str] = {"venvs": "ML_VENV_ROOT", "uv-cache": "UV_CACHE_DIR",
                                              "jupyter": "JUPYTER_DATA_DIR"}


def service_account() -> account.Account | None:
    """The Windows service account running the toolkit (LocalSystem, LocalService, NetworkService, or any account
    whose profile is a service profile), else ``None`` (a person's account, or not Windows)."""
    if not is_windows():
        return None
    found = account.current()
    return found if found.service is not None else None


def service_data_dir() -> Path:
    """``%ProgramData%\\mlops_kit``: machine-wide, writable by services, not redirected for 32-bit processes."""
    return Path(os.environ.get("ProgramData") or os.environ.get("PROGRAMDATA") or "C:\\ProgramData") / "mlops_kit"


def service_folder(kind: ServiceFolder) -> Path | None:
    """``%ProgramData%\\mlops_kit\\<kind>`` when a service account runs the toolkit, else ``None``: the default of
    ``ML_VENV_ROOT`` (venvs; the managed Pythons go beside it), ``UV_CACHE_DIR`` (uv-cache) and ``JUPYTER_DATA_DIR``
    (jupyter), used only where that setting is not given."""
    return service_data_dir() / kind if service_account() is not None else None


def service_environment() -> dict[str, str]:
    """What a child process needs so that it too stays out of a service account's profile: ``UV_CACHE_DIR`` (uv's
    own default is ``%LOCALAPPDATA%\\uv\\cache``) when unset. Empty for a person's account."""
    folder = service_folder("uv-cache")
    if folder is None or os.environ.get("UV_CACHE_DIR", "").strip():
        return {}
    return {"UV_CACHE_DIR": str(folder)}


def uv_cache_dir() -> Path:
    """Where uv keeps its cache for the toolkit's installs: ``UV_CACHE_DIR``, the service default, else uv's own
    (``%LOCALAPPDATA%\\uv\\cache``; ``$XDG_CACHE_HOME/uv`` or ``~/.cache/uv``)."""
    named = os.environ.get("UV_CACHE_DIR", "").strip()
    if named:
        return Path(os.path.abspath(named))
    service = service_folder("uv-cache")
    if service is not None:
        return service
    if is_windows():
        return Path(os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")) / "uv" / "cache"
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "uv"


def not_writable(folder: Path) -> str | None:
    """Why this account could not create folders in ``folder`` (or, while it does not exist, in its nearest existing
    parent), else ``None``. A real folder is made and removed there, nothing else is left: Windows ACLs make
    ``os.access`` unreliable, and a folder is what the toolkit makes in a venv root (``C:\\`` lets a user create
    folders but not files)."""
    existing = Path(os.path.abspath(folder))
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    probe = existing / f".mlops_kit-write-test-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
        probe.rmdir()
    except OSError as exc:
        return f"{exc.strerror or exc} ({existing})" if existing != Path(os.path.abspath(folder)) else \
            exc.strerror or str(exc)
    return None


# ------------------------------------------------------------------------------------------------------ files


def same_path(a: Path | str, b: Path | str) -> bool:
    """Same location once made absolute (case-insensitive where the platform's paths are)."""
    return norm(a) == norm(b)


def norm(path: Path | str) -> str:
    return os.path.normcase(os.path.abspath(path))


def inside(path: Path | str, folder: Path | str) -> bool:
    """``path`` is ``folder`` or somewhere below it. Both are made absolute (relative to the current folder) and
    compared as written: symlinks are not followed, so a path is judged by the name the user gave. Case-insensitive
    on Windows (NTFS ignores case: ``C:\\Data\\out`` is inside ``c:\\data``), exact elsewhere."""
    path_text, folder_text = norm(path), norm(folder)
    if is_windows():
        path_text, folder_text = path_text.lower(), folder_text.lower()
    return Path(path_text).is_relative_to(folder_text)


def base_name(path: str) -> str:
    """The last part of a path written on any platform (a Windows agent's record read on Linux too)."""
    return re.split(r"[\\/]", path.rstrip("\\/"))[-1] or path


def write_text_atomic(path: Path, text: str) -> None:
    """Write through a temp file unique to this call and ``os.replace``: readers never see half a file, and
    concurrent writers (two registrations of one kernel, two runs of one output) never race on the temp name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(path: Path, data: Any, *, indent: int = 2) -> None:
    write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False) + "\n")


def rmtree(path: Path) -> None:
    """``shutil.rmtree`` that clears the read-only bit Windows puts on some files (e.g. from git) and retries."""

    def clear_readonly(func: Callable[[str], Any], target: str, _exc: Any) -> None:
        os.chmod(target, stat.S_IWRITE)
        func(target)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=clear_readonly)
    else:
        shutil.rmtree(path, onerror=clear_readonly)


def file_sha256(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in 1 MiB blocks: lineage's inputs and outputs, a downloaded Python's
    archive, a replay's artifacts, all of any size."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size
