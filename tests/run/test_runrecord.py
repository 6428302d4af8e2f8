"""mlops_kit.run.runrecord: where a run is logged, what it logs (masked, clipped, safe keys), its manifest."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from helpers import run_record
from mlops_kit.core.errors import BadInput
from mlops_kit.run import runrecord


def test_default_target_is_absolute_sqlite_with_artifacts_next_to_it(tmp_path: Path) -> None:
    target = runrecord.resolve_target(None, None, env={}, cwd=tmp_path)
    assert target.uri == f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    assert target.experiment == "mlops_kit"
    assert target.artifact_location == (tmp_path / "mlruns" / "mlops_kit").as_uri()


def test_target_precedence(tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": "http://env:5000", "MLFLOW_EXPERIMENT_NAME": "from env",
           "GO_PIPELINE_NAME": "pipe"}
    assert runrecord.resolve_target("http://opt:1", "opt", env=env).uri == "http://opt:1"
    assert runrecord.resolve_target(None, None, env=env) == runrecord.Target("http://env:5000", "from env", None)
    assert runrecord.resolve_target(None, None, env={"GO_PIPELINE_NAME": "pipe"}, cwd=tmp_path).experiment == "pipe"
    got = runrecord.resolve_target("sqlite:///sub dir/x.db", "My exp/1", env={}, cwd=tmp_path)
    assert got.uri == f"sqlite:///{(tmp_path / 'sub dir' / 'x.db').as_posix()}"
    assert got.artifact_location == (tmp_path / "sub dir" / "mlruns" / "My_exp_1").as_uri()
    absolute = runrecord.resolve_target(f"sqlite:///{tmp_path / 'a.db'}", None, env={})
    assert absolute.uri == f"sqlite:///{(tmp_path / 'a.db').as_posix()}"


@pytest.mark.parametrize(("uri", "experiment"), [("not a uri", None), ("http://x:1", "  ")])
def test_bad_target(uri: str, experiment: str | None) -> None:
    with pytest.raises(BadInput):
        runrecord.resolve_target(uri, experiment, env={})


@pytest.mark.parametrize(("key", "expected"), [
    ("alpha", "alpha"), ("cfg.opt.lr", "cfg.opt.lr"), ("odd key!", "odd key_"), ("a/b", "a_b"), ("C:\\x", "C__x"),
    ("..", "_.."), (".", "_."), ("../up", "_.._up"), ("", "_"), ("ñandú", "_and_"), ("k" * 300, "k" * 250),
])
def test_safe_key(key: str, expected: str) -> None:
    assert runrecord.safe_key(key) == expected


def test_loggable_params_mask_clip_and_deduplicate() -> None:
    warnings: list[str] = []
    got = runrecord.loggable_params(
        {"stage": "train", "python_version": "3.12.1"},
        {"stage": "mine", "cfg": {"odd key!": 1, "odd key?": 2, "token": "abc"}, "long": "x" * 7000,
         "items": [1, "a"], "none": None, "db_password": None},
        warn=warnings.append)
    assert got["stage"] == "train" and got["stage_2"] == "mine"
    assert got["cfg.odd key_"] == "1" and got["cfg.odd key__2"] == "2"
    assert got["cfg.token"] == "***" and got["items"] == '[1, "a"]' and got["none"] == "None"
    assert got["db_password"] == "None"  # nothing to hide
    assert len(got["long"]) == runrecord.MAX_PARAM_VALUE and got["long"].endswith("chars]")
    assert any("'stage' is logged to MLflow as 'stage_2'" in w for w in warnings)


def test_clip_marks_the_cut() -> None:
    assert runrecord.clip("abc", 10) == "abc"
    clipped = runrecord.clip("x" * 100, 60)
    assert len(clipped) == 60 and "truncated" in clipped


def test_gocd_context_only_named_variables() -> None:
    env = {"GO_PIPELINE_NAME": "p", "GO_PIPELINE_COUNTER": "3", "GO_REVISION": "abc", "GO_REVISION_MY_REPO": "def",
           "GO_SERVER_URL": "https://go:8154/go", "GO_DB_PASSWORD": "s3cret", "GO_ENVIRONMENT_NAME": "x",
           "PATH": "/bin", "GO_JOB_NAME": ""}
    assert runrecord.gocd_context(env) == {"GO_PIPELINE_NAME": "p", "GO_PIPELINE_COUNTER": "3",
                                          "GO_SERVER_URL": "https://go:8154/go", "GO_REVISION": "abc",
                                          "GO_REVISION_MY_REPO": "def"}
    assert runrecord.pipeline_key(env) == "p/3"
    assert runrecord.pipeline_key({"GO_PIPELINE_NAME": "p"}) is None
    assert runrecord.pipeline_key({"GO_PIPELINE_NAME": "it's", "GO_PIPELINE_COUNTER": "1"}) == "it_s/1"
    rehearsal = {**env, "MLOPS_KIT_PIPELINE_ORIGIN": "local-0123456789"}
    assert runrecord.pipeline_key(rehearsal) == "p/3 local-0123456789"  # never joins GoCD's run #3


def test_read_metrics(tmp_path: Path) -> None:
    warnings: list[str] = []
    (tmp_path / "metrics.json").write_text(json.dumps(
        {"acc": 0.9, "n": 3, "nested": {"f1": 0.5}, "ok": True, "name": "x", "list": [1], "odd key!": 1.5}))
    got = runrecord.read_metrics(tmp_path, since=time.time(), warn=warnings.append)
    assert got == {"acc": 0.9, "n": 3.0, "nested.f1": 0.5, "odd key_": 1.5}
    assert len(warnings) == 3 and all("skipped" in w for w in warnings)


def test_read_metrics_missing_stale_broken(tmp_path: Path) -> None:
    warnings: list[str] = []
    assert runrecord.read_metrics(tmp_path, since=time.time(), warn=warnings.append) == {}
    path = tmp_path / "metrics.json"
    path.write_text('{"acc": 1}')
    old = time.time() - 3600
    os.utime(path, (old, old))
    assert runrecord.read_metrics(tmp_path, since=time.time(), warn=warnings.append) == {}
    assert "older than this run" in warnings[-1]
    path.write_text("{not json")
    assert runrecord.read_metrics(tmp_path, since=time.time(), warn=warnings.append) == {}
    path.write_text("[1, 2]")
    assert runrecord.read_metrics(tmp_path, since=time.time(), warn=warnings.append) == {}
    assert "not readable as JSON" in warnings[-2] and "expected a JSON object" in warnings[-1]


def test_manifest_round_trip(tmp_path: Path) -> None:
    record = run_record("http://x:1", metrics={"a": 1.0, "nan": float("nan")}, files=[["/a b/c.ipynb", ""]])
    path = runrecord.manifest_path(tmp_path / "out.ipynb")
    assert path.name == "out.mlops_run.json"
    runrecord.save_manifest(record, path)
    back = runrecord.load_manifest(path)
    assert back.params == record.params and back.files == record.files and back.metrics["a"] == 1.0
    assert back.metrics["nan"] != back.metrics["nan"]  # NaN survives as NaN


@pytest.mark.parametrize(("text", "message"), [("{not json", "not a readable run manifest"),
                                               ('{"schema": 2}', "not a run manifest"), ("[]", "not a run manifest")])
def test_bad_manifest(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m.json"
    path.write_text(text)
    with pytest.raises(BadInput, match=message):
        runrecord.load_manifest(path)
    with pytest.raises(BadInput, match="manifest not found"):
        runrecord.load_manifest(tmp_path / "none.json")


def test_sqlite_file_is_the_one_parser_of_sqlite_uris() -> None:
    assert runrecord.sqlite_file("sqlite:///mlflow.db") == Path("mlflow.db")
    assert runrecord.sqlite_file("sqlite:///C:/a b/mlflow.db") == Path("C:/a b/mlflow.db")
    assert runrecord.sqlite_file("sqlite:////abs/mlflow.db") == Path("/abs/mlflow.db")
    for other in ("sqlite:///:memory:", "sqlite://", "http://host:5000", "file:///tmp/mlruns", "mlruns"):
        assert runrecord.sqlite_file(other) is None
