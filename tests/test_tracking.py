"""Tracking: URI/experiment precedence, MLflow-safe params, GoCD tags, metrics.json, git info, the manifest, and
start/finish against the real MLflow server (no kernel)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from conftest import free_port
from mlops_kit import tracking
from mlops_kit.errors import BadInput, TrackingError


# --- where ---------------------------------------------------------------------------------------------------

def test_default_target_is_absolute_sqlite_with_artifacts_next_to_it(tmp_path: Path) -> None:
    target = tracking.resolve_target(None, None, env={}, cwd=tmp_path)
    assert target.uri == f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    assert target.experiment == "mlops_kit"
    assert target.artifact_location == (tmp_path / "mlruns" / "mlops_kit").as_uri()


def test_target_precedence(tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": "http://env:5000", "MLFLOW_EXPERIMENT_NAME": "from env",
           "GO_PIPELINE_NAME": "pipe"}
    assert tracking.resolve_target("http://opt:1", "opt", env=env).uri == "http://opt:1"
    assert tracking.resolve_target(None, None, env=env) == tracking.Target("http://env:5000", "from env", None)
    assert tracking.resolve_target(None, None, env={"GO_PIPELINE_NAME": "pipe"}, cwd=tmp_path).experiment == "pipe"
    got = tracking.resolve_target("sqlite:///sub dir/x.db", "My exp/1", env={}, cwd=tmp_path)
    assert got.uri == f"sqlite:///{(tmp_path / 'sub dir' / 'x.db').as_posix()}"
    assert got.artifact_location == (tmp_path / "sub dir" / "mlruns" / "My_exp_1").as_uri()
    absolute = tracking.resolve_target(f"sqlite:///{tmp_path / 'a.db'}", None, env={})
    assert absolute.uri == f"sqlite:///{(tmp_path / 'a.db').as_posix()}"


@pytest.mark.parametrize(("uri", "experiment"), [("not a uri", None), ("http://x:1", "  ")])
def test_bad_target(uri: str, experiment: str | None) -> None:
    with pytest.raises(BadInput):
        tracking.resolve_target(uri, experiment, env={})


# --- what -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("key", "expected"), [
    ("alpha", "alpha"), ("cfg.opt.lr", "cfg.opt.lr"), ("odd key!", "odd key_"), ("a/b", "a_b"), ("C:\\x", "C__x"),
    ("..", "_.."), (".", "_."), ("../up", "_.._up"), ("", "_"), ("ñandú", "_and_"), ("k" * 300, "k" * 250),
])
def test_safe_key(key: str, expected: str) -> None:
    assert tracking.safe_key(key) == expected


def test_loggable_params_mask_clip_and_deduplicate() -> None:
    warnings: list[str] = []
    got = tracking.loggable_params(
        {"stage": "train", "python_version": "3.12.1"},
        {"stage": "mine", "cfg": {"odd key!": 1, "odd key?": 2, "token": "abc"}, "long": "x" * 7000,
         "items": [1, "a"], "none": None, "db_password": None},
        warn=warnings.append)
    assert got["stage"] == "train" and got["stage_2"] == "mine"
    assert got["cfg.odd key_"] == "1" and got["cfg.odd key__2"] == "2"
    assert got["cfg.token"] == "***" and got["items"] == '[1, "a"]' and got["none"] == "None"
    assert got["db_password"] == "None"  # nothing to hide
    assert len(got["long"]) == tracking.MAX_PARAM_VALUE and got["long"].endswith("chars]")
    assert any("'stage' is logged to MLflow as 'stage_2'" in w for w in warnings)


def test_clip_marks_the_cut() -> None:
    assert tracking.clip("abc", 10) == "abc"
    clipped = tracking.clip("x" * 100, 60)
    assert len(clipped) == 60 and "truncated" in clipped


def test_gocd_context_only_named_variables() -> None:
    env = {"GO_PIPELINE_NAME": "p", "GO_PIPELINE_COUNTER": "3", "GO_REVISION": "abc", "GO_REVISION_MY_REPO": "def",
           "GO_SERVER_URL": "https://go:8154/go", "GO_DB_PASSWORD": "s3cret", "GO_ENVIRONMENT_NAME": "x",
           "PATH": "/bin", "GO_JOB_NAME": ""}
    assert tracking.gocd_context(env) == {"GO_PIPELINE_NAME": "p", "GO_PIPELINE_COUNTER": "3",
                                          "GO_SERVER_URL": "https://go:8154/go", "GO_REVISION": "abc",
                                          "GO_REVISION_MY_REPO": "def"}
    assert tracking.pipeline_key(env) == "p/3"
    assert tracking.pipeline_key({"GO_PIPELINE_NAME": "p"}) is None
    assert tracking.pipeline_key({"GO_PIPELINE_NAME": "it's", "GO_PIPELINE_COUNTER": "1"}) == "it_s/1"
    rehearsal = {**env, "MLOPS_KIT_PIPELINE_ORIGIN": "local-0123456789"}
    assert tracking.pipeline_key(rehearsal) == "p/3 local-0123456789"  # never joins GoCD's run #3


def test_git_fields_fall_back_to_the_gocd_material_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job working on a copy (no .git) still records the commit GoCD says it built."""
    monkeypatch.setenv("GO_REVISION_REPO", "0badc0ffee")
    monkeypatch.setenv("GO_MATERIAL_BRANCH_REPO", "main")
    info = tracking.git_info(tmp_path)
    assert (info.commit, info.branch, info.dirty) == ("0badc0ffee", "main", "unknown")
    monkeypatch.delenv("GO_REVISION_REPO")
    assert tracking.git_info(tmp_path).commit == "unknown"


