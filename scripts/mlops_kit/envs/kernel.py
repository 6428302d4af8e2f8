"""Jupyter kernelspecs for stage venvs: a kernel name derived from ``venv_name``, ``argv[0]`` the venv's python.

Registration runs the venv's own ``python -m ipykernel install`` (the documented way, so the logos and any
ipykernel-version specific fields are right), then rewrites the generated ``kernel.json`` with
:func:`kernelspec`: an absolute ``argv[0]`` and an ``env`` stanza putting the venv's ``Scripts``/``bin`` first on
``PATH`` (so ``!pip`` and subprocesses started from a notebook use the venv) and setting ``VIRTUAL_ENV``.

The ``env`` stanza also carries ``PYTHONUTF8=1`` and ``PYTHONIOENCODING=utf-8`` unless the environment building it
sets them (:func:`mlops_kit.core.proc.utf8_defaults`): a kernel then reads and writes files and pipes in UTF-8 on a
cp1252 Windows agent as in JupyterLab, and its own children (``!pip``, ``subprocess``) inherit it.

``PATH`` is written as ``<venv bin><pathsep>${PATH}``: jupyter_client (>= 7) fills ``${NAME}`` in a kernelspec's
``env`` from the launching process's environment with ``string.Template.safe_substitute``
(``KernelProvisionerBase.__apply_env_substitutions``), so the user's PATH is kept after the venv's folder.

Scopes: ``user`` (the per-user Jupyter data dir, honours ``JUPYTER_DATA_DIR``; what JupyterLab sees by default; for a
Windows service account ``%ProgramData%\\mlops_kit\\jupyter``, not its ``system32`` profile),
``sys-prefix`` (``<toolkit python prefix>/share/jupyter/kernels``: the Python running this toolkit, which is where
JupyterLab lives when installed next to it; *not* the stage venv's own prefix, where no JupyterLab would look) and
``none``.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import filelock

from ..core import paths, proc
from ..core.errors import BadInput, EnvBuildError

SCOPES = ("user", "sys-prefix", "none")
_INVALID = re.compile(r"[^a-z0-9._-]+")
_CLASHES = {"python", "python2", "python3"}  # never shadow the default kernels
_INSTALLED = re.compile(r"^Installed kernelspec \S+ in (.+)$", re.MULTILINE)


def kernel_name_for(venv_name: str) -> str:
    """A valid Jupyter kernel name (lowercase ``[a-z0-9._-]``) for ``venv_name``; never ``python3`` & co."""
    name = _INVALID.sub("-", venv_name.lower()).strip("-.") or "venv"
    return f"venv-{name}" if name in _CLASHES else name


def kernelspec(venv_dir: Path, display_name: str) -> dict[str, Any]:
    """The ``kernel.json`` content for the venv at ``venv_dir`` (absolute paths; PATH keeps the caller's after)."""
    venv_dir = Path(os.path.abspath(venv_dir))
    return {
        "argv": [str(paths.venv_python(venv_dir)), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "metadata": {"debugger": True},
        "env": {"PATH": f"{paths.venv_bin_dir(venv_dir)}{paths.path_list_separator()}${{PATH}}",
                "VIRTUAL_ENV": str(venv_dir), **proc.utf8_defaults(os.environ)},
    }


def kernel_dir(name: str, scope: str) -> Path:
    """Where a kernelspec named ``name`` lives for ``scope`` (``user`` honours ``JUPYTER_DATA_DIR``)."""
    if scope == "user":
        return _user_data_dir() / "kernels" / name
    if scope == "sys-prefix":
        return Path(sys.prefix) / "share" / "jupyter" / "kernels" / name
    raise BadInput(f"--kernel-scope {scope!r}: choose one of {', '.join(SCOPES)}")


def _user_data_dir() -> Path:
    """``JUPYTER_DATA_DIR``, else the service account's folder, else Jupyter's per-user default."""
    service = paths.service_folder("jupyter")
    if service is not None and not os.environ.get("JUPYTER_DATA_DIR", "").strip():
        return service
    from jupyter_core.paths import jupyter_data_dir

    return Path(jupyter_data_dir())


def registered_for(venv_dir: Path, *, name: str, display_name: str, scope: str) -> bool:
    """True when ``scope`` already holds our kernelspec for ``venv_dir`` (same python, display name and env)."""
    if scope == "none":
        return True
    try:
        current = json.loads((kernel_dir(name, scope) / "kernel.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    wanted = kernelspec(venv_dir, display_name)
    return all(current.get(k) == wanted[k] for k in ("argv", "display_name", "env"))


def register_kernel(venv_dir: Path, *, name: str, display_name: str, scope: str = "user") -> Path | None:
    """Register the venv's kernel with ``ipykernel install`` in ``scope``; return the kernelspec folder.

    Several agents of one account on one machine (jobs of several pipelines, a team's eight rehearsals) find the
    same kernel missing at once; ``ipykernel install`` replaces the folder by deleting and copying it, so two at
    once fail (``FileExistsError``). One registers at a time (``.<name>.mlops_kit.lock`` next to the kernelspecs)
    and a waiter whose kernel is registered meanwhile has nothing left to do."""
    if scope == "none":
        return None
    target = kernel_dir(name, scope)
    lock = filelock.FileLock(target.parent / f".{name}.mlops_kit.lock", timeout=300)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        lock.acquire()
    except (OSError, filelock.Timeout) as exc:
        raise EnvBuildError(f"registering kernel {name!r} failed: cannot lock {lock.lock_file} ({exc})") from None
    try:
        if registered_for(venv_dir, name=name, display_name=display_name, scope=scope):
            return target
        return _install(venv_dir, name=name, display_name=display_name, scope=scope, target=target)
    finally:
        lock.release()


def _install(venv_dir: Path, *, name: str, display_name: str, scope: str, target: Path) -> Path:
    where = ["--user"] if scope == "user" else ["--prefix", sys.prefix]
    # The venv's jupyter_core may be another version than ours: pin its user data dir to the one we (and a
    # JupyterLab installed next to this toolkit) read, so the kernelspec lands where it is looked for.
    env = {**os.environ, "JUPYTER_DATA_DIR": str(target.parent.parent)} if scope == "user" else None
    cmd: list[str | Path] = [paths.venv_python(venv_dir), "-m", "ipykernel", "install", *where, "--name", name,
           "--display-name", display_name]
    try:
        result = proc.run(cmd, env=env, timeout=300)
    except proc.CommandError as exc:
        raise EnvBuildError(f"registering kernel {name!r} failed: {exc}") from None
    found = _INSTALLED.search(result.stdout + result.stderr)
    folder = Path(found.group(1).strip()) if found else target
    paths.write_json_atomic(folder / "kernel.json", _patched(folder / "kernel.json", venv_dir, display_name), indent=1)
    return folder


def _patched(kernel_json: Path, venv_dir: Path, display_name: str) -> dict[str, Any]:
    try:
        data = json.loads(kernel_json.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise EnvBuildError(f"ipykernel install did not write a readable {kernel_json} ({exc})") from None
    wanted = kernelspec(venv_dir, display_name)
    data.update({k: wanted[k] for k in ("argv", "display_name", "env")})
    return data

