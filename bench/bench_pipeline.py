"""Benchmark: the local pipeline rehearsal on warm envs vs bare papermill runs of the same three notebooks.

Both sides use the same stage venvs, notebooks and parameters, measured side by side in one process:

* pipeline: ``scripts/run_pipeline.py`` on gocd/pipeline_config.xml (fresh working copy per job, create_venv.py
  re-ensuring each warm venv, run_notebook.py with MLflow logging to a local SQLite store, artifacts published and
  fetched);
* bare: for each stage ``python -m papermill <notebook> <out> -k <kernel of the stage venv> -f <params> -p ...``,
  copying the previous stage's output folder into place the way fetchartifact does; the three times are summed.

Goal: pipeline / bare <= 1.3. Usage (toolkit venv):  python bench/bench_pipeline.py [--repeat 3] [--venv-root DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from example_run import timed  # noqa: E402

from mlops_kit.core import paths  # noqa: E402
from mlops_kit.rehearsal import gocd, gocd_reader  # noqa: E402

PY = sys.executable


def stage_plans() -> list[dict]:
    """What each stage's run_notebook task runs, read from the example XML (so the bench follows the pipeline)."""
    chosen = gocd.select_pipeline(gocd_reader.load_config(REPO / "gocd" / "pipeline_config.xml"), None)
    plans = []
    for stage in chosen.stages:
        task = next(t for t in stage.jobs[0].tasks if isinstance(t, gocd.ExecTask) and
                    t.args[0].endswith("run_notebook.py"))
        args = list(task.args)
        opt = {args[i]: args[i + 1] for i in range(1, len(args) - 1) if args[i].startswith("--")}
        params = [(args[i + 1], args[i + 2]) for i in range(len(args) - 2) if args[i] == "-p"]
        plans.append({"stage": stage.name, "spec": opt["--spec"], "notebook": opt["--notebook"],
                      "params_file": opt["--params-file"], "output_dir": opt["--output-dir"], "params": params})
    return plans


_TASK = re.compile(r"\[go\] [0-9:]+ task (\d+)/\d+: (\S+(?: \S+)?)")
_DONE = re.compile(r"\[go\] task (\d+) \w+ in ([0-9.]+)s")


def breakdown(log: str) -> dict[str, float]:
    """Seconds per kind of task, from the rehearsal's own log ('task N passed in Xs')."""
    kinds: dict[str, float] = {}
    current = "other"
    for line in log.splitlines():
        if (start := _TASK.search(line)) is not None:
            words = start.group(2)
            current = next((k for k in ("create_venv.py", "run_notebook.py", "fetchartifact") if k in words), words)
        elif (end := _DONE.search(line)) is not None:
            kinds[current] = kinds.get(current, 0.0) + float(end.group(2))
    return kinds


def warm_envs(plans: list[dict], venv_root: Path, env: dict[str, str]) -> dict[str, Path]:
    venvs = {}
    for plan in plans:
        cmd = [PY, str(REPO / "scripts" / "create_venv.py"), "--spec", str(REPO / plan["spec"]), "--venv-root",
               str(venv_root), "--kernel-scope", "none", "--quiet"]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        venvs[plan["stage"]] = Path(done.stdout.strip().splitlines()[-1])
    return venvs


def private_kernels(venvs: dict[str, Path], folder: Path) -> None:
    """Kernelspecs pointing at the stage venvs, for plain papermill (JUPYTER_PATH=folder)."""
    for stage, venv in venvs.items():
        kdir = folder / "kernels" / f"bench-{stage}"
        kdir.mkdir(parents=True, exist_ok=True)
        argv = [str(paths.venv_python(venv)), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
        (kdir / "kernel.json").write_text(json.dumps({"argv": argv, "display_name": stage, "language": "python"}))


def bare_papermill(plans: list[dict], work: Path, env: dict[str, str]) -> float:
    """The three notebooks with nothing around them but the copy a fetchartifact would do."""
    total = 0.0
    work.mkdir(parents=True)
    for plan in plans:
        for name, value in plan["params"]:
            if name == "input_dir":  # what the fetchartifact task does: put the previous outputs there
                src = work / "out" / Path(value).name
                shutil.copytree(src, work / value, dirs_exist_ok=True)
        out_nb = work / "out" / "notebooks" / f"{plan['stage']}_out.ipynb"
        out_nb.parent.mkdir(parents=True, exist_ok=True)
        cmd = [PY, "-m", "papermill", str(REPO / plan["notebook"]), str(out_nb), "-k", f"bench-{plan['stage']}",
               "-f", str(REPO / plan["params_file"]), "-p", "output_dir", str(work / plan["output_dir"]),
               "--no-progress-bar", "--cwd", str(work)]
        for name, value in plan["params"]:
            cmd += ["-p", name, value]
        total += timed(cmd, cwd=work, env=env)[0]
    return total


def rehearsal(root: Path, venv_root: Path, env: dict[str, str]) -> tuple[float, str]:
    return timed([PY, str(REPO / "scripts" / "run_pipeline.py"), "--venv-root", str(venv_root), "--state-dir",
                  str(root / "state"), "--tracking-uri", f"sqlite:///{(root / 'mlflow.db').as_posix()}"],
                 cwd=REPO, env=env)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--venv-root", type=Path, help="stage venvs (default: a temporary folder, built once)")
    args = parser.parse_args()
    plans = stage_plans()
    with tempfile.TemporaryDirectory(prefix="bench-pipeline-") as tmp:
        tmp_path = Path(tmp)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GO_"))}
        env.update(JUPYTER_PATH=str(tmp_path / "jupyter"), JUPYTER_DATA_DIR=str(tmp_path / "jupyter-data"),
                   MPLCONFIGDIR=str(tmp_path / "mpl"), PYTHONUTF8="1",
                   MLOPS_REUSE="never")  # every rehearsal executes its notebooks (bench_reuse.py measures reuse)
        env.setdefault("UV_CACHE_DIR", str(REPO / ".cache" / "uv"))
        venv_root = (args.venv_root or tmp_path / "venvs").resolve()
        started = time.perf_counter()
        private_kernels(warm_envs(plans, venv_root, env), tmp_path / "jupyter")
        print(f"warm-up (build/reuse the three stage venvs): {time.perf_counter() - started:.1f}s")
        rehearsal(tmp_path / "warm", venv_root, env)  # first run: MLflow DB creation, kernels, caches
        pipe, bare, ratios = [], [], []
        for i in range(args.repeat):
            bare.append(bare_papermill(plans, tmp_path / f"bare{i}", env))
            seconds, log = rehearsal(tmp_path / f"pipe{i}", venv_root, env)
            pipe.append(seconds)
            ratios.append(pipe[-1] / bare[-1])
            parts = breakdown(log)
            own = seconds - sum(parts.values())
            print(f"round {i + 1}: pipeline {seconds:.1f}s  bare papermill (sum of 3) {bare[-1]:.1f}s  "
                  f"ratio {ratios[-1]:.2f}   [pipeline = " + ", ".join(f"{k} {v:.1f}s" for k, v in parts.items())
                  + f", run_pipeline itself {own:.1f}s]")
        print(f"\nmedian of {args.repeat} rounds: pipeline {statistics.median(pipe):.1f}s, bare papermill "
              f"{statistics.median(bare):.1f}s, ratio {statistics.median(ratios):.2f} (goal <= 1.30)")
        if hasattr(os, "getloadavg"):
            print(f"machine load average (1/5/15 min): {' '.join(f'{x:.1f}' for x in os.getloadavg())} "
                  f"on {os.cpu_count()} CPUs: other work running at the same time inflates both sides")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
