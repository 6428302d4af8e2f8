"""End to end: scripts/replay_run.py replays runs recorded by run_notebook.py on a real MLflow server, with real
venvs (rebuilt from the record into a replay venv root) and real kernels.

The record: a two-stage chain nested under one parent run by GoCD-like variables (stage ``make`` turns a raw file
into numbers in its output folder, stage ``use`` reads a fetched copy of that folder through ``input_dir`` and
logs their total and its kernel's Python patch; ``use`` is given a secret), plus one unseeded ``make`` run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import filelock
import pytest
from mlflow import MlflowClient

from helpers import SCRIPTS, TOOLKIT_PYTHON, run_script, stop_process_group
from helpers_managed import Mirror, managed_builds, one_python_machine
from helpers_notebook import NOTEBOOKS, env_with, one_error_line, private_mlflow_server, run_nb

pytestmark = pytest.mark.slow

EXPERIMENT = "replay chain"
GOCD = {"GO_PIPELINE_NAME": "replay-chain", "GO_PIPELINE_COUNTER": "1", "GO_PIPELINE_LABEL": "1-abc"}


def _run(venv: Path, work: Path, uri: str, stage: str, notebook: str, *params: str,
         env: dict[str, str] | None = None, experiment: str = EXPERIMENT) -> str:
    """One recorded stage run (run_notebook.py); its run id."""
    done = run_nb("--venv", str(venv), "--notebook", str(NOTEBOOKS / notebook), "--output",
                  str(work / "out" / f"{stage}_out.ipynb"), "--stage", stage,
                  *(("--tracking-uri", uri) if uri else ()), "--experiment", experiment, *params, env=env, cwd=work)
    assert done.returncode == 0, done.stderr[-3000:]
    manifest = json.loads((work / "out" / f"{stage}_out.mlops_run.json").read_text(encoding="utf-8"))
    return manifest["run_id"]


@pytest.fixture(scope="module")
def replay_root(replay_venv_root: Path) -> Path:
    """The replay venvs of this module's tests: built once from the record, then reused."""
    return replay_venv_root


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, venv_small: Path, mlflow_server: str,
          replay_root: Path) -> dict[str, Any]:
    """The recorded chain (make -> use, one pipeline instance) and an unseeded make run."""
    work = tmp_path_factory.mktemp("replay work")
    (work / "raw.txt").write_text("1\n2\n3\n", encoding="utf-8")
    env = env_with(**GOCD)
    make = _run(venv_small, work, mlflow_server, "make", "chain_make.ipynb", "-p", "raw_file", "raw.txt", env=env)
    shutil.copytree(work / "out" / "make_outputs", work / "inputs" / "make_outputs")  # GoCD's fetchartifact
    use = _run(venv_small, work, mlflow_server, "use", "chain_use.ipynb", "-p", "input_dir", "inputs/make_outputs",
               "-p", "api_token", "s3cret", env=env)
    loose = tmp_path_factory.mktemp("unseeded work")
    (loose / "raw.txt").write_text("5\n", encoding="utf-8")
    unseeded = _run(venv_small, loose, mlflow_server, "make", "chain_make.ipynb", "-p", "raw_file", "raw.txt",
                    "-p", "seed", "null", experiment="replay unseeded")
    client = MlflowClient(mlflow_server)
    parent = client.get_run(use).data.tags["mlflow.parentRunId"]
    return {"work": work, "loose": loose, "make": make, "use": use, "parent": parent, "unseeded": unseeded,
            "replay_root": replay_root, "uri": mlflow_server}


def _replay(chain: dict[str, Any], run_id: str, workdir: Path, *args: str) -> Any:
    return run_script("replay_run.py", run_id, "--tracking-uri", chain["uri"], "--venv-root",
                      str(chain["replay_root"]), "--workdir", str(workdir), *args, cwd=workdir.parent)


def _replays_of(uri: str, run_id: str) -> list[Any]:
    client = MlflowClient(uri)
    ids = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(ids, f"tags.`mlops_kit.replay_of` = '{run_id}'")


def _artifact_json(uri: str, run_id: str, path: str, tmp: Path) -> Any:
    return json.loads(Path(MlflowClient(uri).download_artifacts(run_id, path, str(tmp))).read_text(encoding="utf-8"))


