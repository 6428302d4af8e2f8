"""Benchmark: run_notebook.py (papermill + all MLflow logging) vs bare ``python -m papermill``, side by side.

Same small notebook, same stage venv (built by create_venv.py, no kernel registered), alternating order, several
repetitions; prints medians and the ratio (goal: <= 1.5x). Bare papermill gets the venv's kernel through a
kernelspec in a temporary JUPYTER_PATH, i.e. the cheapest way papermill can reach that venv.

In the same rounds, a notebook that calls mlflow itself (a venv with mlflow-skinny) runs on the default SQLite
store (served to the kernel by the tracking worker) and against a team server (``mlflow server --workers 1`` on
127.0.0.1, background jobs off, started once by the bench): the difference is the cost of serving the local store
(goal: at most about 2 s more).

    python bench/bench_run_notebook.py [--repeat 7] [--server] [--no-mlflow] [--python 3.12]

``--server`` also times the notebook without mlflow against the team server; ``--no-mlflow`` skips the
mlflow-notebook pair (no server started). One warm-up round per variant is not counted (it creates/migrates
mlflow.db once, fills OS caches).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from mlops_kit.envs import kernel  # noqa: E402

PY = sys.executable
NOTEBOOK_CELLS = [
    ('output_dir = "."\nn = 1000', ["parameters"]),
    ("import json, os, sys\ntotal = sum(i * i for i in range(n))\nprint(sys.executable, total)", []),
    ("json.dump({'total': total, 'n': n}, open(os.path.join(output_dir, 'metrics.json'), 'w'))", []),
    ("with open(os.path.join(output_dir, 'table.csv'), 'w') as fh:\n    fh.write('a,b\\n1,2\\n')", []),
]
MLFLOW_CELL = ("import mlflow\nmlflow.log_metric('total', total)\nmlflow.log_param('n_logged', n)\n"
               "mlflow.set_tag('bench', 'yes')\nmlflow.log_artifact(os.path.join(output_dir, 'table.csv'), 'nb')", [])


def make_notebook(path: Path, cells: list[tuple[str, list[str]]]) -> None:
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    for source, tags in cells:
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = tags
        nb.cells.append(cell)
    nbformat.write(nb, str(path))


def build_venv(work: Path, minor: str, package: str = "six") -> Path:
    spec = work / f"bench_{package}.yaml"
    spec.write_text(f'stage: bench\npython_version: "{minor}"\nvenv_name: bench_{package.replace("-", "_")}_py'
                    f'{minor.replace(".", "")}\npackages:\n  - {package}\nkernel_display_name: "Bench"\n',
                    encoding="utf-8")
    done = subprocess.run([PY, str(REPO / "scripts" / "create_venv.py"), "--spec", str(spec), "--venv-root",
                           str(work / "venvs"), "--kernel-scope", "none", "--quiet"], capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"create_venv failed:\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    elapsed = time.perf_counter() - start
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-2000:]}")
    return elapsed


def start_server(root: Path) -> tuple[str, subprocess.Popen, float]:
    """A team server as one would run it on 127.0.0.1 (its background job runners off); also its start time."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([PY, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'srv.db'}",
                               "--artifacts-destination", str(root / "srv-artifacts"), "--host", "127.0.0.1",
                               "--port", str(port), "--workers", "1"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, cwd=root, start_new_session=True,
                              env={**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    begin = time.perf_counter()
    for _ in range(240):
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return url, server, time.perf_counter() - begin
        except OSError:
            time.sleep(0.5)
    sys.exit("mlflow server did not come up")


SERVED = "mlflow nb (served sqlite)"
TEAM = "mlflow nb (team server)"


def mlflow_variants(work: Path, minor: str, url: str, env: dict[str, str]) -> dict[str, tuple[list[str], dict]]:
    """The notebook that calls mlflow itself (venv with mlflow-skinny) on the default store and on the server."""
    venv = build_venv(work, minor, "mlflow-skinny")
    nb = work / "bench_mlflow.ipynb"
    make_notebook(nb, [*NOTEBOOK_CELLS, MLFLOW_CELL])
    cmd = [PY, str(REPO / "scripts" / "run_notebook.py"), "--venv", str(venv), "--notebook", str(nb), "--no-progress"]
    return {SERVED: ([*cmd, "--output", str(work / "ml_out.ipynb")], env),
            TEAM: ([*cmd, "--output", str(work / "mlt_out.ipynb"), "--tracking-uri", url], env)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeat", type=int, default=7)
    ap.add_argument("--python", default="3.12", help="stage venv Python minor (default 3.12)")
    ap.add_argument("--server", action="store_true", help="also time the notebook without mlflow against the server")
    ap.add_argument("--no-mlflow", action="store_true", help="skip the notebook that calls mlflow itself")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench_run_notebook-"))
    server = None
    try:
        venv = build_venv(work, args.python)
        nb = work / "bench.ipynb"
        make_notebook(nb, NOTEBOOK_CELLS)
        kdir = work / "jupyter" / "kernels" / "bench-venv"
        kdir.mkdir(parents=True)
        (kdir / "kernel.json").write_text(json.dumps(kernel.kernelspec(venv, "Bench")), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GO_"))}
        bare_env = dict(env, JUPYTER_PATH=str(work / "jupyter"))
        variants = {
            "papermill (bare)": ([PY, "-m", "papermill", str(nb), str(work / "pm_out.ipynb"), "-k", "bench-venv",
                                  "--no-progress-bar", "-p", "output_dir", str(work / "pm_outputs")], bare_env),
            "run_notebook (sqlite)": ([PY, str(REPO / "scripts" / "run_notebook.py"), "--venv", str(venv),
                                       "--notebook", str(nb), "--output", str(work / "rn_out.ipynb"),
                                       "--no-progress"], env),
        }
        (work / "pm_outputs").mkdir()
        server_start = None
        if args.server or not args.no_mlflow:
            url, server, server_start = start_server(work)
        if args.server:
            variants["run_notebook (server)"] = (variants["run_notebook (sqlite)"][0] + ["--tracking-uri", url,
                                                 "--output", str(work / "rns_out.ipynb")], env)
        if not args.no_mlflow:
            variants.update(mlflow_variants(work, args.python, url, env))
        times: dict[str, list[float]] = {name: [] for name in variants}
        for rnd in range(args.repeat + 1):
            order = list(variants) if rnd % 2 else list(reversed(variants))
            for name in order:
                cmd, venv_env = variants[name]
                elapsed = timed(cmd, venv_env, work)
                if rnd:  # round 0 is the warm-up
                    times[name].append(elapsed)
        base = statistics.median(times["papermill (bare)"])
        print(f"notebook: {len(NOTEBOOK_CELLS)} cells, venv Python {args.python}, {args.repeat} runs each "
              f"(medians; min-max)")
        for name, values in times.items():
            med = statistics.median(values)
            print(f"  {name:<26} {med:6.2f} s  ({min(values):.2f}-{max(values):.2f})  ratio {med / base:4.2f}x")
        ratio = statistics.median(times["run_notebook (sqlite)"]) / base
        paired = statistics.median(r / b for r, b in zip(times["run_notebook (sqlite)"], times["papermill (bare)"],
                                                         strict=True))
        print(f"median of per-round ratios (back-to-back pairs, less sensitive to load drift): {paired:.2f}x")
        print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end" if hasattr(
            os, "getloadavg") else f"machine: {os.cpu_count()} CPUs")
        print(f"run_notebook / bare papermill = {ratio:.2f}x (goal <= 1.5x): {'OK' if ratio <= 1.5 else 'SLOWER'}")
        if not args.no_mlflow:
            served, team = times[SERVED], times[TEAM]
            more = statistics.median(served) - statistics.median(team)
            pairs = statistics.median(s - t for s, t in zip(served, team, strict=True))
            print(f"notebook calling mlflow: served local store - team server = {more:+.2f} s (median of per-round "
                  f"differences {pairs:+.2f} s; goal <= ~2 s): {'OK' if more <= 2 else 'SLOWER'}; the team server "
                  f"itself took {server_start:.1f} s to start (not counted)")
        return 0
    finally:
        if server is not None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
