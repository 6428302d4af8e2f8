"""Helpers shared by the test modules (imported as ``from helpers import ...``; fixtures live in conftest):
the repository's paths, the toolkit's Python, real pyenv interpreters, a real MLflow server, running a script.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Iterator

import pytest

from mlops_kit.envs.spec import StageSpec, parse_spec
from mlops_kit.run.runrecord import RunRecord

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "scripts"
TOOLKIT_PYTHON = Path(sys.executable)
WINDOWS = os.name == "nt"
REAL_PYENV_ROOT = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv" / ("pyenv-win" if WINDOWS else ""))
UV_CACHE = Path(os.environ.get("UV_CACHE_DIR") or REPO_ROOT / ".cache" / "uv")
# Popen keywords starting a process in a group of its own, so the whole group can be signalled or killed.
NEW_PROCESS_GROUP: dict = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP} if WINDOWS  # type: ignore[attr-defined]
                           else {"start_new_session": True})
# Tests that need POSIX as such (each with its reason), skipped on Windows; everything else runs on both.
POSIX_SIGNALS = pytest.mark.skipif(WINDOWS, reason="sends SIGINT/SIGTERM to a process group: Windows has no SIGTERM "
                                   "(GoCD's Windows agent kills the job tree, covered by the kill -9 tests) and "
                                   "delivers Ctrl-C per console")
POSIX_FAKES = pytest.mark.skipif(WINDOWS, reason="the stand-ins for Windows-only programs (py launcher, pyenv-win, "
                                 "winget, pymanager, choco) are POSIX shell scripts and symlinks; on Windows the real "
                                 "programs exist and are not faked")
POSIX_SYMLINKS = pytest.mark.skipif(WINDOWS, reason="replaces a venv interpreter by a dangling symlink (symlinks need "
                                    "extra rights on Windows)")


def pyenv_pythons() -> dict[str, Path]:
    """``{"3.10": path, ...}``: the newest real CPython per minor (3.8+) installed with pyenv (Linux/macOS:
    ``versions/<v>/bin/python``) or pyenv-win (Windows: ``versions\\<v>\\python.exe``) on this machine."""
    found: dict[str, tuple[tuple[int, ...], Path]] = {}
    pattern = "*/python.exe" if WINDOWS else "*/bin/python"
    for exe in sorted((REAL_PYENV_ROOT / "versions").glob(pattern)):
        folder = exe.parent if WINDOWS else exe.parent.parent
        parts = folder.name.split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts) or (int(parts[0]), int(parts[1])) < (3, 8):
            continue
        key = f"{parts[0]}.{parts[1]}"
        version = tuple(int(p) for p in parts)
        if key not in found or version > found[key][0]:
            found[key] = (version, exe)
    return {k: v[1] for k, v in sorted(found.items(), key=lambda kv: kv[1][0])}


def default_ctrl_c() -> None:
    """A child's preexec_fn: Ctrl-C as a terminal gives it. A suite started in the background of a
    non-interactive shell has SIGINT ignored, which every child inherits (Python then installs no
    KeyboardInterrupt handler)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"mlflow server exited early:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"mlflow server not healthy after {timeout}s:\n{log.read_text(errors='replace')[-3000:]}")


@contextlib.contextmanager
def start_mlflow_server(root: Path, port: int | None = None) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend, proxied artifacts, a free port unless ``port``: the
    same server started again on its store), health-checked; yields ``(uri, process)`` and stops it on exit (a test
    may also stop it earlier)."""
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    cmd = [str(TOOLKIT_PYTHON), "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    # no MLflow settings of the test's; no coverage either: the server runs none of the toolkit's code
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "COVERAGE_"))}
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"  # MLflow 3's job runner: ~8 processes, ~2 GB, unused here
    with open(log, "wb") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
                                  **NEW_PROCESS_GROUP)
    try:
        wait_healthy(url, server, log)
        yield url, server
    finally:
        stop_process_group(server)


def stop_process_group(process: subprocess.Popen) -> None:
    """Stop a process started with :data:`NEW_PROCESS_GROUP` and everything it started: politely, then for sure."""
    if WINDOWS:
        kill_tree(process.pid)
        process.wait(timeout=20)
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        kill_tree(process.pid)


def kill_tree(pid: int) -> None:
    """What ``kill -9`` of a whole job does: the process group on POSIX, ``taskkill /T /F`` (the process and its
    children) on Windows. Nothing can catch it."""
    if WINDOWS:
        subprocess.run(["taskkill", "/T", "/F", "/PID", str(pid)], capture_output=True, check=False)
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def failing_program(path: Path) -> Path:
    """A program that exits 1 without printing (a POSIX shell script, a batch file on Windows)."""
    if WINDOWS:
        path = path.with_suffix(".cmd")
        path.write_text("@exit /b 1\r\n", encoding="ascii")
        return path
    path.write_text("#!/bin/sh\nexit 1\n", encoding="ascii")
    path.chmod(0o755)
    return path


def copy_repo(target: Path) -> None:
    """The repository's files as a plain folder (no .git), as an agent's working copy: also exercises the
    runner's non-git copy."""
    names = subprocess.run(["git", "-C", str(REPO_ROOT), "ls-files", "-z", "--cached", "--others",
                            "--exclude-standard"], capture_output=True, text=True, check=True).stdout.split("\0")
    for name in filter(None, names):
        if (REPO_ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO_ROOT / name, target / name)


def run_script(name: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
               timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<name>`` with the toolkit's interpreter, as a user would; output captured as text."""
    return subprocess.run([str(TOOLKIT_PYTHON), str(SCRIPTS / name), *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


def kernel_registered(name: str) -> bool:
    """True when any Jupyter path (user, sys-prefix, system, JUPYTER_PATH) has a kernelspec called ``name``."""
    from jupyter_client.kernelspec import KernelSpecManager

    return name in KernelSpecManager().find_kernel_specs()


def make_spec(folder: Path, *, packages: tuple[str, ...] = ("six",), python: str = "3.12", name: str = "stage-venv",
              display: str = "Stage (test)", extra: str = "") -> StageSpec:
    """Write ``folder/spec.yaml`` and return the parsed spec."""
    text = (f"stage: demo\npython_version: \"{python}\"\nvenv_name: {name}\n"
            f"packages:\n" + "".join(f"  - \"{p}\"\n" for p in packages)
            + f"kernel_display_name: \"{display}\"\n" + extra)
    path = folder / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    return parse_spec(text, source=path)


def run_record(uri: str, **kw: object) -> RunRecord:
    """A run record with the few fields every tracking test needs; ``kw`` overrides any field."""
    base = dict(tracking_uri=uri, experiment="unit tracking", run_name="train",
                params={"stage": "train", "alpha": "0.5"}, tags={"mlflow.runName": "train", "mlops_kit.role": "stage"})
    base.update(kw)
    return RunRecord(**base)  # type: ignore[arg-type]