def test_a_notebook_the_repo_ignores_is_not_that_repos_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rehearsal's working copy lives under the repo's ignored .pipeline/: its state is not the repo's."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text(".pipeline/\n", encoding="utf-8")
    copy = tmp_path / ".pipeline" / "work" / "nb.ipynb"
    copy.parent.mkdir(parents=True)
    copy.write_text("{}", encoding="utf-8")
    monkeypatch.setenv("GO_REVISION", "cafe")
    info = tracking.git_info(copy)
    assert (info.commit, info.dirty, info.root) == ("cafe", "unknown", None)
    assert tracking.git_info(tmp_path / ".gitignore").root == tmp_path.resolve()


def test_read_metrics(tmp_path: Path) -> None:
    warnings: list[str] = []
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"acc": 0.9, "n": 3, "nested": {"f1": 0.5}, "ok": True, "name": "x", "list": [1], "odd key!": 1.5}))
    got = tracking.read_metrics(tmp_path, since=time.time(), warn=warnings.append)
    assert got == {"acc": 0.9, "n": 3.0, "nested.f1": 0.5, "odd key_": 1.5}
    assert len(warnings) == 3 and all("skipped" in w for w in warnings)


def test_read_metrics_missing_stale_broken(tmp_path: Path) -> None:
    warnings: list[str] = []
    assert tracking.read_metrics(tmp_path, since=time.time(), warn=warnings.append) == {}
    path = tmp_path / "metrics.json"
    path.write_text('{"acc": 1}')
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert tracking.read_metrics(tmp_path, since=time.time(), warn=warnings.append) == {}
    assert "older than this run" in warnings[-1]
    path.write_text("{not json")
    assert tracking.read_metrics(tmp_path, since=time.time(), warn=warnings.append) == {}
    path.write_text("[1, 2]")
    assert tracking.read_metrics(tmp_path, since=time.time(), warn=warnings.append) == {}
    assert "not readable as JSON" in warnings[-2] and "expected a JSON object" in warnings[-1]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@e", *args],
                          check=True, capture_output=True, text=True).stdout.strip()


def test_git_info_repo_clean_then_dirty(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "nb.ipynb").write_text("{}")
    _git(repo, "add", ".")
    _git(repo, "commit", "-qm", "x")
    info = tracking.git_info(repo / "nb.ipynb")
    assert (info.commit, info.branch, info.dirty) == (_git(repo, "rev-parse", "HEAD"), "main", "False")
    assert info.root is not None and info.root.resolve() == repo.resolve()
    (repo / "untracked.txt").write_text("x")
    assert tracking.git_info(repo / "nb.ipynb").dirty == "False"  # untracked files do not count
    (repo / "nb.ipynb").write_text('{"changed": 1}')
    assert tracking.git_info(repo / "nb.ipynb").dirty == "True"


