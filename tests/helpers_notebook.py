"""Shared pieces for the notebook-run tests: real stage venvs built by create_venv.py, test notebooks, a private
MLflow server that a test may stop.

The venvs are built once per session under one folder. The ones the selected tests use start building side by side
in the background when the session starts (their installs overlap the tests that run before them); each fixture
waits for its own. A second request (from another test module) is a cache hit in create_venv.py itself.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import (
    NEW_PROCESS_GROUP,
    REPO_ROOT,
    SCRIPTS,
    TOOLKIT_PYTHON,
    UV_CACHE,
    pyenv_pythons,
    run_script,
    start_mlflow_server,
    stop_process_group,
)

NOTEBOOKS = Path(__file__).resolve().parent / "notebooks"
_SPEC = """\
stage: {stage}
python_version: "{minor}"
venv_name: {venv_name}
packages:
{packages}
kernel_display_name: "{stage} (py{minor})"
"""


@dataclass(frozen=True)
class StageVenv:
    """A stage venv the tests share: its stage name, Python minor and packages."""

    stage: str
    minor: str
    packages: tuple[str, ...]


# fixture name -> the venv it returns (each a fixture below)
STAGE_VENVS = {
    "venv_small": StageVenv("ingest", "3.10", ("six",)),
    "venv_mlflow": StageVenv("train", "3.12", ("mlflow-skinny", "scikit-learn", "pandas", "skops")),
    "venv_mlflow2": StageVenv("report", "3.10", ("mlflow==2.17.2",)),
    "venv_mlflow129": StageVenv("score", "3.8", ("mlflow==1.29.0",)),
    "venv_mlflow_s3": StageVenv("s3direct", "3.12", ("mlflow-skinny", "boto3")),
}


def _session_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "GO_", "JUPYTER_", "ML_VENV_ROOT"))}
    env.update(HOME=str(home), USERPROFILE=str(home), LOCALAPPDATA=str(home), APPDATA=str(home),
               XDG_DATA_HOME=str(home / "share"), UV_CACHE_DIR=str(UV_CACHE), PYTHONUTF8="1",
               JUPYTER_DATA_DIR=str(home / "jupyter"))
    return env


def _write_spec(root: Path, *, stage: str, minor: str, packages: Iterable[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    spec = root / f"{stage}.yaml"
    spec.write_text(_SPEC.format(stage=stage, minor=minor, venv_name=f"nb_{stage}_py{minor.replace('.', '')}",
                                 packages="".join(f"  - {p}\n" for p in packages)), encoding="utf-8")
    return spec


def _create_venv_args(spec: Path, root: Path) -> list[str]:
    return ["--spec", str(spec), "--venv-root", str(root), "--kernel-scope", "none", "--quiet"]


def _built(returncode: int, stdout: str, stderr: str) -> Path:
    assert returncode == 0, stderr[-3000:]
    venv = Path(stdout.strip().splitlines()[-1])
    assert (venv / "audit" / "env.json").is_file()
    return venv


def build_venv(root: Path, *, stage: str, minor: str, packages: list[str]) -> Path:
    """A real stage venv, built by ``scripts/create_venv.py`` (no kernel registered anywhere)."""
    spec = _write_spec(root, stage=stage, minor=minor, packages=packages)
    done = run_script("create_venv.py", *_create_venv_args(spec, root), env=_session_env(root / "home"))
    return _built(done.returncode, done.stdout, done.stderr)


class _Background:
    """``create_venv.py`` for one stage venv, started now and waited for later (its output goes to log files, so a
    long one never blocks on a full pipe)."""

    def __init__(self, spec: Path, root: Path, logs: Path) -> None:
        logs.mkdir(parents=True, exist_ok=True)
        self.out, self.err = logs / f"{spec.stem}.out.log", logs / f"{spec.stem}.err.log"
        with open(self.out, "wb") as out, open(self.err, "wb") as err:
            self.process = subprocess.Popen([str(TOOLKIT_PYTHON), str(SCRIPTS / "create_venv.py"),
                                             *_create_venv_args(spec, root)], stdout=out, stderr=err,
                                            stdin=subprocess.DEVNULL, env=_session_env(root / "home"),
                                            **NEW_PROCESS_GROUP)

    @classmethod
    def of(cls, root: Path, venv: StageVenv) -> _Background:
        return cls(_write_spec(root, stage=venv.stage, minor=venv.minor, packages=venv.packages), root, root)

    def venv(self) -> Path:
        code = self.process.wait(timeout=900)
        return _built(code, *(p.read_text(encoding="utf-8", errors="replace") for p in (self.out, self.err)))


EXAMPLE_SPECS = ("ingest", "features", "train")  # specs/<name>.yaml: the example pipeline's stages


def _example_venv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "ml venvs"  # a space, as in "C:\\ML venvs"


def _venv_fixtures_used(items: Iterable[pytest.Item]) -> set[str]:
    """The stage-venv fixtures the selected tests need, directly or through other fixtures (a parametrized test may
    also name one as a parameter value and get it with ``request.getfixturevalue``)."""
    wanted: set[str] = set()
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        if callspec is not None:
            names |= {value for value in callspec.params.values() if isinstance(value, str)}
        wanted |= names & (STAGE_VENVS.keys() | {"example_venv_root"})
    return wanted


@pytest.fixture(scope="session", autouse=True)
def stage_venv_builds(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[dict[str, _Background]]:
    """Starts the builds of the stage venvs the session's tests use, side by side, as the session starts: the
    ``STAGE_VENVS`` and, for the tests rehearsing the example pipeline, its three stage venvs in the session's
    example venv root (the first rehearsal's setup tasks then reuse them)."""
    root, found, used = tmp_path_factory.getbasetemp() / "nb-venvs", pyenv_pythons(), _venv_fixtures_used(
        request.session.items)
    builds = {name: _Background.of(root, STAGE_VENVS[name]) for name in sorted(used - {"example_venv_root"})
              if STAGE_VENVS[name].minor in found}  # a missing Python fails in the fixture, with its message
    if "example_venv_root" in used:
        example = _example_venv_root(tmp_path_factory)
        builds |= {f"example:{name}": _Background(REPO_ROOT / "specs" / f"{name}.yaml", example,
                                                  tmp_path_factory.getbasetemp() / "example-builds")
                   for name in EXAMPLE_SPECS}
    yield builds
    for build in builds.values():  # an interrupted session: no build left running
        if build.process.poll() is None:
            stop_process_group(build.process)


def _stage_venv(name: str, builds: dict[str, _Background], pythons: dict[str, Path],
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = STAGE_VENVS[name]
    assert venv.minor in pythons, f"{name} needs Python {venv.minor} (pyenv install {venv.minor})"
    build = builds.get(name) or _Background.of(tmp_path_factory.getbasetemp() / "nb-venvs", venv)
    return build.venv()


@pytest.fixture(scope="session")
def example_venv_root(stage_venv_builds: dict[str, _Background], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venv root of every rehearsal of the example pipeline in the session, its three stage venvs built in the
    background as the session started (waited for here, whatever the outcome: a rehearsal's setup task builds
    what is missing and says why; a replay puts its venvs under ``replay``)."""
    for name in EXAMPLE_SPECS:
        build = stage_venv_builds.get(f"example:{name}")
        if build is not None:
            build.process.wait(timeout=900)
    root = _example_venv_root(tmp_path_factory)
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session")
def replay_venv_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The venv root of the session's replays of runs made with the shared stage venvs: a replay venv built from one
    record is reused by every later replay of a run with the same environment."""
    return tmp_path_factory.mktemp("replay venvs")


@pytest.fixture(scope="session")
def venv_mlflow_s3(stage_venv_builds: dict[str, _Background], pythons: dict[str, Path],
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python 3.12 stage venv with mlflow-skinny and boto3: a notebook logging its own artifacts straight to S3 (a
    server in direct mode hands out ``s3://`` artifact locations)."""
    return _stage_venv("venv_mlflow_s3", stage_venv_builds, pythons, tmp_path_factory)


@pytest.fixture(scope="session")
def venv_mlflow(stage_venv_builds: dict[str, _Background], pythons: dict[str, Path],
                tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python 3.12 stage venv with mlflow-skinny and the scikit-learn flavour's needs (pandas; skops for 3.x's
    default model format): a notebook logs metrics and a model itself, a small venv's way (no SQLite in skinny)."""
    return _stage_venv("venv_mlflow", stage_venv_builds, pythons, tmp_path_factory)


@pytest.fixture(scope="session")
def venv_mlflow2(stage_venv_builds: dict[str, _Background], pythons: dict[str, Path],
                 tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python 3.10 stage venv with an older major mlflow (its full package brings scikit-learn and matplotlib)."""
    return _stage_venv("venv_mlflow2", stage_venv_builds, pythons, tmp_path_factory)


@pytest.fixture(scope="session")
def venv_mlflow129(stage_venv_builds: dict[str, _Background], pythons: dict[str, Path],
                   tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The seed's ingest case: Python 3.8 with mlflow==1.29.0 (no scikit-learn)."""
    return _stage_venv("venv_mlflow129", stage_venv_builds, pythons, tmp_path_factory)


@pytest.fixture(scope="session")
def venv_small(stage_venv_builds: dict[str, _Background], pythons: dict[str, Path],
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Python 3.10 stage venv with one tiny package (a different Python than the toolkit's and the other venv)."""
    return _stage_venv("venv_small", stage_venv_builds, pythons, tmp_path_factory)


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


__all__ = ["NOTEBOOKS", "REPO_ROOT", "STAGE_VENVS", "build_venv", "env_with", "example_venv_root",
           "one_error_line", "private_mlflow_server", "replay_venv_root", "run_nb", "stage_venv_builds", "venv_mlflow",
           "venv_mlflow2", "venv_mlflow129", "venv_mlflow_s3", "venv_small"]
