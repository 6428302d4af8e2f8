"""Benchmark: N rehearsals of the example pipeline at once (N agents, each in its own working folder) against a team
server on PostgreSQL + S3 and against the same server on SQLite, side by side in one run.

Servers (``mlflow server --workers 2``, started here on 127.0.0.1 by tests/helpers_team_server.py's functions):

* ``postgresql+s3``: a throwaway PostgreSQL cluster, moto's S3 server (in this process), artifacts proxied to S3,
  the README's pool setting (NullPool);
* ``postgresql+s3 default pool`` (``--default-pool``): the same with MLflow's default pool (5 + 10 per worker);
* ``sqlite``: a SQLite file with a local artifact folder.

For each server and N (default 1, 4, 8): wall time until the N rehearsals all ended, stage runs per minute, and
the CPU the server used meanwhile (its processes and the children they reaped; PostgreSQL's postmaster and its
backends; moto's thread in this process) as a share of all the CPU the machine used. Goal: 8 at once take at most
5x the wall time of one (two cores run eight CPU-bound pipelines in about 4x at best, so the server must add
little). The stage venvs are built (or found) first and not timed.

Usage (toolkit venv, test requirements installed):
    python bench/bench_team_server.py [--counts 1,4,8] [--venv-root DIR] [--default-pool] [--only postgresql+s3]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "scripts"), str(REPO / "tests")]

import psutil  # noqa: E402

from helpers_team_server import (  # noqa: E402
    Postgres,
    TeamServer,
    agent_folders,
    rehearse_at_once,
    start_postgres,
    start_s3,
    start_sqlite_server,
    start_team_server,
)

STAGES = 3


@dataclass
class Result:
    server: str
    count: int
    seconds: float
    server_cpu: float
    machine_cpu: float


def tree_cpu(pid: int) -> float:
    """CPU seconds of a process, its live descendants and the children they already reaped."""
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    return total


def thread_cpu(native_id: int | None) -> float:
    for thread in psutil.Process().threads():
        if thread.id == native_id:
            return thread.user_time + thread.system_time
    return 0.0


def machine_cpu() -> float:
    t = psutil.cpu_times()
    return t.user + t.system + getattr(t, "nice", 0.0) + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)


def load_average() -> float:
    """The last minute's load average (POSIX; 0 elsewhere): how busy the machine was besides the bench."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0


def postmaster_pid(pg: Postgres) -> int:
    return int((pg.root / "data" / "postmaster.pid").read_text().split()[0])


def moto_thread() -> int | None:
    """moto's server thread (ThreadedMotoServer runs ``_server_entry`` in this process)."""
    for thread in threading.enumerate():
        if "_server_entry" in repr(getattr(thread, "_target", "")):
            return thread.native_id
    return None


def measure(name: str, server: TeamServer, server_pids: Callable[[], list[int]], folders: list[Path],
            venv_root: Path) -> Result:
    """``len(folders)`` rehearsals at once against ``server``: wall time and the server's CPU meanwhile."""
    def server_cpu() -> float:
        return sum(tree_cpu(pid) for pid in server_pids()) + thread_cpu(moto_thread())

    cpu0, machine0, begin = server_cpu(), machine_cpu(), time.perf_counter()
    done = rehearse_at_once(folders, "--tracking-uri", server.url, "--venv-root", str(venv_root),
                            "--env", f"MLFLOW_EXPERIMENT_NAME=bench-{len(folders)}", "--keep", "1", env=os.environ)
    seconds = time.perf_counter() - begin
    failed = [r for r in done if r.code != 0]
    if failed:
        raise SystemExit(f"{name}, {len(folders)} at once: a rehearsal failed ({failed[0].code}):\n"
                         f"{failed[0].output[-3000:]}")
    result = Result(name, len(folders), seconds, server_cpu() - cpu0, machine_cpu() - machine0)
    print(f"  {name:28} {len(folders)} at once: {seconds:6.1f} s, server CPU {result.server_cpu:.1f} s "
          f"({100 * result.server_cpu / max(result.machine_cpu, 1e-9):.1f} % of the machine's), load average "
          f"{load_average():.1f}", flush=True)
    return result