def test_git_info_outside_repo_and_without_git(tmp_path: Path, git_missing: None) -> None:
    assert tracking.git_info(tmp_path) == tracking.GitInfo()


def test_git_info_outside_any_repo(tmp_path: Path) -> None:
    assert tracking.git_info(tmp_path / "x.ipynb").commit == "unknown"


# --- manifest ---------------------------------------------------------------------------------------------------

def _record(uri: str, **kw: object) -> tracking.RunRecord:
    base = dict(tracking_uri=uri, experiment="unit tracking", run_name="train",
                params={"stage": "train", "alpha": "0.5"}, tags={"mlflow.runName": "train", "mlops_kit.role": "stage"})
    base.update(kw)
    return tracking.RunRecord(**base)  # type: ignore[arg-type]


def test_manifest_round_trip(tmp_path: Path) -> None:
    record = _record("http://x:1", metrics={"a": 1.0, "nan": float("nan")}, files=[["/a b/c.ipynb", ""]])
    path = tracking.manifest_path(tmp_path / "out.ipynb")
    assert path.name == "out.mlops_run.json"
    tracking.save_manifest(record, path)
    back = tracking.load_manifest(path)
    assert back.params == record.params and back.files == record.files and back.metrics["a"] == 1.0
    assert back.metrics["nan"] != back.metrics["nan"]  # NaN survives as NaN


def test_passwords_in_urls_are_hidden_and_never_stored(tmp_path: Path) -> None:
    assert tracking.hide_password("at https://ana:p@ss:w0rd@host:5000/x and http://h") == \
        "at https://ana:********@host:5000/x and http://h"
    assert tracking.hide_password("sqlite:///C:/a b/mlflow.db") == "sqlite:///C:/a b/mlflow.db"
    assert tracking.without_credentials("https://ana:pw@host:5000/x?y=1") == "https://host:5000/x?y=1"
    assert tracking.without_credentials("http://host:5000") == "http://host:5000"
    path = tmp_path / "m.mlops_run.json"
    record = _record("http://ana:pw@host:5000")
    tracking.save_manifest(record, path)
    assert "pw" not in path.read_text() and tracking.load_manifest(path).tracking_uri == "http://host:5000"
    assert record.tracking_uri == "http://ana:pw@host:5000"  # the run itself still uses them
    with pytest.raises(TrackingError) as err:
        tracking.preflight(f"http://ana:pw@127.0.0.1:{free_port()}")
    assert "ana:********@" in str(err.value) and ":pw@" not in str(err.value)


@pytest.mark.parametrize(("text", "message"), [("{not json", "not a readable run manifest"),
                                               ('{"schema": 2}', "not a run manifest"), ("[]", "not a run manifest")])
def test_bad_manifest(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(BadInput, match=message):
        tracking.load_manifest(path)
    with pytest.raises(BadInput, match="manifest not found"):
        tracking.load_manifest(tmp_path / "none.json")


def test_log_existing_refuses_unfinished_and_logged(tmp_path: Path) -> None:
    path = tmp_path / "m.mlops_run.json"
    tracking.save_manifest(_record("http://x:1"), path)
    with pytest.raises(BadInput, match="never finished"):
        tracking.log_existing(path)
    tracking.save_manifest(_record("http://x:1", status="FINISHED", logged=True, run_id="abc"), path)
    with pytest.raises(BadInput, match="already logged"):
        tracking.log_existing(path)


# --- against the real server ------------------------------------------------------------------------------------

def test_unreachable_server_is_one_tracking_error() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError) as err:
        tracking.start_run(_record(uri))
    assert uri in str(err.value) and "unreachable" in str(err.value)


