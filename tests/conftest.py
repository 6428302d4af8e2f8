"""Shared test fixtures: isolation from the real home/caches, real Pythons from pyenv, a real MLflow server.

Every test runs with HOME/USERPROFILE, Jupyter's and IPython's folders pointed into its own tmp dir, and no
MLflow/GoCD variables inherited from the shell, so nothing here can touch a developer's real kernels or runs.
The uv cache is shared by the whole session (``.cache/uv`` in the repo, git-ignored) to keep real installs fast.
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

pytest_plugins = ("helpers_notebook",)  # its stage-venv fixtures serve several test modules

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = REPO_ROOT / "scripts"
TOOLKIT_PYTHON = Path(sys.executable)
REAL_PYENV_ROOT = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv")
UV_CACHE = Path(os.environ.get("UV_CACHE_DIR") or REPO_ROOT / ".cache" / "uv")
_DROPPED_PREFIXES = ("MLFLOW_", "GO_", "JUPYTER_", "PIP_INDEX", "PIP_EXTRA", "UV_INDEX", "UV_EXTRA", "ML_VENV_ROOT")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point every per-user location at a private tmp dir; drop inherited MLflow/GoCD/Jupyter variables."""
    home = tmp_path_factory.mktemp("home")
    for name in list(os.environ):
        if name.startswith(_DROPPED_PREFIXES):
            monkeypatch.delenv(name)
    for var in ("HOME", "USERPROFILE", "APPDATA", "LOCALAPPDATA"):
        monkeypatch.setenv(var, str(home))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local" / "share"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / ".cache"))
    monkeypatch.setenv("JUPYTER_DATA_DIR", str(home / "jupyter-data"))
    monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(home / "jupyter-config"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(home / "jupyter-runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(home / "ipython"))
    monkeypatch.setenv("MPLCONFIGDIR", str(home / "matplotlib"))
    monkeypatch.setenv("PYENV_ROOT", str(REAL_PYENV_ROOT))
    monkeypatch.setenv("UV_CACHE_DIR", str(UV_CACHE))
    monkeypatch.setenv("PYTHONUTF8", "1")
    return home


def pyenv_pythons() -> dict[str, Path]:
    """``{"3.10": path, ...}``: the newest real CPython per minor (3.8+) installed with pyenv on this machine."""
    found: dict[str, tuple[tuple[int, ...], Path]] = {}
    for exe in sorted((REAL_PYENV_ROOT / "versions").glob("*/bin/python")):
        parts = exe.parent.parent.name.split(".")
        if len(parts) != 3 or not all(p.isdigit() for p in parts) or (int(parts[0]), int(parts[1])) < (3, 8):
            continue
        key = f"{parts[0]}.{parts[1]}"
        version = tuple(int(p) for p in parts)
        if key not in found or version > found[key][0]:
            found[key] = (version, exe)
    return {k: v[1] for k, v in sorted(found.items(), key=lambda kv: kv[1][0])}


@pytest.fixture(scope="session")
def pythons() -> dict[str, Path]:
    """Real interpreters for multi-version tests; at least two different minors are required (not skipped)."""
    found = pyenv_pythons()
    assert len(found) >= 2, f"need at least two pyenv Pythons under {REAL_PYENV_ROOT}, found {list(found)}"
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, server: subprocess.Popen, log: Path, timeout: float = 120) -> None:
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
def start_mlflow_server(root: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend, proxied artifacts, free port), health-checked;
    yields ``(uri, process)`` and stops it on exit (a test may also stop it earlier)."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = root / "server.log"
    cmd = [str(TOOLKIT_PYTHON), "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
           "--workers", "1"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    with open(log, "wb") as out:
        server = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=root,
                                  start_new_session=True)
    try:
        _wait_healthy(url, server, log)
        yield url, server
    finally:
        _stop(server)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's MLflow server; yields its URI. Tests use experiments of their own on it."""
    with start_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as (url, _):
        yield url


def _stop(server: subprocess.Popen) -> None:
    try:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGKILL)


@pytest.fixture()
def fresh_interpreter_cache() -> Iterator[None]:
    """Interpreter discovery caches per process: tests that change PATH/pyenv layouts start and end clean."""
    from mlops_kit import interpreters

    interpreters.clear_cache()
    yield
    interpreters.clear_cache()


def run_script(name: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
               timeout: float = 900) -> subprocess.CompletedProcess[str]:
    """Run ``scripts/<name>`` with the toolkit's interpreter, as a user would; output captured as text."""
    return subprocess.run([str(TOOLKIT_PYTHON), str(SCRIPTS / name), *args], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=timeout)


@pytest.fixture()
def git_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH with no git on it (but the toolkit's interpreter still reachable)."""
    bindir = tmp_path / "nogit-bin"
    bindir.mkdir()
    for tool in ("python", "python3"):
        (bindir / tool).symlink_to(TOOLKIT_PYTHON)
    monkeypatch.setenv("PATH", str(bindir))
    assert shutil.which("git", path=str(bindir)) is None
