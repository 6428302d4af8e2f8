"""A job's working directory, as an agent checks the material out: a fresh copy of the repository's files (what a
checkout would hold, uncommitted edits included), one per job, or one shared folder with ``--shared-workdir``.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

from ..core import git
from ..core.console import Echo
from ..core.errors import BadInput
from . import gocd

# What a filtered copy leaves out when the source is not a git work tree (git would skip them via .gitignore).
_COPY_SKIP = {".git", ".venv", "venv", ".pipeline", ".cache", "__pycache__", ".pytest_cache", ".ipynb_checkpoints",
              "mlruns", "mlartifacts", "mlflow.db", "out", "node_modules", ".mypy_cache", ".ruff_cache", ".nox"}


def source_files(source: Path, skip: Path | None = None) -> list[str]:
    """Relative paths a fresh checkout would hold: git's tracked + untracked-not-ignored files, else a filtered walk."""
    names = git.listed_files(source)
    if names is None:
        names = list(_walk(source))
    if skip is not None and skip.resolve().is_relative_to(source.resolve()):
        prefix = skip.resolve().relative_to(source.resolve()).as_posix() + "/"
        names = [n for n in names if not (n + "/").startswith(prefix)]
    return [n for n in names if (source / n).is_file()]


def _walk(source: Path) -> Iterator[str]:
    for root, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if d not in _COPY_SKIP]
        rel = Path(root).relative_to(source)
        for name in files:
            if name not in _COPY_SKIP and not name.endswith((".pyc", ".pyo")):
                yield (rel / name).as_posix()


def make_workdir(workdir: Path, source: Path, files: list[str], material_dest: str) -> None:
    """A fresh working directory holding a copy of ``files`` (under the material's ``dest`` if it has one)."""
    if workdir.exists():
        raise BadInput(f"{workdir}: working directory already exists (state folder reused by another run?)")
    target = workdir / material_dest if material_dest else workdir
    workdir.mkdir(parents=True)
    for name in files:
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, dest)


def prepare_workdir(workdir: Path, stage: gocd.Stage, *, source: Path, files: list[str], material_dest: str,
                    echo: Echo) -> None:
    """The stage's job gets ``workdir`` as an agent leaves it: cleaned first if the stage says cleanWorkingDir,
    then checked out unless it is already there (a shared folder) or the stage does not fetch materials (an empty
    folder)."""
    if workdir.exists() and stage.clean_working_dir:
        echo("[go] cleaning working directory (cleanWorkingDir)\n")
        shutil.rmtree(workdir)  # only ever our own folder under the state dir
    if not workdir.exists():
        make_workdir(workdir, source, files if stage.fetch_materials else [], material_dest)
    echo(f"[go] working directory {workdir}\n")
