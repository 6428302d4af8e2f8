"""Benchmark: README command 1 on a machine with no stage Python (three downloaded through uv from a local mirror)
vs the same first run with all three installed.

Both sides are a first run of ``scripts/run_pipeline.py`` on the example (fresh venv root, state folder and SQLite
store; the same warm uv package cache), measured side by side in one process, alternating which goes first:

* present: the stage Pythons found installed (pyenv), as today;
* downloads: no pyenv, no ``python3.X`` on PATH (the toolkit's Python reachable as ``python`` only, as on an agent),
  uv downloading the three stage Pythons from a local fake host (python-build-standalone-style archives packed from
  pyenv's CPythons, tests/helpers_managed.py) into ``<venv root>/../pythons``.

Also reported: the seconds the three downloads themselves took (from the tools' "downloaded Python ... in Xs" lines),
and a second run of the downloads side (nothing downloaded). A real download adds the network time of about 30 MB
per Python. Usage (toolkit venv):  python bench/bench_python_downloads.py [--repeat 1]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "tests")]

from example_run import run_example  # noqa: E402

from helpers_managed import downloads_in, make_mirror, one_python_machine  # noqa: E402

_DOWNLOADED = re.compile(r"downloaded Python \S+ \(.*\) in ([0-9.]+)s")


def first_run(env: dict[str, str], folder: Path, python: str) -> tuple[float, str]:
    """One rehearsal of the example into fresh folders under ``folder``: (seconds, output)."""
    return run_example(REPO, folder, env, python)


def isolated(base: dict[str, str], home: Path) -> dict[str, str]:
    """No kernels or venvs of the user's touched: a home of the bench's own (the uv package cache stays shared)."""
    env = {k: v for k, v in base.items() if not k.startswith(("MLFLOW_", "GO_", "ML_VENV_ROOT", "UV_PYTHON",
                                                             "MLOPS_PYTHON"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / "share"), JUPYTER_DATA_DIR=str(home / "jupyter"),
               UV_CACHE_DIR=os.environ.get("UV_CACHE_DIR", str(REPO / ".cache" / "uv")),
               MLOPS_REUSE="never")  # the re-run executes its notebooks too: only the Python downloads differ
    return env


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="bench-python-downloads-"))
    try:
        mirror = make_mirror(scratch / "mirror")
        times: dict[str, list[float]] = {"present": [], "downloads": [], "re-run, nothing new": []}
        fetch: list[float] = []
        for turn in range(args.repeat):
            for side in (("present", "downloads") if turn % 2 == 0 else ("downloads", "present")):
                folder = scratch / f"{side}-{turn}"
                if side == "present":
                    seconds, _ = first_run(isolated(dict(os.environ), folder / "home"), folder, sys.executable)
                    times["present"].append(seconds)
                    continue
                machine = one_python_machine(folder / "machine", mirror)
                env = {**isolated(machine, folder / "home"), "PATH": machine["PATH"],
                       "PYENV_ROOT": machine["PYENV_ROOT"], "UV_PYTHON_DOWNLOADS_JSON_URL": mirror.json_url}
                python = machine["PATH"].split(os.pathsep)[0] + "/python"
                seconds, out = first_run(env, folder, python)
                assert len(downloads_in(out)) == 3, out[-3000:]
                fetch.append(sum(float(m) for m in _DOWNLOADED.findall(out)))
                times["downloads"].append(seconds)
                shutil.rmtree(folder / "state", ignore_errors=True)
                again, out = first_run(env, folder, python)
                assert downloads_in(out) == [], out[-3000:]
                times["re-run, nothing new"].append(again)
        present = statistics.median(times["present"])
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:>20}: {median:6.1f} s  ({median / present:.2f}x of a first run with all Pythons present)")
        print(f"{'three downloads':>20}: {statistics.median(fetch):6.1f} s of it (uv: fetch from the local mirror, "
              "check the sha256, extract)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
