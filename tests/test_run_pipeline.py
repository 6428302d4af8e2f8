"""End to end: scripts/run_pipeline.py runs the example GoCD pipeline for real.

Real stage venvs (Python 3.10 / 3.11 / 3.12, built by create_venv.py from the shared uv cache), real kernels,
real papermill, a real MLflow server on 127.0.0.1; results are read back with MlflowClient.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import REPO_ROOT, SCRIPTS, TOOLKIT_PYTHON, copy_repo, run_script
from helpers_managed import Mirror, downloads_in, managed_builds, one_python_machine
from mlops_kit.envs.spec import load_spec

pytestmark = pytest.mark.slow

STAGES = ("ingest", "features", "train")


@pytest.fixture(scope="module")
def venv_root(example_venv_root: Path) -> Path:
    """The session's: later runs (and tests/test_team_server.py) reuse the venvs the first one built."""
    return example_venv_root


def _client(uri: str):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    return MlflowClient(uri)


def _families(uri: str, experiment: str) -> list[tuple[object, dict[str, object]]]:
    """[(a pipeline run's parent, {stage: its nested run})], by GO_PIPELINE_COUNTER; every run is one of these."""
    client = _client(uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no MLflow experiment {experiment!r}"
    runs = client.search_runs([found.experiment_id])
    parents = sorted((r for r in runs if "mlflow.parentRunId" not in r.data.tags),
                     key=lambda r: int(r.data.tags["GO_PIPELINE_COUNTER"]))
    families = [(p, {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id})
                for p in parents]
    assert sum(len(children) for _, children in families) + len(parents) == len(runs), "no run outside a family"
    return families


def _runs(uri: str, experiment: str) -> tuple[object, dict[str, object]]:
    """(the pipeline's parent run, {stage: nested run}) of the experiment's one pipeline run."""
    families = _families(uri, experiment)
    assert len(families) == 1, [p.info.run_name for p, _ in families]
    return families[0]


def _artifacts(uri: str, run_id: str, path: str | None = None) -> list[str]:
    client = _client(uri)
    out = []
    for item in client.list_artifacts(run_id, path):
        out += _artifacts(uri, run_id, item.path) if item.is_dir else [item.path]
    return out


def _has(paths: list[str], suffix: str) -> bool:
    return any(p == suffix or p.endswith("/" + suffix) for p in paths)


def _rehearse_at_once(count: int, *args: str, logs: Path) -> list[tuple[int, str]]:
    """``count`` rehearsals started together (as a team's agents would): [(exit code, output)]."""
    logs.mkdir(parents=True, exist_ok=True)
    cmd = [str(TOOLKIT_PYTHON), str(SCRIPTS / "run_pipeline.py"), *args]
    runs = []
    for i in range(count):
        with open(logs / f"{i}.log", "wb") as out:
            runs.append(subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO_ROOT,
                                         env={**os.environ, "MLOPS_REUSE": "never"}))  # all execute: a load test
    codes = [run.wait(timeout=1800) for run in runs]
    return [(code, (logs / f"{i}.log").read_text(encoding="utf-8", errors="replace")) for i, code in enumerate(codes)]


@pytest.fixture(scope="module")
def rehearsed(mlflow_server: str, venv_root: Path, tmp_path_factory: pytest.TempPathFactory
              ) -> tuple[Path, list[tuple[int, str]]]:
    """Three rehearsals of the example at once (the state folder, [(exit code, output)]): checked by one test,
    replayed by another."""
    folder = tmp_path_factory.mktemp("rehearsals")
    # the session's MLflow server is shared with other test modules: an experiment of our own
    done = _rehearse_at_once(3, "--tracking-uri", mlflow_server, "--venv-root", str(venv_root), "--state-dir",
                             str(folder / "state"), "--env", "MLFLOW_EXPERIMENT_NAME=ml-example-e2e", "--keep", "1",
                             logs=folder / "logs")
    return folder / "state", done


