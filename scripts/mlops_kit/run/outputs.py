"""Where one stage run writes, checked before anything runs: the executed notebook, its companions, the output folder.

Next to ``--output`` (``out/train_out.ipynb``): ``train_out.html``, ``train_out.params.yaml``, the notebook as
given ``train_out.source.ipynb``, the run manifest ``train_out.mlops_run.json`` and, while the run is alive, the
hidden lock ``.train_out.mlops_run.lock``. The output folder (``--output-dir``, default
``<folder of --output>/<stage>_outputs``) is logged whole, so it must not hold the tracking store, its artifacts, the
venv or the executed notebook: logging a folder into itself copies it into
itself for ever.

The lock is an OS file lock held for the run's lifetime: a second run writing the same output is refused, and a
manifest still saying RUNNING whose lock is free belongs to a runner that vanished (``kill -9``, a power cut), so
its run can be closed as KILLED (see :mod:`mlops_kit.run.stage_run`).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import filelock

from ..core import paths
from ..core.errors import BadInput
from .runrecord import MANIFEST_SUFFIX, manifest_path
from .store import Target, store_paths


@dataclass(frozen=True)
class RunFiles:
    """The files and folders of one run, absolute."""

    output: Path
    output_dir: Path

    @property
    def html(self) -> Path:
        return self.output.with_suffix(".html")

    @property
    def params_copy(self) -> Path:
        return self.output.with_name(self.output.stem + ".params.yaml")

    @property
    def source_copy(self) -> Path:
        """The notebook as given (before parameters were injected), copied when the run starts."""
        return self.output.with_name(self.output.stem + ".source.ipynb")

    @property
    def manifest(self) -> Path:
        return manifest_path(self.output)

    @property
    def lock(self) -> Path:
        return self.output.with_name(f".{self.output.stem}{MANIFEST_SUFFIX[:-5]}.lock")


def run_files(output: Path, output_dir: Path | None, stage: str) -> RunFiles:
    output = Path(os.path.abspath(output))
    return RunFiles(output, Path(os.path.abspath(output_dir or output.parent / f"{stage}_outputs")))


def check(files: RunFiles, *, target: Target, venv: Path) -> None:
    """Refuse an output folder that would swallow what the run logs from, or that cannot be created."""
    store = store_paths(target)
    for name, inner in (("the tracking store", store), ("the venv", [venv]), ("the executed notebook",
                                                                              [files.output])):
        for path in inner:
            if paths.inside(path, files.output_dir):
                raise BadInput(f"--output-dir {files.output_dir}: it contains {name} ({path}), and everything in "
                               "it is logged to MLflow (a run would copy it into itself); choose an own folder, "
                               "e.g. out/<stage>_outputs")
    for path in store:
        if paths.inside(files.output_dir, path):
            raise BadInput(f"--output-dir {files.output_dir}: it is inside the tracking store ({path})")
    for what, folder in (("--output", files.output.parent), ("--output-dir", files.output_dir)):
        _creatable(what, folder)


def make_folders(files: RunFiles) -> None:
    """Create the output folders (once the run will go ahead: a store that is down must leave nothing behind)."""
    for what, folder in (("--output", files.output.parent), ("--output-dir", files.output_dir)):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise BadInput(f"{what} {folder}: cannot create it ({exc.strerror or exc})") from None


def _creatable(what: str, folder: Path) -> None:
    """The folder's nearest existing ancestor is a folder a file can be written in (a probe file, removed at
    once): nothing is created yet, so bad input and a store that is down leave no trace."""
    existing = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise BadInput(f"{what} {folder}: {existing} is a file, not a folder")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        raise BadInput(f"{what} {folder}: cannot write in {existing} ({exc.strerror or exc})") from None


@contextlib.contextmanager
def claimed(files: RunFiles) -> Iterator[None]:
    """Hold the output's lock for the run; another live run of the same output is bad input (exit 2)."""
    lock = filelock.FileLock(str(files.lock))
    try:
        lock.acquire(blocking=False)
    except filelock.Timeout:
        raise BadInput(f"{files.output}: another run_notebook.py is writing this output right now (lock "
                       f"{files.lock}); wait for it or choose another --output") from None
    except OSError as exc:
        raise BadInput(f"{files.output}: cannot take the run lock {files.lock} ({exc.strerror or exc})") from None
    try:
        yield
    finally:
        lock.release()  # the file stays: deleting it could let two later runs lock two different files


def runner_alive(files: RunFiles) -> bool:
    """True while some run_notebook.py holds this output's lock (its runner is alive, on this machine)."""
    if not files.lock.exists():
        return False
    lock = filelock.FileLock(str(files.lock))
    try:
        lock.acquire(blocking=False)
    except filelock.Timeout:
        return True
    except OSError:
        return False
    lock.release()
    return False


_STAGING_TAIL = re.compile(r"[a-z0-9_]{8}")  # what tempfile.mkdtemp appends to a prefix


def _staging_prefix(files: RunFiles) -> str:
    return f".mlops_kit-reuse-{files.output.name}-"


def reuse_staging(files: RunFiles) -> Path:
    """A new folder beside the executed notebook for a reused run's downloads (same volume: they are moved, not
    copied, into place). Called while :func:`claimed` holds the output's lock, after :func:`remove_stale_staging`."""
    return Path(tempfile.mkdtemp(prefix=_staging_prefix(files), dir=files.output.parent))


def remove_stale_staging(files: RunFiles) -> list[Path]:
    """Remove the staging folders an earlier run of this output left when it was killed (kill -9, a lost agent):
    only folders named as :func:`reuse_staging` names them for this output, and only while this run holds the
    output's lock, so none of them can belong to a live run. Returns what was removed."""
    prefix, removed = _staging_prefix(files), []
    with contextlib.suppress(OSError):
        for entry in files.output.parent.iterdir():
            if entry.name.startswith(prefix) and _STAGING_TAIL.fullmatch(entry.name[len(prefix):]) \
                    and entry.is_dir() and not entry.is_symlink():
                with contextlib.suppress(OSError):
                    paths.rmtree(entry)
                    removed.append(entry)
    return removed
