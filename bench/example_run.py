"""Timed runs for the benchmarks: a command (:func:`timed`, bench_pipeline.py's every step) and one run of the
example pipeline into fresh folders (:func:`run_example`, bench_python_downloads.py and bench_reuse.py). Not a
benchmark itself."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path


def timed(cmd: list[str], *, cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """(seconds, console output) of ``cmd``; a failure ends the benchmark with the command and its output's end."""
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stdout[-4000:]}")
    return seconds, done.stdout


def run_example(repo: Path, folder: Path, env: dict[str, str], python: str) -> tuple[float, str]:
    """``run_pipeline.py`` of ``repo`` with its venv root, state folder and SQLite store under ``folder``."""
    return timed([python, str(repo / "scripts" / "run_pipeline.py"), "--venv-root", str(folder / "ml venvs"),
                  "--state-dir", str(folder / "state"), "--tracking-uri",
                  f"sqlite:///{(folder / 'mlflow.db').as_posix()}", "--keep", "1"], cwd=repo, env=env)