@pytest.mark.slow
def test_start_and_finish_run_with_odd_values(tmp_path: Path, mlflow_server: str) -> None:
    out = tmp_path / "out dir"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "table.csv").write_text("a\n1\n")
    notebook = tmp_path / "x.ipynb"
    notebook.write_text("{}")
    params = tracking.loggable_params({"stage": "train"}, {f"p{i}": i for i in range(150)} |
                                      {"weird": {"k ey:/x": "v" * 9000}})
    record = _record(mlflow_server, params=params, tags=tracking.loggable_tags({"long": "t" * 9000, "none": None}),
                     files=[[str(notebook), ""], [str(tmp_path / "missing.txt"), "x"]], folders=[[str(out), "outputs"]],
                     metrics={"acc": 0.5, "odd_": 1.0})
    tracking.apply_ids(record, tracking.start_run(record))
    record.status, record.failure = "FAILED", {"failure_kind": "cell-error", "error_value": "e" * 9000}
    record.end_time = int(time.time() * 1000)
    tracking.finish_run(record)
    client = MlflowClient(mlflow_server)
    run = client.get_run(record.run_id)
    assert run.info.status == "FAILED" and len(run.data.params) == 152
    assert len(run.data.params["weird.k ey__x"]) == tracking.MAX_PARAM_VALUE
    assert len(run.data.tags["long"]) == tracking.MAX_TAG_VALUE and "none" not in run.data.tags
    assert run.data.tags["mlops_kit.failure_kind"] == "cell-error"
    assert run.data.metrics == {"acc": 0.5, "odd_": 1.0}
    names = {a.path for a in client.list_artifacts(record.run_id)} | {
        a.path for a in client.list_artifacts(record.run_id, "outputs/sub")}
    assert {"x.ipynb", "outputs", "outputs/sub/table.csv"} <= names


@pytest.mark.slow
def test_parent_run_found_and_reused(mlflow_server: str) -> None:
    key = f"unit-pipe/{time.time_ns()}"
    first = _record(mlflow_server, pipeline_key=key, pipeline_run_name="unit-pipe #1",
                    tags={"mlops_kit.role": "stage", "GO_PIPELINE_NAME": "unit-pipe"})
    second = _record(mlflow_server, pipeline_key=key, run_name="score")
    ids1, ids2 = tracking.start_run(first), tracking.start_run(second)
    assert ids1["parent_run_id"] == ids2["parent_run_id"] is not None
    client = MlflowClient(mlflow_server)
    parent = client.get_run(ids1["parent_run_id"])
    assert parent.data.tags["mlops_kit.role"] == "pipeline" and parent.info.run_name == "unit-pipe #1"
    assert parent.data.tags["GO_PIPELINE_NAME"] == "unit-pipe"
    assert client.get_run(ids2["run_id"]).data.tags["mlflow.parentRunId"] == parent.info.run_id


@pytest.mark.slow
def test_a_failed_stage_keeps_the_parent_failed(mlflow_server: str) -> None:
    key = f"fail-pipe/{time.time_ns()}"
    failed, passed = (_record(mlflow_server, pipeline_key=key, run_name=name) for name in ("train", "report"))
    for record, status in ((failed, "FAILED"), (passed, "FINISHED")):
        tracking.apply_ids(record, tracking.start_run(record))
        record.status, record.end_time = status, int(time.time() * 1000)
        tracking.finish_run(record)
    client = MlflowClient(mlflow_server)
    assert failed.parent_run_id == passed.parent_run_id
    assert client.get_run(passed.run_id).info.status == "FINISHED"
    assert client.get_run(failed.parent_run_id).info.status == "FAILED"


