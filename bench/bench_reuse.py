"""Benchmark: the example pipeline run again with reuse (its specs say ``reuse: true``), side by side in one run.

In a copy of the repository, with a fresh venv root, state folder and SQLite store (the uv package cache stays
warm), ``scripts/run_pipeline.py`` runs:

1. first run: nothing to reuse; the three stage venvs are built (what a first run on an agent or a laptop does);
2. executing again with ``MLOPS_REUSE=never`` (venvs ready): what every run cost before reuse existed;
3. second run: all three stages reused (goal: <= 20 % of the first run's time);
4. only ``params/train_params.yaml`` changed (``C: 0.5``): ingest and features reused, train executed;
5. a comment-free code edit of the features notebook that leaves its outputs byte-identical: features executed,
   train reused (its input is the same content).

Each line prints its wall time, its ratio to the first run and to the executing run (2), and which stages were
reused, checked against what the step expects. Usage (toolkit venv):  python bench/bench_reuse.py
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from example_run import run_example

REPO = Path(__file__).resolve().parents[1]
_REUSED = re.compile(r"^\[(\w+)/\w+\] reused run ", re.M)
_STAGES = ("ingest", "features", "train")


def copy_repo(target: Path) -> None:
    """The committed repository plus the working tree's changes to tracked files (what run_pipeline.py sees)."""
    subprocess.run(["git", "clone", "--quiet", str(REPO), str(target)], check=True)
    changed = subprocess.run(["git", "diff", "--name-only", "HEAD"], cwd=REPO, capture_output=True, text=True,
                             check=True).stdout.split()
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=REPO, capture_output=True,
                               text=True, check=True).stdout.split()
    for name in changed + untracked:
        if (REPO / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, target / name)


def rehearse(repo: Path, folder: Path, env: dict[str, str]) -> tuple[float, list[str]]:
    """One run of the pipeline: (seconds, stages reused)."""
    seconds, output = run_example(repo, folder, env, sys.executable)
    return seconds, sorted(set(_REUSED.findall(output)), key=_STAGES.index)


def edit_features_code(repo: Path) -> None:
    """A code change with no effect on the outputs: one more statement in the last code cell (no comment)."""
    path = repo / "notebooks" / "features.ipynb"
    nb = json.loads(path.read_text(encoding="utf-8"))
    cell = [c for c in nb["cells"] if c["cell_type"] == "code"][-1]
    cell["source"] = "".join(cell["source"]) + "\nrows_written = len(table)\n"
    path.write_text(json.dumps(nb, indent=1) + "\n", encoding="utf-8")


def main() -> int:
    scratch = Path(tempfile.mkdtemp(prefix="bench-reuse-"))
    try:
        repo = scratch / "repo"
        copy_repo(repo)
        home = scratch / "home"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GO_", "ML_VENV_ROOT", "MLOPS_"))}
        env.update(HOME=str(home), XDG_DATA_HOME=str(home / "share"), JUPYTER_DATA_DIR=str(home / "jupyter"),
                   UV_CACHE_DIR=os.environ.get("UV_CACHE_DIR", str(REPO / ".cache" / "uv")))
        steps = [("first run (venvs built)", None, []),
                 ("executing again (MLOPS_REUSE=never)", "never", []),
                 ("second run", None, list(_STAGES)),
                 ("train params changed", None, ["ingest", "features"]),
                 ("features code edited, same outputs", None, ["ingest", "train"])]
        results = []
        for name, mode, expected in steps:
            if name == "train params changed":
                params = repo / "params" / "train_params.yaml"
                params.write_text(params.read_text(encoding="utf-8").replace("C: 1.0", "C: 0.5"), encoding="utf-8")
            if name.startswith("features code"):
                edit_features_code(repo)
            seconds, reused = rehearse(repo, scratch, {**env, **({"MLOPS_REUSE": mode} if mode else {})})
            results.append((name, seconds, reused, expected))
        first, executing = results[0][1], results[1][1]
        for name, seconds, reused, expected in results:
            check = "" if reused == expected else f"   UNEXPECTED: expected reused {expected or 'none'}"
            print(f"{name:>38}: {seconds:6.1f} s  {seconds / first:5.2f}x of the first run  "
                  f"{seconds / executing:5.2f}x of an executing run  reused: {', '.join(reused) or 'none'}{check}")
        print(f"goal: second run <= 0.20x of the first run: {results[2][1] / first:.2f}x")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