def test_a_run_records_its_source_masked_names_and_lineage(chain: dict[str, Any], tmp_path: Path) -> None:
    client = MlflowClient(chain["uri"])
    use = client.get_run(chain["use"])
    (dataset,) = use.inputs.dataset_inputs
    tags = {t.key: t.value for t in dataset.tags}
    assert tags["mlops_kit.producer_run_id"] == chain["make"] and tags["mlops_kit.param"] == "input_dir"
    assert tags["mlflow.data.context"] == "input" and dataset.dataset.digest == tags["mlops_kit.sha256"][:32]
    record = _artifact_json(chain["uri"], chain["use"], "lineage/lineage.json", tmp_path)
    assert record["masked"] == ["api_token"] and record["python"] == use.data.params["python_version"]
    (item,) = record["inputs"]
    assert item["value"] == "inputs/make_outputs" and item["path"] == str(chain["work"] / "inputs" / "make_outputs")
    assert {f["path"]: f["producer"]["artifact"] for f in item["files"]} == \
        {"metrics.json": "outputs/metrics.json", "numbers.txt": "outputs/numbers.txt"}
    assert sorted(f["path"] for f in record["outputs"]["files"]) == ["metrics.json", "summary.txt"]
    assert use.data.tags["mlops_kit.outputs.sha256"] == record["outputs"]["sha256"]
    source = Path(client.download_artifacts(chain["use"], record["source_notebook"], str(tmp_path)))
    assert source.read_bytes() == (NOTEBOOKS / "chain_use.ipynb").read_bytes(), "the notebook as given"
    make = _artifact_json(chain["uri"], chain["make"], "lineage/lineage.json", tmp_path / "make")
    assert [i["param"] for i in make["inputs"]] == [["raw_file"]] and "producer" not in make["inputs"][0]["files"][0]


def test_replaying_a_stage_reproduces_it_on_the_recorded_patch(chain: dict[str, Any], tmp_path: Path) -> None:
    done = _replay(chain, chain["use"], tmp_path / "stage", "-p", "api_token", "s3cret")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert f"stage use: run {chain['use']} replayed as run" in done.stdout and "REPRODUCED" in done.stdout
    assert "freeze identical" in done.stdout and "from run " in done.stdout, "inputs downloaded from make's run"
    assert "s3cret" not in done.stdout + done.stderr
    client = MlflowClient(chain["uri"])
    (replayed,) = _replays_of(chain["uri"], chain["use"])
    original = client.get_run(chain["use"])
    assert replayed.data.tags["mlops_kit.replay_verdict"] == "reproduced"
    assert replayed.data.tags["mlops_kit.role"] == "replay" and "mlops_kit.pipeline_key" not in replayed.data.tags
    assert replayed.data.metrics == original.data.metrics
    patch = original.data.params["python_version"]  # e.g. 3.10.13: the replayed kernel ran exactly that
    assert replayed.data.params["python_version"] == patch
    assert replayed.data.metrics["python_micro"] == int(patch.split(".")[2])
    report = _artifact_json(chain["uri"], replayed.info.run_id, "replay/report.json", tmp_path)
    assert report["verdict"] == "reproduced" and report["environment"]["differences"] == []
    assert replayed.data.params["api_token"] == "***"  # the -p value ran, masked like the original
    artifacts = Path(client.download_artifacts(replayed.info.run_id, "", str(tmp_path / "artifacts")))
    written = [p for folder in (tmp_path / "stage", artifacts) for p in folder.rglob("*") if p.is_file()]
    assert any(p.suffix == ".html" for p in written) and any(p.name == "params.yaml" for p in written)
    assert not [p for p in written if b"s3cret" in p.read_bytes()]


def test_replaying_the_pipeline_replays_every_stage_under_one_parent(chain: dict[str, Any], tmp_path: Path) -> None:
    done = _replay(chain, chain["parent"], tmp_path / "pipe", "-p", "api_token", "s3cret")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "replay of pipeline run" in done.stdout and "from the replay of run" in done.stdout
    (parent,) = _replays_of(chain["uri"], chain["parent"])
    assert parent.data.tags["mlops_kit.replay_verdict"] == "reproduced" and parent.info.status == "FINISHED"
    client = MlflowClient(chain["uri"])
    stages = client.search_runs([parent.info.experiment_id],
                                f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'",
                                order_by=["attributes.start_time ASC"])
    assert [(r.info.run_name, r.data.tags["mlops_kit.replay_of"]) for r in stages] == \
        [("make", chain["make"]), ("use", chain["use"])]
    (dataset,) = stages[1].inputs.dataset_inputs  # the replayed use read the replayed make's output
    assert {t.key: t.value for t in dataset.tags}["mlops_kit.producer_run_id"] == stages[0].info.run_id
    report = _artifact_json(chain["uri"], parent.info.run_id, "replay/report.json", tmp_path)
    assert report["verdict"] == "reproduced" and report["first_divergence"] is None


