"""mlops_kit.run.runrecord: what a run logs (masked, clipped, safe keys), its manifest (typed, schema 1: a manifest
written by earlier versions still loads, and is written back byte for byte)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from helpers import REPO_ROOT, run_record
from mlops_kit.core.errors import BadInput
from mlops_kit.run import runrecord
from mlops_kit.run.runrecord import RunFile

WRITTEN_BY_MAIN = REPO_ROOT / "tests" / "data" / "manifest_schema1.json"  # a Windows agent's, by 47d9fbd's code


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
    record = run_record("http://x:1", metrics={"a": 1.0, "nan": float("nan")}, files=[RunFile("/a b/c.ipynb")])
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


def test_a_manifest_written_by_an_earlier_version_loads_typed_and_is_written_back_unchanged(tmp_path: Path) -> None:
    record = runrecord.load_manifest(WRITTEN_BY_MAIN)
    agent = "C:\\go agent\\pipelines\\ml"
    assert record.files[2] == RunFile(f"{agent}\\out\\ingest_out.params.yaml", "params")
    assert record.folder("outputs") == Path(f"{agent}\\out\\ingest_outputs") and record.status == "FINISHED"
    assert record.lineage is not None and record.lineage.masked == ["api_token"]
    (data,) = record.lineage.inputs
    assert data.name == "input_dir" and data.hashed is not None and data.hashed.kind == "folder"
    assert [f.producer.run_id if f.producer else None for f in data.hashed.files] == [
        None, "0123456789abcdef0123456789abcdef"]
    assert record.lineage.outputs is not None and record.lineage.outputs.hashed.files[0].path == "clean.csv"
    runrecord.save_manifest(record, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text(encoding="utf-8") == WRITTEN_BY_MAIN.read_text(encoding="utf-8")


@pytest.mark.parametrize(("field", "value", "message"), [
    ("files", [["only one part"]], "field 'files': expected \\[local path, artifact folder\\]"),
    ("status", "DONE", "field 'status': expected one of RUNNING, FINISHED, FAILED, KILLED"),
    ("lineage", {"schema": 7}, "field 'lineage': schema 7"),
    ("lineage", {"schema": 1, "inputs": [{"param": "x", "path": "p"}]}, "field 'lineage': input.param"),
])
def test_a_damaged_manifest_names_the_file_and_field(tmp_path: Path, field: str, value: object,
                                                     message: str) -> None:
    data = json.loads(WRITTEN_BY_MAIN.read_text(encoding="utf-8"))
    data[field] = value
    path = tmp_path / "m.mlops_run.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(BadInput, match=f"{path}: {message}"):
        runrecord.load_manifest(path)