@contextlib.contextmanager
def servers(work: Path, only: str | None, default_pool: bool) -> Iterator[list[tuple[str, TeamServer, Any]]]:
    """The servers to compare, each with a function naming its processes (server, database)."""
    with contextlib.ExitStack() as stack:
        found: list[tuple[str, TeamServer, Any]] = []
        wanted = ["postgresql+s3", *(["postgresql+s3 default pool"] if default_pool else []), "sqlite"]
        if only:
            wanted = [w for w in wanted if w == only]
        if any(w.startswith("postgresql") for w in wanted):
            pg = stack.enter_context(start_postgres())
            s3 = stack.enter_context(start_s3())
            print(f"a new PostgreSQL connection (TCP + scram-sha-256 + backend start), what NullPool pays per "
                  f"request: {connect_ms(pg):.1f} ms (median of 50)", flush=True)
            for name in (w for w in wanted if w.startswith("postgresql")):
                database = "mlflow" if name == "postgresql+s3" else "mlflow_default_pool"
                server = stack.enter_context(start_team_server(work / database, pg, s3, database=database,
                                                               pool={} if "default" in name else
                                                               {"MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool"}))
                found.append((name, server, lambda server=server, pg=pg: [server.process.pid, postmaster_pid(pg)]))
        if "sqlite" in wanted:
            server = stack.enter_context(start_sqlite_server(work / "sqlite"))
            found.append(("sqlite", server, lambda server=server: [server.process.pid]))
        yield found


def connect_ms(pg: Postgres) -> float:
    import statistics

    times = []
    for _ in range(50):
        begin = time.perf_counter()
        pg.connect("postgres").close()
        times.append((time.perf_counter() - begin) * 1000)
    return statistics.median(times)


def warm_venvs(folder: Path, venv_root: Path) -> None:
    """One untimed rehearsal on a local store: builds (or finds) the stage venvs."""
    print(f"stage venvs in {venv_root} (one untimed rehearsal)...", flush=True)
    (done,) = rehearse_at_once([folder], "--venv-root", str(venv_root), "--keep", "1", env=os.environ)
    if done.code != 0:
        raise SystemExit(f"warm-up rehearsal failed ({done.code}):\n{done.output[-3000:]}")


def report(results: list[Result]) -> None:
    print("\nserver                        N   wall s   x one  stage runs/min  server CPU s (share of machine's)")
    goal_lines = []
    for name in dict.fromkeys(r.server for r in results):
        mine = sorted((r for r in results if r.server == name), key=lambda r: r.count)
        one = next((r.seconds for r in mine if r.count == 1), None)
        for r in mine:
            ratio = f"{r.seconds / one:5.2f}" if one else "    -"
            share = 100 * r.server_cpu / r.machine_cpu if r.machine_cpu else 0.0
            print(f"{name:28} {r.count:3} {r.seconds:8.1f} {ratio:>7} {r.count * STAGES * 60 / r.seconds:15.1f}"
                  f"  {r.server_cpu:8.1f} ({share:4.1f} %)")
        eight = next((r.seconds for r in mine if r.count == 8), None)
        if one and eight:
            goal_lines.append(f"{name}: 8 at once = {eight / one:.2f}x one (goal <= 5x): "
                              f"{'OK' if eight / one <= 5 else 'SLOWER'}")
    print("\n" + "\n".join(goal_lines))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--counts", default="1,4,8", help="rehearsals at once, comma-separated (default 1,4,8)")
    ap.add_argument("--venv-root", type=Path, help="stage venvs (default: a temporary folder, built first)")
    ap.add_argument("--default-pool", action="store_true", help="also PostgreSQL with MLflow's default pool")
    ap.add_argument("--only", help="one server: postgresql+s3, 'postgresql+s3 default pool' or sqlite")
    args = ap.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    os.environ.setdefault("UV_CACHE_DIR", str(REPO / ".cache" / "uv"))
    for name in [n for n in os.environ if n.startswith(("MLFLOW_", "AWS_", "PGPASS"))]:
        del os.environ[name]
    os.environ["MLOPS_REUSE"] = "never"  # N pipelines that execute (one server, same experiment: they would reuse)
    with tempfile.TemporaryDirectory(prefix="bench-team-") as tmp:
        work = Path(tmp)
        folders = agent_folders(work / "agents", max(counts))
        venv_root = args.venv_root or work / "venvs"
        warm_venvs(folders[0], venv_root)
        results: list[Result] = []
        with servers(work / "servers", args.only, args.default_pool) as started:
            for count in counts:  # each count on every server in turn: side by side, under the same noise
                results += [measure(name, server, pids, folders[:count], venv_root) for name, server, pids in started]
        report(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
