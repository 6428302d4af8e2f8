"""Benchmark: serving a local SQLite store with served_store.start() inside the tracking helper vs `mlflow server`.

Each repetition is a fresh process that does what the toolkit's helper does first (numpy/pandas made unimportable,
``import mlflow.tracking``, open the SQLite store, create a run), then times :func:`served_store.start` until
``/health`` answers, one metric logged over REST, and ``stop()``; RSS before/after (Linux ``/proc``). For
comparison, ``mlflow server --workers 1`` (``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``) as a subprocess until
``/health`` answers, with the RSS of its process tree. Prints medians (the machine is shared: noisy).

    python bench/bench_served_store.py [--repeat 5] [--server-repeat 1]
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
PY = sys.executable
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))

CHILD = r"""
import json, os, sys, time
sys.path.insert(0, sys.argv[1])
work = sys.argv[2]
def rss():
    with open("/proc/self/status") as fh:
        return next(int(l.split()[1]) for l in fh if l.startswith("VmRSS:")) / 1024
for heavy in ("pandas", "numpy"):  # as the tracking worker does
    sys.modules.setdefault(heavy, None)
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
t0 = time.perf_counter()
import mlflow.tracking
from mlflow.tracking import MlflowClient
from pathlib import Path
uri = "sqlite:///" + work + "/mlflow.db"
client = MlflowClient(uri)
exp = client.get_experiment_by_name("bench")
eid = exp.experiment_id if exp else client.create_experiment("bench", (Path(work) / "mlruns" / "bench").as_uri())
run = client.create_run(eid)
t1 = time.perf_counter()
before = rss()
from mlops_kit.run import served_store
served = served_store.start(uri, log_path=Path(work) / "served.log")
t2 = time.perf_counter()
after = rss()
import urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
body = json.dumps({"run_id": run.info.run_id, "key": "m", "value": 1.0, "timestamp": 0}).encode()
req = urllib.request.Request(served.url + "/api/2.0/mlflow/runs/log-metric", data=body,
                             headers={"Content-Type": "application/json"})
t3 = time.perf_counter()
opener.open(req).read()
t4 = time.perf_counter()
served.stop()
t5 = time.perf_counter()
print(json.dumps({"client_open_s": t1 - t0, "start_s": t2 - t1, "first_request_s": t4 - t3, "stop_s": t5 - t4,
                  "rss_before_mb": before, "rss_added_mb": after - before}))
"""


def tree_rss_mb(pid: int) -> float:
    """RSS of a process and all its descendants (Linux)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as fh:
                total += next(int(line.split()[1]) for line in fh if line.startswith("VmRSS:")) / 1024
            with open(f"/proc/{p}/task/{p}/children") as fh:
                todo += [int(c) for c in fh.read().split()]
        except (OSError, StopIteration):
            continue
    return total


def served_once(work: Path) -> dict[str, float]:
    done = subprocess.run([PY, "-c", CHILD, str(REPO / "scripts"), str(work)], capture_output=True, text=True,
                          timeout=300)
    if done.returncode:
        sys.exit(f"served_store child failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def server_once(work: Path) -> dict[str, float]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_DISABLE_TELEMETRY="true")
    start = time.perf_counter()
    with open(work / "server.log", "wb") as log:
        proc = subprocess.Popen([PY, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{work}/mlflow.db",
                                 "--host", "127.0.0.1", "--port", str(port), "--workers", "1"], stdout=log,
                                stderr=subprocess.STDOUT, env=env, cwd=work, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                sys.exit(f"mlflow server exited:\n{(work / 'server.log').read_text()[-3000:]}")
            try:
                with _DIRECT.open(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                time.sleep(0.1)
        elapsed = time.perf_counter() - start
        return {"start_s": elapsed, "rss_tree_mb": tree_rss_mb(proc.pid)}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {k: round(statistics.median(r[k] for r in rows), 3) for k in rows[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--server-repeat", type=int, default=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-served-"))
    try:
        served_once(work)  # warm-up: creates/migrates mlflow.db, fills OS caches
        rows = [served_once(work) for _ in range(args.repeat)]
        print("served_store (in-process, werkzeug thread):", json.dumps(medians(rows)))
        print("  raw start_s:", [round(r["start_s"], 3) for r in rows])
        srv = [server_once(work) for _ in range(args.server_repeat)]
        print("mlflow server --workers 1 (subprocess):", json.dumps(medians(srv)))
        print("  raw start_s:", [round(r["start_s"], 3) for r in srv])
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