@pytest.mark.slow
def test_parallel_stages_converge_on_one_parent(mlflow_server: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    key = f"race-pipe/{time.time_ns()}"
    records = [_record(mlflow_server, pipeline_key=key, run_name=f"job{i}", tags={"mlops_kit.role": "stage"})
               for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        ids = list(pool.map(tracking.start_run, records))
    assert len({i["parent_run_id"] for i in ids}) == 1
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("unit tracking")
    active = client.search_runs([exp.experiment_id], f"tags.`mlops_kit.pipeline_key` = '{key}'")
    parents = [r.info.run_id for r in active if r.data.tags.get("mlops_kit.role") == "pipeline"]
    assert parents == [ids[0]["parent_run_id"]]


@pytest.mark.slow
def test_log_existing_finishes_the_run_it_started(tmp_path: Path, mlflow_server: str) -> None:
    """The store came back: the run created before it went away is completed, not duplicated."""
    notebook = tmp_path / "late.ipynb"
    notebook.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    files = [[str(notebook), ""], [str(tmp_path / "late.html"), ""]]
    record = _record(mlflow_server, experiment="unit late", files=files, metrics={"m": 2.0},
                     executed_notebook=str(notebook), html=str(tmp_path / "late.html"))
    tracking.apply_ids(record, tracking.start_run(record))
    record.params_logged, record.status = True, "FINISHED"
    manifest = tmp_path / "late.mlops_run.json"
    tracking.save_manifest(record, manifest)
    done = tracking.log_existing(manifest)
    assert done.run_id == record.run_id and tracking.load_manifest(manifest).logged
    client = MlflowClient(mlflow_server)
    run = client.get_run(record.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"m": 2.0}
    assert {a.path for a in client.list_artifacts(record.run_id)} == {"late.ipynb", "late.html"}  # HTML rendered
    exp = client.get_experiment_by_name("unit late")
    assert len(client.search_runs([exp.experiment_id])) == 1


@pytest.mark.slow
def test_html_that_cannot_be_rendered_only_warns(tmp_path: Path, mlflow_server: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """finish_run never renders (the caller did, under its guard); log_existing renders a missing one or warns."""
    notebook = tmp_path / "broken.ipynb"
    notebook.write_text("not a notebook")
    html = tmp_path / "broken.html"
    record = _record(mlflow_server, experiment="unit html", files=[[str(notebook), ""], [str(html), ""]],
                     executed_notebook=str(notebook), html=str(html))
    tracking.apply_ids(record, tracking.start_run(record))
    record.params_logged, record.status = True, "FINISHED"
    manifest = tmp_path / "broken.mlops_run.json"
    tracking.save_manifest(record, manifest)
    assert tracking.log_existing(manifest).logged
    assert "HTML rendering failed" in capsys.readouterr().err and not html.exists()
    assert MlflowClient(mlflow_server).get_run(record.run_id).info.status == "FINISHED"


def test_a_bug_in_the_helper_process_is_one_tracking_error_line() -> None:
    tracker = tracking.Tracker()
    try:
        with pytest.raises(TrackingError) as err:
            tracker.call("no-such-request").result()
        assert "\n" not in str(err.value) and "KeyError" in str(err.value)
        assert "Traceback" not in str(err.value)
    finally:
        tracker.close()


@pytest.mark.slow
def test_log_existing_finds_files_next_to_a_moved_manifest_and_warns_for_missing(
        tmp_path: Path, mlflow_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Downloaded GoCD artifacts: the manifest's folders are another machine's; its neighbours are used."""
    agent = "C:\\go agent\\pipelines\\p\\out"  # written on a Windows agent
    files = [[f"{agent}\\late.ipynb", ""], [f"{agent}\\late.html", ""], [f"{agent}\\late.params.yaml", "params"],
             [f"{agent}\\gone.txt", "environment"]]
    record = _record(mlflow_server, experiment="unit moved", files=files, folders=[[f"{agent}\\ingest_outputs",
                                                                                  "outputs"]],
                     executed_notebook=files[0][0], html=files[1][0], status="FINISHED")
    here = tmp_path / "downloaded"
    (here / "ingest_outputs").mkdir(parents=True)
    (here / "ingest_outputs" / "r.txt").write_text("1")
    (here / "late.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    (here / "late.params.yaml").write_text("a: 1\n")
    manifest = here / "late.mlops_run.json"
    tracking.save_manifest(record, manifest)
    done = tracking.log_existing(manifest)
    err = capsys.readouterr().err
    assert "gone.txt: listed in the manifest but not found" in err and "late.html" not in err
    client = MlflowClient(mlflow_server)
    names = {a.path for a in client.list_artifacts(done.run_id)} | {
        a.path for folder in ("params", "outputs") for a in client.list_artifacts(done.run_id, folder)}
    assert {"late.ipynb", "late.html", "params/late.params.yaml", "outputs/r.txt"} <= names
    assert not any(n.startswith("environment") for n in names)
