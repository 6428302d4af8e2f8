"""Shared test fixtures: isolation from the real home/caches, real Pythons from pyenv, a real MLflow server.

Every test runs with HOME/USERPROFILE, Jupyter's and IPython's folders pointed into its own tmp dir, and no
MLflow/GoCD variables inherited from the shell, so nothing here can touch a developer's real kernels or runs.
The uv cache is shared by the whole session (``.cache/uv`` in the repo, git-ignored) to keep real installs fast.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from helpers import REAL_PYENV_ROOT, TOOLKIT_PYTHON, UV_CACHE, pyenv_pythons, start_mlflow_server

pytest_plugins = ("helpers_notebook", "helpers_locks", "helpers_managed", "helpers_team_server")  # shared fixtures

_DROPPED_PREFIXES = ("MLFLOW_", "GO_", "JUPYTER_", "PIP_INDEX", "PIP_EXTRA", "UV_INDEX", "UV_EXTRA", "ML_VENV_ROOT",
                     "UV_PYTHON", "UV_MANAGED_PYTHON", "UV_NO_MANAGED_PYTHON", "MLOPS_PYTHON_DOWNLOADS",
                     "AWS_", "PGPASS")  # a developer's own cloud and database credentials stay out


@pytest.fixture(scope="session")
def no_python_downloads(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An empty uv downloads list: a test that misses a Python never reaches the internet (uv finds no build)."""
    listing = tmp_path_factory.mktemp("no-downloads") / "downloads.json"
    listing.write_text("{}\n", encoding="utf-8")
    return str(listing)


@pytest.fixture(autouse=True)
def isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
                  no_python_downloads: str) -> Path:
    """Point every per-user location at a private tmp dir; drop inherited MLflow/GoCD/Jupyter/uv-Python variables;
    uv's Python downloads list is an empty one (tests that download use the fake host of helpers_managed)."""
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
    monkeypatch.setenv("UV_PYTHON_DOWNLOADS_JSON_URL", no_python_downloads)
    monkeypatch.setenv("PYTHONUTF8", "1")
    return home


@pytest.fixture(scope="session")
def pythons() -> dict[str, Path]:
    """Real interpreters for multi-version tests; at least two different minors are required (not skipped)."""
    found = pyenv_pythons()
    assert len(found) >= 2, f"need at least two pyenv Pythons under {REAL_PYENV_ROOT}, found {list(found)}"
    return found


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The session's MLflow server; yields its URI. Tests use experiments of their own on it."""
    with start_mlflow_server(tmp_path_factory.mktemp("mlflow-server")) as (url, _):
        yield url


@pytest.fixture()
def fresh_interpreter_cache() -> Iterator[None]:
    """Interpreter discovery caches per process: tests that change PATH/pyenv layouts start and end clean."""
    from mlops_kit.envs import interpreters

    interpreters.clear_cache()
    yield
    interpreters.clear_cache()


@pytest.fixture()
def git_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH with no git on it: only the toolkit interpreter's own folder (``.venv/bin`` or ``.venv\\Scripts``)."""
    folder = str(TOOLKIT_PYTHON.parent)
    monkeypatch.setenv("PATH", folder)
    assert shutil.which("git", path=folder) is None