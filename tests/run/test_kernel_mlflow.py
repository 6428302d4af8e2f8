"""The stage run is the kernel's active MLflow run: a notebook's nested runs are its children, a plain start_run or
an end_run never rename, end or scatter it. Real kernels with the mlflow of their own venv, real stores."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest
from mlflow import MlflowClient

from helpers_notebook import run_nb
from mlops_kit.run import kernel_mlflow

SWEEP = """\
import mlflow
stage = mlflow.active_run().info.run_id  # the stage run, before any start_run
for lr in [0.1, 0.2, 0.3]:
    with mlflow.start_run(nested=True, run_name=f"lr={lr}"):
        mlflow.log_metric("loss", lr)
        with mlflow.start_run(nested=True, run_name=f"inner {lr}"):
            mlflow.log_param("depth", 2)
assert mlflow.active_run().info.run_id == stage
mlflow.log_metric("after_sweep", 1)
with mlflow.start_run(run_name="asked for"):  # a plain start_run: the stage run itself
    mlflow.log_param("plain", "yes")
mlflow.end_run()  # the toolkit ends the stage run: logging goes on into it
mlflow.log_metric("after_end", 2)
assert mlflow.active_run().info.run_id == stage
"""


def _notebook(folder: Path, source: str) -> Path:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "sweep.ipynb"
    nbformat.write(nb, path)
    return path


def _check_sweep(uri: str) -> None:
    client = MlflowClient(uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "mlops_kit"]
    runs = client.search_runs([experiment.experiment_id])
    (stage,) = [r for r in runs if r.data.tags.get("mlops_kit.role") == "stage"]
    assert stage.info.run_name == stage.data.tags["mlops_kit.stage"] and stage.info.status == "FINISHED"
    assert stage.data.metrics == {"after_sweep": 1.0, "after_end": 2.0}
    assert stage.data.params["plain"] == "yes"
    children = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == stage.info.run_id}
    assert set(children) == {"lr=0.1", "lr=0.2", "lr=0.3"}
    for name, child in children.items():
        assert child.info.status == "FINISHED" and child.data.metrics == {"loss": float(name[3:])}
        assert child.data.tags["mlops_kit.role"] == "notebook"
        assert child.data.tags["mlops_kit.stage_run"] == stage.info.run_id
        assert child.data.tags["mlops_kit.stage"] == stage.info.run_name and "mlops_kit.pipeline_key" not in child.data.tags
    inner = [r for r in runs if r.data.tags.get("mlflow.parentRunId") in {c.info.run_id for c in children.values()}]
    assert sorted(r.info.run_name for r in inner) == ["inner 0.1", "inner 0.2", "inner 0.3"]
    assert len(runs) == 1 + 3 + 3  # nothing top-level but the stage run


@pytest.mark.slow
@pytest.mark.parametrize("venv", ["venv_mlflow", "venv_mlflow2", "venv_mlflow129"])
def test_a_nested_sweep_lands_under_the_stage_run_on_the_default_store(tmp_path: Path, venv: str,
                                                                      request: pytest.FixtureRequest) -> None:
    """mlflow-skinny 3.x, mlflow 2.17 and 1.29 in the stage venv, the embedded SQLite store served to the kernel."""
    venv_dir: Path = request.getfixturevalue(venv)
    done = run_nb("--venv", str(venv_dir), "--notebook", str(_notebook(tmp_path, SWEEP)),
                  "--output", str(tmp_path / "out" / "sweep_out.ipynb"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    _check_sweep(f"sqlite:///{tmp_path / 'mlflow.db'}")


@pytest.mark.slow
def test_a_nested_sweep_lands_under_the_stage_run_on_a_tracking_server(tmp_path: Path, venv_mlflow: Path,
                                                                      mlflow_server: str) -> None:
    experiment = f"nested-{tmp_path.name}"
    done = run_nb("--venv", str(venv_mlflow), "--notebook", str(_notebook(tmp_path, SWEEP)),
                  "--output", str(tmp_path / "out" / "sweep_out.ipynb"), "--tracking-uri", mlflow_server,
                  "--experiment", experiment, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    runs = client.search_runs([exp.experiment_id])
    (stage,) = [r for r in runs if r.data.tags.get("mlops_kit.role") == "stage"]
    assert stage.info.run_name == stage.data.tags["mlops_kit.stage"] and stage.info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == stage.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["lr=0.1", "lr=0.2", "lr=0.3"]
    assert len(runs) == 7


def test_child_tags_name_the_stage_run_and_never_the_pipeline_instance() -> None:
    stage_tags = {"mlops_kit.role": "stage", "mlops_kit.stage": "train", "mlops_kit.pipeline_key": "k",
                  "GO_PIPELINE_NAME": "ml", "mlflow.source.git.commit": "abc", "mlflow.runName": "train",
                  "mlflow.parentRunId": "p", "mlops_kit.venv": "/v"}
    tags = json.loads(kernel_mlflow.child_tags(stage_tags, "r1"))
    assert tags == {"mlops_kit.role": "notebook", "mlops_kit.stage": "train", "GO_PIPELINE_NAME": "ml",
                    "mlflow.source.git.commit": "abc", "mlops_kit.stage_run": "r1"}


def test_the_bootstrap_is_valid_python_for_every_supported_kernel() -> None:
    compile(kernel_mlflow.BOOTSTRAP, "<bootstrap>", "exec")
