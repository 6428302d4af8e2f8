"""Benchmark: replaying a recorded stage run (replay_run.py, warm caches) vs running it, side by side.

A stage of the replay tests' chain (``tests/notebooks/chain_use.ipynb``: reads a folder produced by stage
``make``, writes two files and two metrics) is recorded once in a SQLite store, then timed, alternating order:

* ``run``: ``run_notebook.py`` of that stage (its venv built beforehand);
* ``stage``: what a GoCD job of the stage runs: ``create_venv.py`` (reuse) then ``run_notebook.py``;
* ``replay``: ``replay_run.py RUN_ID`` (its replay venv built by one warm-up replay, not counted): reads the run,
  checks, downloads and verifies the input, reuses the venv, runs the notebook, compares, logs the report.

    python bench/bench_replay.py [--repeat 5]

Prints medians and the ratios replay/run and replay/stage (goal: "about what running it costs").
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable
NOTEBOOKS = REPO / "tests" / "notebooks"
SPEC = 'stage: use\npython_version: "3.10"\nvenv_name: bench_replay\npackages:\n  - six\nkernel_display_name: "Use"\n'


def _script(name: str, *args: str, cwd: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    done = subprocess.run([PY, str(REPO / "scripts" / name), *args], cwd=cwd, env=env, capture_output=True,
                          text=True)
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_replay-"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GO_"))}
    uri = f"sqlite:///{(work / 'mlflow.db').as_posix()}"
    store = ("--tracking-uri", uri, "--experiment", "bench")
    try:
        (work / "use.yaml").write_text(SPEC, encoding="utf-8")
        build = ("--spec", str(work / "use.yaml"), "--venv-root", str(work / "venvs"), "--kernel-scope", "none")
        _script("create_venv.py", *build, cwd=work, env=env)
        (work / "inputs" / "make_outputs").mkdir(parents=True)
        (work / "inputs" / "make_outputs" / "numbers.txt").write_text("1.0\n2.5\n", encoding="utf-8")
        run_args = ("--spec", str(work / "use.yaml"), "--venv-root", str(work / "venvs"), "--notebook",
                    str(NOTEBOOKS / "chain_use.ipynb"), "-p", "input_dir", "inputs/make_outputs", "-p", "api_token",
                    "x", *store)
        _script("run_notebook.py", *run_args, "--output", "rec/use_out.ipynb", cwd=work, env=env)
        run_id = json.loads((work / "rec" / "use_out.mlops_run.json").read_text(encoding="utf-8"))["run_id"]
        replay = (run_id, "--tracking-uri", uri, "--venv-root", str(work / "replay-venvs"), "--workdir",
                  str(work / "replay"), "-p", "api_token", "x")
        _script("replay_run.py", *replay, cwd=work, env=env)  # warm-up: builds the replay venv
        times: dict[str, list[float]] = {"run": [], "stage": [], "replay": []}
        for round_ in range(args.repeat):
            order = ["run", "stage", "replay"] if round_ % 2 == 0 else ["replay", "stage", "run"]
            for name in order:
                out = ("--output", f"r{round_}{name}/use_out.ipynb")
                if name == "run":
                    times[name].append(_script("run_notebook.py", *run_args, *out, cwd=work, env=env))
                elif name == "stage":
                    times[name].append(_script("create_venv.py", *build, cwd=work, env=env)
                                       + _script("run_notebook.py", *run_args, *out, cwd=work, env=env))
                else:
                    times[name].append(_script("replay_run.py", *replay, cwd=work, env=env))
        med = {name: statistics.median(values) for name, values in times.items()}
        print(f"stage chain_use (Python 3.10 venv), {args.repeat} rounds each (medians; min-max)")
        for name, label in (("run", "run_notebook"), ("stage", "create_venv + run_notebook"),
                            ("replay", "replay_run (warm)")):
            print(f"  {label:<28} {med[name]:6.2f} s  ({min(times[name]):.2f}-{max(times[name]):.2f})")
        print(f"replay / run_notebook = {med['replay'] / med['run']:.2f}x; "
              f"replay / (create_venv + run_notebook) = {med['replay'] / med['stage']:.2f}x")
        if hasattr(os, "getloadavg"):
            print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