def test_an_unknown_run_id_or_a_bad_rtol_is_bad_input(chain: dict[str, Any], tmp_path: Path) -> None:
    for run_id in ("zzz", "0123456789abcdef0123456789abcdef"):
        done = _replay(chain, run_id, tmp_path / "unknown")
        assert done.returncode == 2, done.stderr
        assert f"run '{run_id}': no such run in" in one_error_line(done.stderr)
    for rtol in ("-1", "nan", "inf"):
        done = _replay(chain, chain["use"], tmp_path / "rtol", "--rtol", rtol)
        assert done.returncode == 2 and "must be a finite number" in one_error_line(done.stderr)


def test_a_second_replay_into_a_folder_in_use_is_refused_and_empties_nothing(chain: dict[str, Any],
                                                                             tmp_path: Path) -> None:
    workdir = tmp_path / "busy"
    done = _replay(chain, chain["make"], workdir)  # a finished replay leaves its folder, marker and lock file
    assert done.returncode == 0, done.stderr[-3000:]
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    with filelock.FileLock(str(workdir / ".mlops_kit_replay.lock")):  # as a replay running right now holds it
        done = _replay(chain, chain["make"], workdir)
    assert done.returncode == 2
    assert "another replay_run.py is using it right now" in one_error_line(done.stderr)
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


def test_a_masked_parameter_needs_p(chain: dict[str, Any], tmp_path: Path) -> None:
    before = len(_replays_of(chain["uri"], chain["use"]))
    done = _replay(chain, chain["use"], tmp_path / "masked")
    assert done.returncode == 2
    line = one_error_line(done.stderr)
    assert "api_token" in line and "-p api_token VALUE" in line and "nothing was run" in line
    done = _replay(chain, chain["use"], tmp_path / "masked", "-p", "api_token", "s3cret", "-p", "alpha", "1")
    assert done.returncode == 2 and "-p alpha" in one_error_line(done.stderr)
    assert len(_replays_of(chain["uri"], chain["use"])) == before


def test_a_notebook_failing_in_the_replay_is_exit_5_and_its_report_is_logged(chain: dict[str, Any],
                                                                              tmp_path: Path) -> None:
    done = _replay(chain, chain["use"], tmp_path / "fails", "-p", "api_token", "")  # the notebook asserts it
    assert done.returncode == 5, done.stdout[-3000:] + done.stderr[-3000:]
    assert "api_token is required" in one_error_line(done.stderr) and "NOTEBOOK FAILED" in done.stdout
    (failed,) = [r for r in _replays_of(chain["uri"], chain["use"])
                 if r.data.tags.get("mlops_kit.replay_verdict") == "notebook failed"]
    assert failed.info.status == "FAILED"
    report = _artifact_json(chain["uri"], failed.info.run_id, "replay/report.json", tmp_path)
    assert report["verdict"] == "notebook failed" and report["inputs"][0]["ok"]


def test_unseeded_random_numbers_are_not_reproduced(chain: dict[str, Any], tmp_path: Path) -> None:
    done = _replay(chain, chain["unseeded"], tmp_path / "unseeded")
    assert done.returncode == 8, done.stdout[-3000:] + done.stderr[-3000:]
    assert "metric mean" in one_error_line(done.stderr) and "not reproduced" in one_error_line(done.stderr)
    mean = next(line for line in done.stdout.splitlines() if line.strip().startswith("mean "))
    assert mean.rstrip().endswith("DIFFERENT")
    assert re.search(r"numbers\.txt +DIFFERENT sha256", done.stdout)
    (replayed,) = _replays_of(chain["uri"], chain["unseeded"])
    assert replayed.data.tags["mlops_kit.replay_verdict"] == "not reproduced"


