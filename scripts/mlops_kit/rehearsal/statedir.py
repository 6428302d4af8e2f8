"""The rehearsal's state folder (default ``<repo>/.pipeline``): counters, one record per run, and pruning.

Layout (everything below is created by run_pipeline.py; the folder is marked as a cache and ignored by git)::

    counters.json, counters.lock           GO_PIPELINE_COUNTER per pipeline (file-locked: concurrent runs)
    runs/<pipeline>/<counter>.json         the marker: this tool created run <counter>'s folders
    runs/<pipeline>/<counter>.lock         held by the run while it is in progress (an OS file lock: it goes away
                                           with the process, even after kill -9)
    work/<pipeline>/<counter>/...          working copies of the run's jobs
    artifacts/<pipeline>/<counter>/...     the run's artifact store (and each job's console log)

``--keep N`` (:func:`prune`) removes the working copies and artifacts of a pipeline's older runs, keeping its newest
N. It only removes runs that have a marker (so nothing the tool did not create, and no run from before markers
existed), and never a run whose lock is held: the run in progress, or another rehearsal's still running at the same
time. A run claims its counter, takes its lock and only then writes its marker, so a marker is never seen unlocked
before its run started.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import filelock

from ..core import paths
from ..core.console import Echo

_SUBFOLDERS = ("work", "artifacts")


@dataclass
class RunSlot:
    """A run's counter and the lock held while it is in progress."""

    pipeline: str
    counter: int
    lock: filelock.BaseFileLock

    def release(self) -> None:
        self.lock.release()


def ensure(state_dir: Path) -> None:
    """Create the state folder marked as a cache (CACHEDIR.TAG) and ignored by git."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tag = state_dir / "CACHEDIR.TAG"
    if not tag.exists():
        tag.write_text("Signature: 8a477f597d28d172789f06886806bc55\n# run_pipeline.py state (local rehearsal)\n",
                       encoding="utf-8")
    ignore = state_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")


def claim_run(state_dir: Path, pipeline: str) -> RunSlot:
    """The next counter of ``pipeline``, its lock held, its marker written (safe against concurrent runs)."""
    ensure(state_dir)
    path = state_dir / "counters.json"
    with filelock.FileLock(str(state_dir / "counters.lock")):
        try:
            counters = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            counters = {}
        counter = max([int(counters.get(pipeline, 0)), *_used_counters(state_dir, pipeline)]) + 1
        runs = state_dir / "runs" / pipeline
        runs.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(runs / f"{counter}.lock"))
        lock.acquire(timeout=0)  # a new name nobody else can hold: we hold the counters lock
        paths.write_json_atomic(runs / f"{counter}.json", {
            "tool": "run_pipeline.py", "pipeline": pipeline, "counter": counter, "host": socket.gethostname(),
            "pid": os.getpid(), "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds")})
        counters[pipeline] = counter
        paths.write_json_atomic(path, counters)
    return RunSlot(pipeline, counter, lock)


def _used_counters(state_dir: Path, pipeline: str) -> list[int]:
    """Counters with folders or a marker: never reused, even if counters.json was lost."""
    found = [p.name for sub in _SUBFOLDERS for p in (state_dir / sub / pipeline).glob("*")]
    found += [p.stem for p in (state_dir / "runs" / pipeline).glob("*.json")]
    return [int(name) for name in found if name.isdigit()]


def prune(state_dir: Path, keep: int, echo: Echo) -> list[tuple[str, int]]:
    """Remove the folders of every pipeline's runs older than its newest ``keep`` (marked runs only, never one in
    progress); returns what was removed."""
    removed: list[tuple[str, int]] = []
    for runs in sorted(p for p in (state_dir / "runs").glob("*") if p.is_dir()):
        counters = sorted(int(m.stem) for m in runs.glob("*.json") if m.stem.isdigit())
        for counter in counters[:-keep] if keep > 0 else counters:
            if _remove_run(state_dir, runs.name, counter):
                removed.append((runs.name, counter))
    if removed:
        shown = ", ".join(f"{p} #{c}" for p, c in removed)
        echo(f"[local] --keep {keep}: removed the working copies and artifacts of {shown}\n")
    return removed


def _remove_run(state_dir: Path, pipeline: str, counter: int) -> bool:
    runs = state_dir / "runs" / pipeline
    lock = filelock.FileLock(str(runs / f"{counter}.lock"))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        return False  # in progress (this rehearsal's or another one's)
    try:
        marker = runs / f"{counter}.json"
        if not marker.is_file():  # another pruner was first
            return False
        for sub in _SUBFOLDERS:
            folder = state_dir / sub / pipeline / str(counter)
            if folder.is_dir():
                paths.rmtree(folder)
        marker.unlink()
        return True
    finally:
        lock.release()
        Path(lock.lock_file).unlink(missing_ok=True)