def test_three_rehearsals_of_the_example_at_once_against_one_server(
        mlflow_server: str, rehearsed: tuple[Path, list[tuple[int, str]]], tmp_path: Path) -> None:
    """Three pipeline instances at once (one state folder: counters 1-3, --keep 1 must not prune a live
    one), one tracking server, the same experiment: three parents, nine stage runs, each under its own parent."""
    state, done = rehearsed
    for code, out in done:
        assert code == 0, out[-6000:]
        assert "results:" in out and "Train (py3.12)" in out
    families = _families(mlflow_server, "ml-example-e2e")
    assert [p.data.tags["GO_PIPELINE_COUNTER"] for p, _ in families] == ["1", "2", "3"]
    for parent, stages in families:
        counter = parent.data.tags["GO_PIPELINE_COUNTER"]
        assert parent.info.status == "FINISHED" and sorted(stages) == sorted(STAGES)
        assert parent.data.tags["mlops_kit.pipeline_key"].startswith(f"ml-example/{counter} local-"), \
            "apart from GoCD's run of that number"
        assert all(run.data.tags["GO_PIPELINE_COUNTER"] == counter for run in stages.values())

    parent, stages = families[0]
    head = subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True).stdout
    for name, run in stages.items():
        assert run.info.status == "FINISHED", name
        assert run.data.tags["GO_PIPELINE_NAME"] == "ml-example" and run.data.tags["GO_PIPELINE_COUNTER"] == "1"
        assert run.data.tags["GO_STAGE_NAME"] == name
        assert run.data.params["git_commit"] == head.strip(), "the copy has no .git: GO_REVISION is recorded"
        assert run.data.tags["mlflow.source.name"] == f"notebooks/{name}.ipynb"
        paths = _artifacts(mlflow_server, run.info.run_id)
        assert _has(paths, f"{name}_out.ipynb") and _has(paths, "pip_freeze.txt"), (name, paths)
        assert "environment/spec.lock.txt" in paths, (name, paths)  # the committed lock it was installed from
        assert _has(paths, "metrics.json"), (name, paths)

    for consumer, producer in (("features", "ingest"), ("train", "features")):  # lineage: content, not paths
        (dataset,) = stages[consumer].inputs.dataset_inputs
        tags = {t.key: t.value for t in dataset.tags}
        assert tags["mlops_kit.param"] == "input_dir", consumer
        assert tags["mlops_kit.producer_run_id"] == stages[producer].info.run_id, consumer

    assert stages["ingest"].data.metrics["rows"] == 569
    assert stages["ingest"].data.params["min_rows"] == "500"
    assert stages["features"].data.metrics["n_features"] > 10
    train = stages["train"]
    assert train.data.params["model"] == "logistic_regression"
    assert {"accuracy", "f1", "roc_auc"} <= set(train.data.metrics)
    assert all(train.data.metrics[m] > 0.9 for m in ("accuracy", "f1", "roc_auc"))
    paths = _artifacts(mlflow_server, train.info.run_id)
    for name in ("model.joblib", "confusion_matrix.png", "feature_importance.png"):
        assert _has(paths, name), paths
    assert _has(paths, "mlflow_model/MLmodel"), paths
    _registry_holds_the_trains_of(mlflow_server, [stages["train"] for _, stages in families])
    png = next(p for p in paths if p.endswith("confusion_matrix.png"))
    local = _client(mlflow_server).download_artifacts(train.info.run_id, png, str(tmp_path))
    assert Path(local).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # what GoCD would hold: each stage's outputs, executed notebook (+HTML for the tab) and audit bundle
    store = state / "artifacts" / "ml-example" / "1"
    for name in STAGES:
        job = store / name / "1" / name
        assert (job / f"{name}_outputs" / "metrics.json").is_file()
        assert (job / "notebooks" / f"{name}_out.ipynb").is_file()
        assert (job / "notebooks" / f"{name}_out.html").is_file()
        env = json.loads((job / "audit" / name / "env.json").read_text(encoding="utf-8"))
        wanted = load_spec(REPO_ROOT / "specs" / f"{name}.yaml").python.text
        assert env["python"]["version"].startswith(wanted + "."), "each stage runs on its own Python"
        assert (job / "audit" / name / "pip_freeze.txt").read_text(encoding="utf-8").strip()
        lock = REPO_ROOT / "specs" / f"{name}.lock.txt"
        assert (job / "audit" / name / "spec.lock.txt").read_bytes() == lock.read_bytes()
        assert env["lock"]["verified"] and env["lock"]["sha256"] == hashlib.sha256(lock.read_bytes()).hexdigest()
    assert (store / "train" / "1" / "train" / "train_outputs" / "model.joblib").is_file()
    # each job worked in its own copy: the train job only got the features folder, not ingest's raw table
    train_copy = state / "work" / "ml-example" / "1" / "train" / "train"
    assert (train_copy / "inputs" / "features_outputs" / "features.csv").is_file()
    assert not (train_copy / "out" / "ingest_outputs").exists()


