"""End to end: the example's train notebook logs its model and registers it, promoting only a winner.

Real parts: the example's train venv (specs/train.yaml, mlflow-skinny in it), a real kernel, real papermill,
run_notebook.py on an embedded SQLite store (served to the kernel over HTTP); the
registry is read back with MlflowClient. The train stage runs alone on a prepared features folder (scikit-learn's
breast-cancer table: what the ingest stage reads), not the whole pipeline, to keep this short; the pipeline tests
(test_run_pipeline.py on a real ``mlflow server``, test_team_server.py on PostgreSQL + S3 with eight trains at once)
check the registry after the example pipeline itself: this module does not repeat the server case.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from helpers import (
    NEW_PROCESS_GROUP,
    REPO_ROOT,
    TOOLKIT_PYTHON,
    free_port,
    run_script,
    stop_process_group,
    wait_healthy,
)
from mlops_kit.core import paths

pytestmark = pytest.mark.slow

NAME = "ml-example-classifier"
WORSE = ("-p", "C", "0.01")  # roc_auc 0.9952 on this table; the default C=1.0 gives 0.9977 (beats it by > 0.001)


@dataclass
class Train:
    """One run of the train stage: its exit code, console, MLflow run id and output folder."""

    code: int
    output: str
    run_id: str
    outputs: Path


def _train_python(venv_root: Path) -> Path:
    return paths.venv_python(venv_root / "ml_train_py312")


@pytest.fixture(scope="module")
def features(example_venv_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A features folder: the table the ingest stage reads (train only needs its ``target`` column)."""
    folder = tmp_path_factory.mktemp("features") / "features_outputs"
    folder.mkdir()
    write = ("import sys; from sklearn.datasets import load_breast_cancer; "
             "load_breast_cancer(as_frame=True).frame.to_csv(sys.argv[1], index=False)")
    subprocess.run([str(_train_python(example_venv_root)), "-c", write, str(folder / "features.csv")], check=True)
    return folder