def test_an_input_changed_since_the_run_is_named_and_nothing_runs(chain: dict[str, Any], tmp_path: Path) -> None:
    raw = chain["loose"] / "raw.txt"
    kept = raw.read_bytes()
    try:
        raw.write_text("5\n6\n", encoding="utf-8")
        done = _replay(chain, chain["unseeded"], tmp_path / "changed")
    finally:
        raw.write_bytes(kept)
    assert done.returncode == 8, done.stdout[-3000:] + done.stderr[-3000:]
    line = one_error_line(done.stderr)
    assert f"changed {raw}" in line and "raw_file" in line
    assert "NOT RUN" in done.stdout


def test_a_python_patch_that_is_not_installed_is_exit_3_and_nothing_is_built(chain: dict[str, Any],
                                                                           tmp_path: Path) -> None:
    client = MlflowClient(chain["uri"])
    run_id = chain["unseeded"]
    original = Path(client.download_artifacts(run_id, "environment/env.json", str(tmp_path / "original")))
    edited = tmp_path / "edited" / "env.json"
    edited.parent.mkdir()
    record = json.loads(original.read_text(encoding="utf-8"))
    record["python"]["version"] = "3.10.99"
    edited.write_text(json.dumps(record), encoding="utf-8")
    client.log_artifact(run_id, str(edited), "environment")  # the record, edited in the store
    try:
        root = tmp_path / "untouched venvs"
        done = run_script("replay_run.py", run_id, "--tracking-uri", chain["uri"], "--venv-root", str(root),
                          "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    finally:
        client.log_artifact(run_id, str(original), "environment")
    assert done.returncode == 3, done.stdout[-3000:] + done.stderr[-3000:]
    line = one_error_line(done.stderr)
    assert "3.10.99" in line and "pyenv install 3.10.99" in line and "--install-python" in line
    assert not root.exists(), "nothing built"


def test_a_patch_this_machine_lacks_is_downloaded_exactly_and_the_report_says_so(
        chain: dict[str, Any], tmp_path: Path, python_mirror: Mirror) -> None:
    """The run was recorded on Python 3.10.13; this machine has no 3.10 at all. With downloads off: exit 3
    naming the patch and the ways out; allowed (the default): uv downloads exactly 3.10.13 and the stage is rebuilt
    and reproduced on it; a second replay reuses it and says so."""
    patch = MlflowClient(chain["uri"]).get_run(chain["make"]).data.params["python_version"]
    assert patch == python_mirror.version("3.10"), "the fake host serves the patch the record was made on"
    machine = one_python_machine(tmp_path / "machine", python_mirror)
    pythons = Path(machine["XDG_DATA_HOME"]) / "mlops_kit" / "pythons"  # beside the stage venv root

    def replay(workdir: str, *args: str) -> Any:
        return run_script("replay_run.py", chain["make"], "--tracking-uri", chain["uri"], "--venv-root",
                          str(tmp_path / "replay venvs"), "--workdir", str(tmp_path / workdir), *args, env=machine,
                          cwd=tmp_path)

    off = replay("off", "--python-downloads", "never")
    assert off.returncode == 3, off.stdout[-3000:] + off.stderr[-3000:]
    line = one_error_line(off.stderr)
    assert f"the record needs Python {patch}" in line and "downloads are off (--python-downloads never)" in line
    assert not (tmp_path / "replay venvs").exists() and managed_builds(pythons) == []
    done = replay("on")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    key = python_mirror.keys["3.10"]
    assert f"interpreter: Python {patch} downloaded through uv for this replay ({key}, sha256 " \
           f"{python_mirror.sha256['3.10']})" in done.stdout and "REPRODUCED" in done.stdout
    assert managed_builds(pythons) == [key]
    again = replay("again", "--python-downloads", "never")
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert f"interpreter: Python {patch} uv-managed, downloaded earlier ({key}" in again.stdout


def test_a_run_recorded_before_lineage_takes_its_notebook_from_git(tmp_path: Path, venv_small: Path,
                                                                   replay_root: Path) -> None:
    """Older runs have no source/ nor lineage/: the notebook comes from git show <commit>:<notebook>."""
    work = tmp_path / "old"
    work.mkdir()
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    run_id = _run(venv_small, work, uri, "make", "chain_make.ipynb", experiment="old runs")
    artifacts = next((tmp_path / "mlruns").glob(f"*/{run_id}/artifacts"))
    for older in ("lineage", "source"):
        shutil.rmtree(artifacts / older)  # what a run recorded before this toolkit version lacks
    done = run_script("replay_run.py", run_id, "--tracking-uri", uri, "--workdir", str(tmp_path / "w"),
                      "--venv-root", str(replay_root), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "notebook from git show" in done.stdout, "the repository is at hand (tests run in a checkout)"
    assert "inputs were not recorded" in done.stdout and "REPRODUCED" in done.stdout
    shutil.rmtree(artifacts / "params")
    done = run_script("replay_run.py", run_id, "--tracking-uri", uri, "--workdir", str(tmp_path / "w"),
                      "--venv-root", str(replay_root), cwd=tmp_path)
    assert done.returncode == 2 and "parameters copy" in one_error_line(done.stderr)


# ---------------------------------------------------------------------------------------------------- issue 17.9
# What the notebook logs itself (params, tags, metric histories, artifacts) is compared too, on the embedded SQLite
# store (the default): the notebook logs through the store the runner serves it.


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory, venv_mlflow: Path, replay_root: Path) -> dict[str, Any]:
    """Runs of logs_everything.ipynb on the default store: one logging the same things every run (and 500 files
    in one artifact folder), one drawing a seed, a time stamp, a tag and a metric's middle step at random."""
    work = tmp_path_factory.mktemp("held work")
    same = _run(venv_mlflow, work, "", "same", "logs_everything.ipynb", "-p", "many", "500", "-p", "model", "true",
                experiment="held")
    varies = _run(venv_mlflow, work, "", "varies", "logs_everything.ipynb", "-p", "vary",
                  "[seed, stamp, tag, history]", experiment="held")
    return {"work": work, "same": same, "varies": varies, "replay_root": replay_root,
            "uri": f"sqlite:///{(work / 'mlflow.db').as_posix()}"}


def _replay_default(held: dict[str, Any], run_id: str, workdir: Path) -> Any:
    """replay_run.py with no --tracking-uri, from the folder holding the default store."""
    return run_script("replay_run.py", run_id, "--venv-root", str(held["replay_root"]), "--workdir", str(workdir),
                      cwd=held["work"])


def test_what_the_notebook_logs_itself_is_compared_and_the_skipped_are_listed(held: dict[str, Any],
                                                                               tmp_path: Path) -> None:
    done = _replay_default(held, held["same"], tmp_path / "same")
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    assert "params: " in done.stdout and "not compared (differs per run by nature)" in done.stdout
    (replayed,) = _replays_of(held["uri"], held["same"])
    assert replayed.info.status == "FINISHED" and replayed.data.tags["mlops_kit.replay_verdict"] == "reproduced"
    report = _artifact_json(held["uri"], replayed.info.run_id, "replay/report.json", tmp_path)
    compared = {(row["kind"], row["name"]): row for row in report["held"]}
    for key in (("param", "seed"), ("tag", "nb_tag"), ("metric", "loss"), ("artifact", "stamp.txt"),
                ("artifact", "dicts/d.json"), ("artifact", "many/f0499.txt"), ("artifact", "outputs/result.txt"),
                ("param", "python_version"), ("tag", "mlops_kit.stage")):
        assert compared[key]["same"], key
    assert compared[("metric", "loss")]["recorded"] == "3 steps"
    assert report["metrics"][[m["name"] for m in report["metrics"]].index("nan_metric")]["same"], "NaN is NaN"
    assert sum(1 for kind, name in compared if name.startswith("many/")) == 500
    skipped = {(row["kind"], row["name"]): row for row in report["skipped"]}
    assert {("param", "venv_name"), ("param", "output_dir"), ("tag", "mlflow.user"), ("tag", "mlops_kit.role"),
            ("artifact", "same_out.ipynb"), ("artifact", "environment/env.json"),
            ("artifact", "lineage/lineage.json")} <= set(skipped)
    model = skipped[("artifact", "logged model model")]  # MLflow 3 keeps it outside the run: listed, not compared
    assert model["recorded"].startswith("m-") and model["replayed"].startswith("m-") and "predictions" in model["why"]
    venv_tag = skipped[("tag", "mlops_kit.venv")]  # set by the notebook under a toolkit tag's name: shown, skipped
    assert venv_tag["recorded"].startswith("set by the notebook") and venv_tag["why"]


def test_randomness_logged_by_the_notebook_itself_is_not_reproduced(held: dict[str, Any], tmp_path: Path) -> None:
    done = _replay_default(held, held["varies"], tmp_path / "varies")
    assert done.returncode == 8, done.stdout[-4000:] + done.stderr[-3000:]
    line = one_error_line(done.stderr)
    for named in ("param seed (recorded ", "artifact stamp.txt (recorded ", "tag nb_tag (recorded ",
                  "metric loss (recorded step 1: "):
        assert named in line, (named, line)
    assert "param venv_name" not in line and "mlops_kit.venv" not in line
    assert re.search(r"seed +DIFFERENT \(value\): recorded \d+, replayed \d+", done.stdout)
    (replayed,) = _replays_of(held["uri"], held["varies"])
    assert replayed.info.status == "FINISHED" and replayed.data.tags["mlops_kit.replay_verdict"] == "not reproduced"


def test_an_artifact_deleted_from_the_store_is_named(held: dict[str, Any], tmp_path: Path) -> None:
    """An output the store lost is still checked against lineage's sha256; anything else lost is a difference."""
    artifacts = next((held["work"] / "mlruns").glob(f"*/{held['same']}/artifacts"))
    (artifacts / "outputs" / "result.txt").unlink()
    (artifacts / "dicts" / "d.json").unlink()
    done = _replay_default(held, held["same"], tmp_path / "deleted")
    assert done.returncode == 8, done.stdout[-4000:] + done.stderr[-3000:]
    line = one_error_line(done.stderr)
    assert "artifact dicts/d.json (recorded -, replayed " in line and "result.txt" not in line
    (replayed,) = [r for r in _replays_of(held["uri"], held["same"])
                   if r.data.tags["mlops_kit.replay_verdict"] == "not reproduced"]
    report = _artifact_json(held["uri"], replayed.info.run_id, "replay/report.json", tmp_path)
    (result,) = [row for row in report["held"] if row["name"] == "outputs/result.txt"]
    assert result["same"] and "gone from the recorded run's store: lineage's sha256" in result["how"]


# ---------------------------------------------------------------------------------------------------- issue 17.10


def test_a_server_stopping_mid_replay_never_leaves_a_finished_run_without_a_verdict(
        tmp_path: Path, venv_small: Path, replay_root: Path) -> None:
    """A real mlflow server, stopped while the replayed notebook runs: the replay is exit 6 naming the manifest;
    --log-existing after the restart uploads the replay run and ends it FAILED (no verdict), never FINISHED."""
    work, hold, started = tmp_path / "work", tmp_path / "hold", tmp_path / "started"
    work.mkdir()
    with private_mlflow_server(tmp_path / "server") as (uri, server):
        recorded = _run(venv_small, work, uri, "hold", "holds.ipynb", "-p", "started_file", str(started),
                        "-p", "hold_file", str(hold), experiment="server stops")
        started.unlink()
        hold.touch()  # the replayed notebook waits while it exists
        replay = subprocess.Popen([str(TOOLKIT_PYTHON), str(SCRIPTS / "replay_run.py"), recorded, "--tracking-uri",
                                   uri, "--venv-root", str(replay_root), "--workdir", str(tmp_path / "replay")],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        try:
            deadline = time.monotonic() + 600
            while not started.exists() and replay.poll() is None and time.monotonic() < deadline:
                time.sleep(0.2)
            assert started.exists(), replay.communicate(timeout=60)
            stop_process_group(server)  # the server goes down mid-replay
        finally:
            hold.unlink(missing_ok=True)
        out, err = replay.communicate(timeout=600)
    assert replay.returncode == 6, out[-3000:] + err[-3000:]
    line = one_error_line(err)
    manifest = tmp_path / "replay" / "1-hold" / "hold_out.mlops_run.json"
    assert "--log-existing" in line and str(manifest) in line
    port = int(uri.rsplit(":", 1)[1])
    with private_mlflow_server(tmp_path / "server", port=port) as (again, _):
        done = run_nb("--log-existing", str(manifest))
        assert done.returncode == 0, done.stderr[-3000:]
        (replayed,) = _replays_of(again, recorded)
        assert replayed.info.status == "FAILED", replayed.info.status
        assert replayed.data.tags["mlops_kit.failure_kind"] == "replay-interrupted"
        assert f"replay_run.py {recorded}" in replayed.data.tags["mlops_kit.error_value"]
        assert "mlops_kit.replay_verdict" not in replayed.data.tags
        assert "outputs/result.txt" in {a.path for a in MlflowClient(again).list_artifacts(replayed.info.run_id,
                                                                                           "outputs")}