def _registry_holds_the_trains_of(uri: str, trains: list) -> None:  # type: ignore[type-arg]
    """The registry holds one version of ml-example-classifier per train run, each made by that run and named in
    its mlops_kit.model.* tags; the alias champion is on a version whose run decided "champion" (equal metrics: runs
    that finish together may each see no champion yet and each take the alias: the last one keeps it)."""
    client = _client(uri)
    versions = {str(v.version): v for v in client.search_model_versions("name = 'ml-example-classifier'")}
    assert sorted(v.run_id for v in versions.values()) == sorted(t.info.run_id for t in trains)
    decisions = {}
    for train in trains:
        tags = client.get_run(train.info.run_id).data.tags
        assert versions[tags["mlops_kit.model.version"]].run_id == train.info.run_id
        decisions[tags["mlops_kit.model.version"]] = tags["mlops_kit.model.decision"]
    assert set(decisions.values()) <= {"champion", "not-promoted"} and "champion" in decisions.values()
    assert decisions[str(client.get_model_version_by_alias("ml-example-classifier", "champion").version)] == "champion"


def test_the_example_pipeline_replays_exactly_from_its_run_id(
        mlflow_server: str, rehearsed: tuple[Path, list[tuple[int, str]]], venv_root: Path, tmp_path: Path) -> None:
    """One command replays the whole pipeline run (three venvs rebuilt from the recorded locks, each stage's
    input taken from the replayed upstream) and proves every metric, output file and freeze identical."""
    parent, stages = _families(mlflow_server, "ml-example-e2e")[0]
    done = run_script("replay_run.py", parent.info.run_id, "--tracking-uri", mlflow_server, "--venv-root",
                      str(venv_root / "replay"), "--experiment", "ml-example-replay", "--workdir",
                      str(tmp_path / "replay"), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
    assert done.stdout.count("built from the recorded lock; freeze identical") == 3
    assert "model.joblib" in done.stdout and "DIFFERENT" not in done.stdout
    client = _client(mlflow_server)
    experiment = client.get_experiment_by_name("ml-example-replay")
    runs = client.search_runs([experiment.experiment_id])
    (top,) = [r for r in runs if r.data.tags.get("mlops_kit.replay_of") == parent.info.run_id]
    nested = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == top.info.run_id}
    assert sorted(nested) == sorted(STAGES) and top.data.tags["mlops_kit.replay_verdict"] == "reproduced"
    for name, run in nested.items():
        assert run.data.tags["mlops_kit.replay_of"] == stages[name].info.run_id
        assert run.data.metrics == stages[name].data.metrics, name
    assert nested["train"].data.tags["mlops_kit.model.decision"] == "replay", "a replay registers nothing"
    _registry_holds_the_trains_of(mlflow_server, [stages["train"] for _, stages in _families(mlflow_server,
                                                                                               "ml-example-e2e")])


