"""End to end: ``run_notebook.py --reuse`` on a real venv, real kernels and real stores (the embedded SQLite store
and a real ``mlflow server``), read back with ``MlflowClient``.

The notebook of most tests is the replay chain's ``make`` stage: run unseeded (``-p seed null``) it draws other
numbers at every execution, so identical numbers prove a run was copied, not executed again.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import nbformat
import pytest
from mlflow import MlflowClient

from helpers import SCRIPTS, TOOLKIT_PYTHON, run_script
from helpers_notebook import NOTEBOOKS, env_with, one_error_line, run_nb

pytestmark = pytest.mark.slow

REUSED = re.compile(r"reused run (\w+) \((\w+), \d{4}-\d\d-\d\d \d\d:\d\d UTC\): same notebook, parameters, inputs, "
                    r"environment")


class Stage:
    """Runs of one stage notebook in one work folder and store (``uri`` None: the default SQLite store there)."""

    def __init__(self, venv: Path, work: Path, uri: str | None, experiment: str, notebook: Path,
                 stage: str = "make") -> None:
        self.venv, self.work, self.uri, self.experiment, self.notebook, self.stage = \
            venv, work, uri, experiment, notebook, stage
        work.mkdir(parents=True, exist_ok=True)

    @property
    def store(self) -> str:
        return self.uri or f"sqlite:///{(self.work / 'mlflow.db').as_posix()}"

    def run(self, *params: str, out: str = "out", reuse: bool = True, env: dict[str, str] | None = None,
            code: int = 0) -> tuple[subprocess.CompletedProcess[str], str]:
        """One run_notebook.py run; its process and run id."""
        output = self.work / out / f"{self.stage}_out.ipynb"
        done = run_nb("--venv", str(self.venv), "--notebook", str(self.notebook), "--output", str(output),
                      "--stage", self.stage, *(("--tracking-uri", self.uri) if self.uri else ()),
                      "--experiment", self.experiment, *(("--reuse",) if reuse else ()), *params,
                      env=env or env_with(), cwd=self.work)
        assert done.returncode == code, done.stdout[-2000:] + done.stderr[-3000:]
        manifest = json.loads(output.with_name(f"{self.stage}_out.mlops_run.json").read_text(encoding="utf-8"))
        return done, manifest["run_id"]

    def client(self) -> MlflowClient:
        return MlflowClient(self.store)

    def get(self, run_id: str) -> Any:
        return self.client().get_run(run_id)


def _reused_from(done: subprocess.CompletedProcess[str]) -> str | None:
    found = REUSED.search(done.stdout)
    return found.group(1) if found else None


def _no_reuse_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in done.stdout.splitlines() if line.startswith("no reuse: ")]
    assert len(lines) == 1, done.stdout
    return lines[0]


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        found |= _artifacts(client, run_id, item.path) if item.is_dir else {item.path}
    return found


def _stored(stage: Stage, run_id: str, artifact: str) -> Path:
    """Where the local artifact store keeps a run's artifact (to damage it as a careless cleanup would)."""
    from mlflow.utils.file_utils import local_file_uri_to_path

    return Path(local_file_uri_to_path(stage.get(run_id).info.artifact_uri)) / artifact


@pytest.fixture
def make(tmp_path: Path, venv_small: Path) -> Stage:
    work = tmp_path / "work dir"
    work.mkdir()
    (work / "raw.txt").write_text("1\n2\n", encoding="utf-8")
    return Stage(venv_small, work, None, "reuse", NOTEBOOKS / "chain_make.ipynb")


