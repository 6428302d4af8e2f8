"""Benchmark (not a test): a stage venv built from its lock vs resolving the same spec, side by side in one run.

Both sides run ``create_venv.py`` as a GoCD job does (a whole process: interpreter discovery, install, health
check, freeze, audit bundle; ``--kernel-scope none``) for the same spec on the same base Python. The locked side
has the spec's committed lock next to it; the resolving side is the same spec copied without it (the path every
build took before locks, still the one for a spec without a lock).

Figures printed:

* cold build: an empty uv cache on each side (a fresh agent: everything downloaded), lock vs resolve.
* warm build: the shared uv cache, ``--force`` rebuilds, median of N, the two sides interleaved. Goal: a build
  from the lock is not slower than the resolving build.
* unchanged re-run of the locked spec (the lock's freshness check + cache key + health check): median of N.
  Goal: <= 0.5 s.
* ``--check-lock`` of ``specs/`` (a whole process, what CI and pre-commit run) and ``lockfile.check_fresh`` in
  process: no network.
* writing the lock: a new lock (universal resolution + the Windows/Linux/macOS dry runs), and a re-lock of an
  unchanged spec (same work, the file left untouched).

Usage::

    python bench/bench_locks.py [--spec specs/train.yaml] [--runs 5] [--no-cold]

Everything is built in a temporary folder; the warm uv cache is ``$UV_CACHE_DIR``, else the repo's ``.cache/uv``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from mlops_kit.envs import (
    lockfile,  # noqa: E402
    spec,
)

CREATE_VENV = REPO / "scripts" / "create_venv.py"


def timed(args: list[str], env: dict[str, str]) -> float:
    """Wall time of one ``create_venv.py`` run; a failure stops the benchmark with its output."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, str(CREATE_VENV), *args], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"create_venv.py {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return elapsed


def stage_copy(source: Path, folder: Path, *, with_lock: bool) -> Path:
    folder.mkdir(parents=True)
    shutil.copyfile(source, folder / source.name)
    if with_lock:
        shutil.copyfile(lockfile.lock_path(source), lockfile.lock_path(folder / source.name))
    return folder / source.name


def build_args(spec_file: Path, root: Path, *extra: str) -> list[str]:
    return ["--spec", str(spec_file), "--venv-root", str(root), "--kernel-scope", "none", *extra]


def cold(locked: Path, unlocked: Path, work: Path, env: dict[str, str]) -> tuple[float, float]:
    """One build per side, each with an empty uv cache of its own (deleted afterwards)."""
    times = []
    for name, spec_file in (("lock", locked), ("resolve", unlocked)):
        cache = work / f"uv-cold-{name}"
        times.append(timed(build_args(spec_file, work / f"cold-{name}"), {**env, "UV_CACHE_DIR": str(cache)}))
        shutil.rmtree(cache, ignore_errors=True)
    return times[0], times[1]


def warm(locked: Path, unlocked: Path, work: Path, env: dict[str, str], runs: int) -> tuple[list[float], list[float]]:
    """Interleaved ``--force`` rebuilds on the warm cache (after one unmeasured build per side)."""
    sides = {"lock": (locked, []), "resolve": (unlocked, [])}
    for name, (spec_file, _) in sides.items():
        timed(build_args(spec_file, work / f"warm-{name}"), env)
    for _ in range(runs):
        for name, (spec_file, times) in sides.items():
            times.append(timed(build_args(spec_file, work / f"warm-{name}", "--force"), env))
    return sides["lock"][1], sides["resolve"][1]


def reuse(locked: Path, unlocked: Path, work: Path, env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median unchanged re-run of each side (interleaved)."""
    lock, plain = [], []
    for _ in range(runs):
        lock.append(timed(build_args(locked, work / "warm-lock"), env))
        plain.append(timed(build_args(unlocked, work / "warm-resolve"), env))
    return statistics.median(lock), statistics.median(plain)


def check_lock(env: dict[str, str], runs: int) -> tuple[float, float]:
    """``create_venv.py --check-lock --spec specs`` (whole process) and ``check_fresh`` of one spec in process."""
    process = statistics.median(timed(["--spec", str(REPO / "specs"), "--check-lock", "--quiet"], env)
                                for _ in range(runs))
    in_process = []
    for _ in range(50):
        started = time.perf_counter()
        lockfile.check_fresh(spec.load_spec(REPO / "specs" / "train.yaml"))
        in_process.append(time.perf_counter() - started)
    return process, statistics.median(in_process)


def locking(source: Path, work: Path, env: dict[str, str]) -> tuple[float, float]:
    spec_file = stage_copy(source, work / "to-lock", with_lock=False)
    first = timed(["--spec", str(spec_file), "--lock"], env)
    again = timed(["--spec", str(spec_file), "--lock"], env)
    return first, again


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=REPO / "specs" / "train.yaml",
                        help="a spec with a committed lock (default: specs/train.yaml)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--no-cold", action="store_true", help="skip the empty-cache builds (they download)")
    args = parser.parse_args()
    source = args.spec.resolve()
    lock = lockfile.check_fresh(spec.load_spec(source))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ML_VENV_ROOT", "MLFLOW_"))}
    env.setdefault("UV_CACHE_DIR", str(REPO / ".cache" / "uv"))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{source.name}: {len(lock.pins)} pins, Python {lock.python}; {os.cpu_count()} cores, load {load:.1f}")
    with tempfile.TemporaryDirectory(prefix="bench-locks-") as tmp:
        work = Path(tmp)
        locked = stage_copy(source, work / "locked", with_lock=True)
        unlocked = stage_copy(source, work / "unlocked", with_lock=False)
        rows = ["| build (create_venv.py, whole process) | from the lock | resolving the spec | lock / resolve |",
                "|---|---|---|---|"]
        if not args.no_cold:
            lock_cold, resolve_cold = cold(locked, unlocked, work, env)
            rows.append(f"| cold: empty uv cache | {lock_cold:.1f} s | {resolve_cold:.1f} s | "
                        f"{lock_cold / resolve_cold:.2f} |")
        lock_warm, resolve_warm = warm(locked, unlocked, work, env, args.runs)
        lw, rw = statistics.median(lock_warm), statistics.median(resolve_warm)
        rows.append(f"| warm: --force rebuild, median of {args.runs} | {lw:.2f} s | {rw:.2f} s | {lw / rw:.2f} |")
        lr, rr = reuse(locked, unlocked, work, env, args.runs)
        rows.append(f"| unchanged re-run (reuse), median of {args.runs} | {lr:.2f} s | {rr:.2f} s | {lr / rr:.2f} |")
        print("\n".join(rows) + "\n\ngoals: warm build lock / resolve <= 1; re-run <= 0.5 s\n")
        process, in_process = check_lock(env, args.runs)
        print(f"--check-lock --spec specs (3 specs, whole process, median of {args.runs}): {process:.2f} s; "
              f"check_fresh(load_spec(train.yaml)) in process: median {in_process * 1000:.1f} ms")
        first, unchanged = locking(source, work, env)
        print(f"--lock {source.name}: new lock {first:.1f} s, re-lock unchanged {unchanged:.1f} s "
              "(resolution + Windows/Linux/macOS dry runs, warm cache)")


if __name__ == "__main__":
    main()