def train(workdir: Path, uri: str, venv_root: Path, features: Path, *params: str, reuse: bool = False) -> Train:
    """scripts/run_notebook.py running notebooks/train.ipynb as the GoCD train job does (params file, input_dir).
    The spec opts in to reuse: unless ``reuse``, MLOPS_REUSE=never makes it execute (the issue's "same data")."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "MLOPS_REUSE"} | ({} if reuse else {"MLOPS_REUSE": "never"})
    done = run_script("run_notebook.py", "--spec", str(REPO_ROOT / "specs" / "train.yaml"), "--notebook",
                      str(REPO_ROOT / "notebooks" / "train.ipynb"), "--output", "out/train_out.ipynb",
                      "--params-file", str(REPO_ROOT / "params" / "train_params.yaml"), "-p", "input_dir",
                      str(features), "--output-dir", "out/train_outputs", "--venv-root", str(venv_root),
                      "--tracking-uri", uri, "--log-output", *params, cwd=workdir, env=env)
    output = done.stdout + done.stderr
    run_id = next((line.split()[2] for line in output.splitlines() if line.startswith("MLflow run ")), "")
    return Train(done.returncode, output, run_id, workdir / "out" / "train_outputs")


def _model_tags(client: MlflowClient, run_id: str) -> dict[str, str]:
    tags = client.get_run(run_id).data.tags
    return {k.removeprefix("mlops_kit.model."): v for k, v in tags.items() if k.startswith("mlops_kit.model.")}


def _versions(client: MlflowClient, name: str) -> list[str]:
    return sorted(str(v.version) for v in client.search_model_versions(f"name = '{name}'"))


@pytest.fixture(scope="module")
def embedded(example_venv_root: Path, features: Path, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[str, list[Train]]:
    """Three train runs on one embedded store: worse params (version 1, champion), the same again (version 2, not
    promoted: equal metric), the default params (version 3: better by more than the margin, champion)."""
    root = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{(root / 'mlflow.db').as_posix()}"
    runs = [train(root / f"run{i}", uri, example_venv_root, features, *params)
            for i, params in enumerate((WORSE, WORSE, ()), start=1)]
    for run in runs:
        assert run.code == 0 and run.run_id, run.output[-6000:]
    return uri, runs


def test_a_reused_train_registers_nothing_and_points_at_its_origins_version(
        embedded: tuple[str, list[Train]], example_venv_root: Path, features: Path, tmp_path: Path) -> None:
    """The default params again with reuse on: the third run is the origin; no version 4, the alias stays, and the
    reused run's mlops_kit.model.* tags are the origin's (its version 3, its decision)."""
    uri, (_, _, better) = embedded
    client = MlflowClient(uri)
    before = _model_tags(client, better.run_id)
    reused = train(tmp_path / "again", uri, example_venv_root, features, reuse=True)
    assert reused.code == 0, reused.output[-6000:]
    assert f"reused run {better.run_id} (train, " in reused.output, reused.output[-3000:]
    assert "model registry:" not in reused.output, "the notebook did not run: nothing registered"
    assert _versions(client, NAME) == ["1", "2", "3"]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "3"
    run = client.get_run(reused.run_id)
    assert run.data.tags["mlops_kit.reused_from"] == better.run_id
    assert _model_tags(client, reused.run_id) == before and before["version"] == "3"
    assert (reused.outputs / "mlflow_model" / "MLmodel").read_bytes() == \
        (better.outputs / "mlflow_model" / "MLmodel").read_bytes()


def test_a_winner_is_champion_an_equal_run_is_registered_without_the_alias(embedded: tuple[str, list[Train]]
                                                                            ) -> None:
    uri, (first, again, better) = embedded
    client = MlflowClient(uri)
    assert _versions(client, NAME) == ["1", "2", "3"]
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "3"

    assert "model registry: version 1 is the new champion (roc_auc 0.995178): no version held the alias" \
        in first.output
    assert _model_tags(client, first.run_id) | {"reason": ""} == {
        "name": NAME, "version": "1", "decision": "champion", "uri": f"models:/{NAME}/1", "metric": "roc_auc",
        "candidate_value": "0.995178", "margin": "0.001", "reason": "",
        "logged_model": _model_tags(client, first.run_id)["logged_model"]}
    line = ("model registry: version 2 not promoted: roc_auc 0.995178 does not beat 0.995178 (champion version 1) "
            "+ margin 0.001")
    assert line in again.output and _model_tags(client, again.run_id)["reason"] == line.removeprefix(
        "model registry: ")
    tags = _model_tags(client, again.run_id)
    assert (tags["decision"], tags["champion_before"], tags["champion_value"]) == ("not-promoted", "1", "0.995178")
    assert "version 3 is the new champion: roc_auc 0.997694 > 0.995178 (version 1) + margin 0.001" in better.output
    assert _model_tags(client, better.run_id)["decision"] == "champion"

    version = client.get_model_version(NAME, "3")
    assert version.run_id == better.run_id and version.tags == {"roc_auc": "0.997694"}
    logged = client.get_logged_model(_model_tags(client, better.run_id)["logged_model"].removeprefix("models:/"))
    assert logged.source_run_id == better.run_id
    # the logged files are an output too (lineage hashes them, GoCD publishes them), with signature and example
    mlmodel = (better.outputs / "mlflow_model" / "MLmodel").read_text(encoding="utf-8")
    assert "signature:" in mlmodel and "input_example.json" in mlmodel and "mean radius" in mlmodel
    assert (better.outputs / "model.joblib").is_file()


def test_the_champion_loads_from_the_registry_as_the_readme_shows(embedded: tuple[str, list[Train]],
                                                                  example_venv_root: Path, tmp_path: Path) -> None:
    """The README's way on the embedded store: ``mlflow ui`` on mlflow.db (command 1's last line), then the train
    venv (mlflow-skinny: HTTP only, no SQLite) loads ``models:/ml-example-classifier@champion`` through it."""
    uri, _ = embedded
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "COVERAGE_"))}
    with open(tmp_path / "ui.log", "wb") as log:
        ui = subprocess.Popen([str(TOOLKIT_PYTHON), "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host",
                               "127.0.0.1", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT, env=env,
                              cwd=tmp_path, **NEW_PROCESS_GROUP)
    try:
        wait_healthy(f"http://127.0.0.1:{port}", ui, tmp_path / "ui.log")
        load = ("import mlflow, sys; mlflow.set_tracking_uri(sys.argv[1]); "
                "m = mlflow.sklearn.load_model('models:/ml-example-classifier@champion'); "
                "print(type(m).__name__, m[-1].C)")
        done = subprocess.run([str(_train_python(example_venv_root)), "-c", load, f"http://127.0.0.1:{port}"],
                              capture_output=True, text=True)
    finally:
        stop_process_group(ui)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["Pipeline", "1.0"]  # version 3: the default C


def test_a_replay_registers_nothing_and_compares_the_model_by_its_predictions(
        embedded: tuple[str, list[Train]], example_venv_root: Path, tmp_path: Path) -> None:
    uri, (first, _, _) = embedded
    done = run_script("replay_run.py", first.run_id, "--tracking-uri", uri, "--venv-root",
                      str(example_venv_root / "replay"), "--workdir", str(tmp_path / "replay"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    client = MlflowClient(uri)
    assert _versions(client, NAME) == ["1", "2", "3"], "a replay registers nothing"
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "3", "and moves no alias"
    replay = client.search_runs([client.get_run(first.run_id).info.experiment_id],
                                f"tags.`mlops_kit.replay_of` = '{first.run_id}'")
    (run,) = replay
    assert _model_tags(client, run.info.run_id)["decision"] == "replay"
    skops = next(line for line in done.stdout.splitlines() if "mlflow_model/model.skops" in line)
    assert "same as part of outputs/mlflow_model" in skops, skops
    assert "same sha256" in skops or "same predictions on the input example (5 value(s))" in skops, skops
    assert "DIFFERENT" not in done.stdout, done.stdout[-6000:]

