"""Shared pieces for the notebook-run tests: real stage venvs built by create_venv.py, test notebooks, a private
MLflow server that a test may stop.

The venvs are built once per session under one folder; a second request (from another test module) is a cache
hit in create_venv.py itself, so it costs a health check, not an install.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from helpers import REPO_ROOT, UV_CACHE, run_script, start_mlflow_server

NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
_SPEC = """\
stage: {stage}
python_version: "{minor}"
venv_name: {venv_name}
packages:
{packages}
kernel_display_name: "{stage} (py{minor})"
"""


def _session_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GO_", "JUPYTER_", "ML_VENV_ROOT"))}
    env.update(HOME=str(home), USERPROFILE=str(home), LOCALAPPDATA=str(home), APPDATA=str(home),
               XDG_DATA_HOME=str(home / "share"), UV_CACHE_DIR=str(UV_CACHE), PYTHONUTF8="1",
               JUPYTER_DATA_DIR=str(home / "jupyter"))
    return env


def build_venv(root: Path, *, stage: str, minor: str, packages: list[str]) -> Path:
    """A real stage venv, built by ``scripts/create_venv.py`` (no kernel registered anywhere)."""
    root.mkdir(parents=True, exist_ok=True)
    spec = root / f"{stage}.yaml"
    venv_name = f"nb_{stage}_py{minor.replace('.', '')}"
    spec.write_text(_SPEC.format(stage=stage, minor=minor, venv_name=venv_name,
                                 packages="".join(f"  - {p}\n" for p in packages)), encoding="utf-8")
    done = run_script("create_venv.py", "--spec", str(spec), "--venv-root", str(root), "--kernel-scope", "none",
                      "--quiet", env=_session_env(root / "home"))
    assert done.returncode == 0, done.stderr[-3000:]
    venv = Path(done.stdout.strip().splitlines()[-1])
    assert (venv / "audit" / "env.json").is_file()
    return venv


@pytest.fixture(scope="session")
def example_venv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venv root of every rehearsal of the example pipeline in the session: the first builds its three stage
    venvs (and a replay its replay venvs under ``replay``), every later one reuses them."""
    return tmp_path_factory.mktemp("ml venvs")  # a space, as in "C:\\ML venvs"


@pytest.fixture(scope="session")
def venv_mlflow_s3(tmp_path_factory: pytest.TempPathFactory, pythons: dict[str, Path]) -> Path:
    """Python 3.12 stage venv with mlflow-skinny and boto3: a notebook logging its own artifacts straight to S3 (a
    server in direct mode hands out ``s3://`` artifact locations)."""
    assert "3.12" in pythons
    return build_venv(tmp_path_factory.getbasetemp() / "nb-venvs", stage="s3direct", minor="3.12",
                      packages=["mlflow-skinny", "boto3"])


@pytest.fixture(scope="session")
def venv_mlflow(tmp_path_factory: pytest.TempPathFactory, pythons: dict[str, Path]) -> Path:
    """Python 3.12 stage venv with mlflow-skinny and the scikit-learn flavour's needs (pandas; skops for 3.x's
    default model format): a notebook logs metrics and a model itself, a small venv's way (no SQLite in skinny)."""
    assert "3.12" in pythons
    return build_venv(tmp_path_factory.getbasetemp() / "nb-venvs", stage="train", minor="3.12",
                      packages=["mlflow-skinny", "scikit-learn", "pandas", "skops"])


@pytest.fixture(scope="session")
def venv_mlflow2(tmp_path_factory: pytest.TempPathFactory, pythons: dict[str, Path]) -> Path:
    """Python 3.10 stage venv with an older major mlflow (its full package brings scikit-learn and matplotlib)."""
    assert "3.10" in pythons
    return build_venv(tmp_path_factory.getbasetemp() / "nb-venvs", stage="report", minor="3.10",
                      packages=["mlflow==2.17.2"])


@pytest.fixture(scope="session")
def venv_mlflow129(tmp_path_factory: pytest.TempPathFactory, pythons: dict[str, Path]) -> Path:
    """The seed's ingest case: Python 3.8 with mlflow==1.29.0 (no scikit-learn)."""
    assert "3.8" in pythons
    return build_venv(tmp_path_factory.getbasetemp() / "nb-venvs", stage="score", minor="3.8",
                      packages=["mlflow==1.29.0"])


@pytest.fixture(scope="session")
def venv_small(tmp_path_factory: pytest.TempPathFactory, pythons: dict[str, Path]) -> Path:
    """Python 3.10 stage venv with one tiny package (a different Python than the toolkit's and the other venv)."""
    assert "3.10" in pythons
    return build_venv(tmp_path_factory.getbasetemp() / "nb-venvs", stage="ingest", minor="3.10", packages=["six"])


def run_nb(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``python scripts/run_notebook.py ...`` as a user or a GoCD job runs it."""
    return run_script("run_notebook.py", *args, env=env, cwd=cwd, timeout=timeout)


def env_with(**extra: str) -> dict[str, str]:
    """The (already isolated) test environment plus ``extra``."""
    return {**os.environ, **extra}


def one_error_line(stderr: str) -> str:
    """The single ``error:`` line a failure prints (no traceback)."""
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, stderr
    return errors[0]


private_mlflow_server = start_mlflow_server  # a server only one test uses (so it may stop it)


__all__ = ["NOTEBOOKS", "REPO_ROOT", "build_venv", "env_with", "example_venv_root", "one_error_line",
           "private_mlflow_server", "run_nb", "venv_mlflow", "venv_mlflow2", "venv_mlflow129", "venv_mlflow_s3",
           "venv_small"]