@pytest.mark.parametrize("where", ["sqlite", "server"])
def test_a_hit_copies_the_origin_into_a_run_of_its_own(tmp_path: Path, venv_small: Path, mlflow_server: str,
                                                       where: str) -> None:
    """Point 3: the reused run is nested under its own pipeline instance with its own GoCD tags, carries the
    origin's metrics, executed notebook, HTML and outputs (downloaded, byte-identical), and says so in one line."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "raw.txt").write_text("1\n2\n", encoding="utf-8")
    stage = Stage(venv_small, work, mlflow_server if where == "server" else None, f"reuse hit {where}",
                  NOTEBOOKS / "chain_make.ipynb")
    gocd = {"GO_PIPELINE_NAME": "reuse", "GO_PIPELINE_LABEL": "x"}
    params = ("-p", "raw_file", "raw.txt", "-p", "seed", "null")  # unseeded: an execution draws other numbers
    first, origin = stage.run(*params, env=env_with(**gocd, GO_PIPELINE_COUNTER="1"))
    assert _no_reuse_line(first).startswith("no reuse: ") and _reused_from(first) is None
    second, reused = stage.run(*params, out="elsewhere", env=env_with(**gocd, GO_PIPELINE_COUNTER="2"))
    assert _reused_from(second) == origin, second.stdout
    assert REUSED.search(second.stdout).group(2) == "make"  # type: ignore[union-attr]
    assert f"executed notebook: {work / 'elsewhere' / 'make_out.ipynb'} (run {origin}'s, reused)" in second.stdout
    for name in ("numbers.txt", "metrics.json"):
        assert (work / "elsewhere" / "make_outputs" / name).read_bytes() == \
            (work / "out" / "make_outputs" / name).read_bytes()
    assert (work / "elsewhere" / "make_out.ipynb").read_bytes() == (work / "out" / "make_out.ipynb").read_bytes()
    assert (work / "elsewhere" / "make_out.html").is_file()
    client = stage.client()
    run, before = client.get_run(reused), client.get_run(origin)
    tags = run.data.tags
    assert run.info.status == "FINISHED" and tags["mlops_kit.reused_from"] == origin
    assert tags["mlops_kit.reuse_key"] == before.data.tags["mlops_kit.reuse_key"]
    assert tags["GO_PIPELINE_COUNTER"] == "2" and tags["mlflow.parentRunId"] != before.data.tags["mlflow.parentRunId"]
    parent = client.get_run(tags["mlflow.parentRunId"])
    assert parent.data.tags["GO_PIPELINE_COUNTER"] == "2" and parent.info.status == "FINISHED"
    assert run.data.metrics == before.data.metrics and run.data.metrics["count"] == 7
    assert {"make_out.ipynb", "make_out.html", "outputs/numbers.txt", "outputs/metrics.json",
            "lineage/reuse_key.json", "lineage/lineage.json"} <= _artifacts(client, reused)
    record = Path(client.download_artifacts(reused, "lineage/lineage.json", str(tmp_path / "dl")))
    assert json.loads(record.read_text(encoding="utf-8"))["outputs"]["sha256"] == \
        before.data.tags["mlops_kit.outputs.sha256"] == tags["mlops_kit.outputs.sha256"]


def test_a_miss_names_what_changed_and_cosmetic_edits_still_reuse(make: Stage) -> None:
    """Point 4: one line naming the difference from the latest FINISHED run; markdown is not code (point 1)."""
    make.run("-p", "raw_file", "raw.txt", "-p", "seed", "7")
    done, _ = make.run("-p", "raw_file", "raw.txt", "-p", "seed", "8")
    assert re.fullmatch(r"no reuse: parameter seed: 7 -> 8 \(since run \w+, .+ UTC\); executing the notebook",
                        _no_reuse_line(done))
    (make.work / "raw.txt").write_text("1\n3\n", encoding="utf-8")
    done, _ = make.run("-p", "raw_file", "raw.txt", "-p", "seed", "8")
    assert "no reuse: input raw_file changed (sha256 " in _no_reuse_line(done)
    edited = nbformat.read(str(make.notebook), as_version=4)
    edited.cells[2].source += "\nprint('one more line')"
    make.notebook = make.work / "make.ipynb"
    nbformat.write(edited, str(make.notebook))
    done, executed = make.run("-p", "raw_file", "raw.txt", "-p", "seed", "8")
    assert "no reuse: notebook code changed (cell 3) (since run" in _no_reuse_line(done)
    edited.cells[0].source = "# the same code, another title"
    edited.cells[2].outputs = [nbformat.v4.new_output("stream", text="old output\n")]
    nbformat.write(edited, str(make.notebook))
    done, _ = make.run("-p", "raw_file", "raw.txt", "-p", "seed", "8")
    assert _reused_from(done) == executed, done.stdout


def test_reuse_is_opt_in_and_mlops_reuse_never_forces_execution(make: Stage) -> None:
    """Point 2: without --reuse nothing is looked up; MLOPS_REUSE=never wins over --reuse."""
    _, origin = make.run("-p", "raw_file", "raw.txt")
    done, _ = make.run("-p", "raw_file", "raw.txt", reuse=False)
    assert "reused run" not in done.stdout and "no reuse" not in done.stdout
    done, run_id = make.run("-p", "raw_file", "raw.txt", env=env_with(MLOPS_REUSE="never"))
    assert "reuse off: MLOPS_REUSE=never; executing the notebook" in done.stdout
    assert "mlops_kit.reused_from" not in make.get(run_id).data.tags
    done, _ = make.run("-p", "raw_file", "raw.txt")
    assert _reused_from(done) in {origin, run_id}
    output = make.work / "typo" / "make_out.ipynb"  # MLOPS_REUSE=off is not "never": refused, nothing runs
    typo = run_nb("--venv", str(make.venv), "--notebook", str(make.notebook), "--output", str(output), "--stage",
                  "make", "--experiment", make.experiment, "--reuse", "-p", "raw_file", "raw.txt",
                  env=env_with(MLOPS_REUSE="off"), cwd=make.work)
    assert typo.returncode == 2 and "MLOPS_REUSE='off': choose one of auto, never" in one_error_line(typo.stderr)
    assert not output.parent.exists()


def test_never_a_wrong_reuse(make: Stage, venv_small: Path) -> None:
    """Point 6: failed or killed runs, and runs whose artifacts are missing or changed, are never origins: the run
    executes and says why."""
    use = Stage(venv_small, make.work, None, "reuse", NOTEBOOKS / "chain_use.ipynb", stage="use")
    shutil.copytree(NOTEBOOKS, make.work / "inputs")  # any folder: the notebook fails before reading it
    use.run("-p", "input_dir", "inputs", code=5)  # api_token missing: the notebook fails
    done, _ = use.run("-p", "input_dir", "inputs", code=5)
    assert _no_reuse_line(done).startswith("no reuse: no earlier FINISHED run of stage 'use'")
    _, killed = make.run("-p", "raw_file", "raw.txt")
    make.client().set_terminated(killed, "KILLED")
    done, second = make.run("-p", "raw_file", "raw.txt")
    assert _reused_from(done) is None and "no reuse: " in done.stdout
    stored = _stored(make, second, "outputs/numbers.txt")
    stored.unlink()
    done, third = make.run("-p", "raw_file", "raw.txt")
    assert _reused_from(done) is None
    assert f"no reuse: run {second} " in done.stdout and "had this key but its artifact outputs/numbers.txt is " \
        "missing; executing the notebook" in done.stdout
    stored = _stored(make, third, "outputs/numbers.txt")
    stored.write_text("9\n", encoding="utf-8")
    done, _ = make.run("-p", "raw_file", "raw.txt")
    assert "had this key but its artifact outputs/numbers.txt does not match the sha256 its run recorded" \
        in done.stdout


def test_a_replay_of_a_reused_run_replays_its_origin_and_a_disproved_run_is_never_an_origin(
        make: Stage, tmp_path: Path, replay_venv_root: Path) -> None:
    """Point 6: replay_run.py on a reused run replays the run that executed; a run a replay found not reproduced
    (unseeded numbers) is refused as an origin."""
    _, origin = make.run("-p", "raw_file", "raw.txt")
    done, reused = make.run("-p", "raw_file", "raw.txt")
    assert _reused_from(done) == origin
    replay = run_script("replay_run.py", reused, "--tracking-uri", make.store, "--venv-root",
                        str(replay_venv_root), "--workdir", str(tmp_path / "replay1"), cwd=tmp_path)
    assert replay.returncode == 0, replay.stdout[-2000:] + replay.stderr[-2000:]
    assert f"run {reused} (make) reused run {origin}, which executed the notebook: replaying {origin}" in replay.stdout
    _, unseeded = make.run("-p", "raw_file", "raw.txt", "-p", "seed", "null")
    replay = run_script("replay_run.py", unseeded, "--tracking-uri", make.store, "--venv-root",
                        str(replay_venv_root), "--workdir", str(tmp_path / "replay2"), cwd=tmp_path)
    assert replay.returncode == 8, replay.stdout[-2000:] + replay.stderr[-2000:]
    done, _ = make.run("-p", "raw_file", "raw.txt", "-p", "seed", "null")
    assert _reused_from(done) is None
    assert re.search(rf"no reuse: run {unseeded} \(.+\) had this key but its replay \w+ ended 'not reproduced'; "
                     "executing the notebook", done.stdout), done.stdout


def test_content_decides_and_a_rotated_secret_changes_nothing(make: Stage, venv_small: Path) -> None:
    """Point 5: an upstream stage executed again with byte-identical outputs, fetched into another folder, leaves
    the downstream key unchanged; a secret is a credential, not an input."""
    use = Stage(venv_small, make.work, None, "reuse", NOTEBOOKS / "chain_use.ipynb", stage="use")
    make.run("-p", "raw_file", "raw.txt", "-p", "seed", "3")
    shutil.copytree(make.work / "out" / "make_outputs", make.work / "fetched1")
    _, origin = use.run("-p", "input_dir", "fetched1", "-p", "api_token", "first-token-value")
    make.run("-p", "raw_file", "raw.txt", "-p", "seed", "3", out="again", env=env_with(MLOPS_REUSE="never"))
    shutil.copytree(make.work / "again" / "make_outputs", make.work / "fetched2")
    done, _ = use.run("-p", "input_dir", "fetched2", "-p", "api_token", "rotated-token-value", out="out2")
    assert _reused_from(done) == origin, done.stdout
    assert "first-token-value" not in (make.work / "out2" / "use_out.ipynb").read_text(encoding="utf-8")


def test_two_identical_runs_at_once_both_finish(make: Stage) -> None:
    """Point 6: nothing waits on the other: both execute (or one reuses the other), both end FINISHED."""
    processes = [subprocess.Popen(
        [str(TOOLKIT_PYTHON), str(SCRIPTS / "run_notebook.py"), "--venv", str(make.venv), "--notebook",
         str(make.notebook), "--output", str(make.work / f"o{i}" / "make_out.ipynb"), "--stage", "make",
         "--experiment", make.experiment, "--reuse", "-p", "raw_file", "raw.txt"],
        cwd=make.work, env=env_with(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in (1, 2)]
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, out + err
    runs = make.client().search_runs([make.client().get_experiment_by_name("reuse").experiment_id])
    assert len(runs) == 2 and {r.info.status for r in runs} == {"FINISHED"}