def test_failing_train_notebook_fails_the_pipeline_and_keeps_earlier_results(
        mlflow_server: str, venv_root: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    copy_repo(repo)
    params = repo / "params" / "train_params.yaml"
    params.write_text(params.read_text(encoding="utf-8").replace("model: logistic_regression", "model: no_such_model"),
                      encoding="utf-8")
    done = run_script("run_pipeline.py", "--tracking-uri", mlflow_server, "--venv-root", str(venv_root),
                      "--env", "MLFLOW_EXPERIMENT_NAME=ml-example-broken", cwd=repo)
    assert done.returncode == 7, done.stdout[-6000:] + done.stderr
    error = done.stderr.strip()
    assert error.startswith("error: ") and "\n" not in error and "train/train" in error and "task 3" in error
    assert "unknown model 'no_such_model'" in done.stdout  # the notebook's own error, in the job log

    parent, stages = _runs(mlflow_server, "ml-example-broken")
    assert parent.info.status == "FAILED"
    assert stages["ingest"].info.status == stages["features"].info.status == "FINISHED"
    assert stages["train"].info.status == "FAILED"
    assert _has(_artifacts(mlflow_server, stages["train"].info.run_id), "train_out.ipynb"), "notebook kept on failure"

    store = repo / ".pipeline" / "artifacts" / "ml-example" / "1"
    assert (store / "ingest" / "1" / "ingest" / "ingest_outputs" / "raw.csv").is_file()
    assert (store / "features" / "1" / "features" / "features_outputs" / "features.csv").is_file()
    assert (store / "train" / "1" / "train" / "notebooks" / "train_out.ipynb").is_file(), "published on failure"
    assert not (store / "train" / "1" / "train" / "train_outputs" / "model.joblib").exists()


def _rehearse_on(machine: dict[str, str], tmp: Path, uri: str) -> subprocess.CompletedProcess[str]:
    """README command 1 (``python scripts/run_pipeline.py``) with the machine's only Python, the toolkit's."""
    python = machine["PATH"].split(os.pathsep)[0] + "/python"
    return subprocess.run([python, str(SCRIPTS / "run_pipeline.py"), "--venv-root", str(tmp / "ml venvs"),
                           "--state-dir", str(tmp / "state"), "--tracking-uri", uri, "--keep", "1"],
                          capture_output=True, text=True, env=machine, cwd=REPO_ROOT, timeout=1800)


def test_the_example_on_a_machine_whose_only_python_is_the_toolkits(tmp_path: Path, python_mirror: Mirror) -> None:
    """No stage Python installed (no pyenv, no python3.X on PATH; the toolkit's Python reachable as
    ``python`` only, as on an agent): the three stage Pythons are downloaded once from the (fake) host into
    <venv root>/../pythons, every stage passes on them, the run records where they came from; a re-run downloads
    nothing."""
    machine = one_python_machine(tmp_path / "machine", python_mirror)
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    first = _rehearse_on(machine, tmp_path, uri)
    assert first.returncode == 0, first.stdout[-6000:] + first.stderr[-3000:]
    keys = [python_mirror.keys[m] for m in ("3.10", "3.11", "3.12")]
    assert downloads_in(first.stdout) == keys, "one download per stage Python, in stage order"
    pythons = tmp_path / "pythons"
    assert managed_builds(pythons) == keys
    for stage, minor in zip(STAGES, ("3.10", "3.11", "3.12")):
        venv = tmp_path / "ml venvs" / load_spec(REPO_ROOT / "specs" / f"{stage}.yaml").venv_name
        record = json.loads((venv / "audit" / "env.json").read_text(encoding="utf-8"))["python"]
        assert record["source"] == "uv-managed" and record["path"].startswith(str(pythons / python_mirror.keys[minor]))
        assert record["managed"]["sha256"] == python_mirror.sha256[minor] and record["managed"]["verified"]
    _, runs = _runs(uri, "ml-example")
    for stage, minor in zip(STAGES, ("3.10", "3.11", "3.12")):
        tags = runs[stage].data.tags
        assert (tags["mlops_kit.python_source"], tags["mlops_kit.python_build"]) == ("uv-managed",
                                                                                     python_mirror.keys[minor])
    again = _rehearse_on(machine, tmp_path, uri)
    assert again.returncode == 0, again.stdout[-6000:] + again.stderr[-3000:]
    assert downloads_in(again.stdout) == [] and "uv: " not in again.stdout and "reusing" in again.stdout
    assert managed_builds(pythons) == keys
