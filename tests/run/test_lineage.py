"""mlops_kit.run.lineage: the inputs a run's parameters name, their hashes, producers and masked names, and the
typed record written exactly as lineage/lineage.json has always been (schema 1)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from helpers import REPO_ROOT
from mlops_kit.run import lineage


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_inputs_are_parameters_naming_existing_paths_at_any_depth(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.csv").write_text("a\n1\n")
    (tmp_path / "labels.csv").write_text("y\n")
    out = tmp_path / "out"
    (out / "old").mkdir(parents=True)
    values = {"input_dir": "data", "cfg": {"labels": str(tmp_path / "labels.csv"), "lr": 0.1},
              "files": ["nope.csv", "data/raw.csv"], "db_password_file": "labels.csv", "note": "data" * 2000,
              "output_dir": str(out), "previous": str(out / "old"), "empty": "", "model": "random_forest"}
    found = lineage.find_inputs(values, cwd=tmp_path, output_dir=out)
    assert [(i.name, i.path) for i in found] == [
        ("input_dir", str(tmp_path / "data")), ("cfg.labels", str(tmp_path / "labels.csv")),
        ("files[1]", str(tmp_path / "data" / "raw.csv"))], "secret names, the output folder and non-paths are not"


def test_a_folder_digest_is_sha256sum_of_its_files_sorted_and_the_runs_own_files_are_left_out(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    (folder / "b").mkdir(parents=True)
    (folder / "b" / "x.txt").write_bytes(b"x")
    (folder / "a.txt").write_bytes(b"a")
    (folder / "run_out.ipynb").write_text("{}")  # the run's own executed notebook (and companions)
    (folder / "run_out.params.yaml").write_text("")
    tree = lineage.hash_tree(folder, excluded=[folder / "run_out.*"])
    lines = f"{_sha(b'a')}  a.txt\n{_sha(b'x')}  b/x.txt\n"
    assert tree.sha256 == _sha(lines.encode()) and tree.size == 2 and not tree.error
    assert sorted(Path(p).name for p in tree.excluded) == ["run_out.ipynb", "run_out.params.yaml"]
    assert lineage.hash_tree(folder / "a.txt").sha256 == _sha(b"a")
    too_many = lineage.hash_tree(folder, max_files=1)
    assert too_many.sha256 is None and "more than 1 files" in (too_many.error or "")
    assert lineage.hash_tree(tmp_path / "gone").kind == "missing"


@pytest.mark.skipif(os.name == "nt", reason="symlinks need extra rights on Windows")
def test_a_link_back_up_the_tree_is_hashed_once(tmp_path: Path) -> None:
    (tmp_path / "in" / "sub").mkdir(parents=True)
    (tmp_path / "in" / "sub" / "f").write_bytes(b"f")
    (tmp_path / "in" / "sub" / "loop").symlink_to(tmp_path / "in", target_is_directory=True)
    tree = lineage.hash_tree(tmp_path / "in")
    assert [f.path for f in tree.files] == ["sub/f"] and "a link back" in tree.excluded[0]


def test_hash_inputs_records_problems_and_warns(tmp_path: Path) -> None:
    (tmp_path / "raw.csv").write_bytes(b"1")
    record = lineage.new_record({"raw": "raw.csv", "token": "s3cret"}, cwd=tmp_path, output_dir=tmp_path / "out",
                          excluded=[], python="3.10.13", notebook="nb.ipynb", source_notebook="source/x.ipynb",
                          parameters="params/x.params.yaml", masked={"raw": "raw.csv", "token": "***"})
    (tmp_path / "raw.csv").unlink()
    warnings: list[str] = []
    lineage.hash_inputs(record, warn=warnings.append)
    assert record.masked == ["token"] and record.inputs[0].hashed is not None
    assert record.inputs[0].hashed.kind == "missing"
    assert "raw.csv does not exist" in warnings[0] and "cannot verify" in warnings[0]


def test_producers_are_matched_by_content_latest_run_first_same_name_preferred() -> None:
    def record(inputs: list[lineage.FileEntry], outputs: list[lineage.FileEntry]) -> lineage.LineageRecord:
        hashed = lineage.Input(["raw"], "raw", "/data/raw", lineage.Tree("folder", "d", 1, inputs))
        return lineage.LineageRecord("3.12.1", "nb.ipynb", None, None, [], None, [hashed], [],
                                     lineage.Outputs("/out", lineage.Tree("folder", "d", 1, outputs)))

    old = record([], [lineage.FileEntry("raw.csv", 1, "s1")])
    new = record([], [lineage.FileEntry("copy.csv", 1, "s1"), lineage.FileEntry("sub/raw.csv", 1, "s1")])
    index = lineage.producer_index([("old", 1, old), ("new", 2, new)])
    this = record([lineage.FileEntry("raw.csv", 1, "s1"), lineage.FileEntry("other", 1, "s2")], [])
    lineage.name_producers(this, index)
    first, second = this.inputs[0].hashed.files  # type: ignore[union-attr]
    assert first.producer == lineage.Producer("new", "outputs/sub/raw.csv") and second.producer is None
    assert lineage.producers_of(this.inputs[0]) == ["new"]


def test_masked_names_are_what_p_can_set() -> None:
    masked = {"db_password": "***", "cfg": {"token": "***", "lr": 1}, "urls": ["https://***@host/x", "ok"]}
    assert lineage.masked_names(masked) == ["cfg.token", "db_password", "urls"]


def test_a_record_written_by_an_earlier_version_reads_back_and_writes_the_same_json() -> None:
    manifest = REPO_ROOT / "tests" / "data" / "manifest_schema1.json"  # written by 47d9fbd's code
    written = json.loads(manifest.read_text(encoding="utf-8"))["lineage"]
    record = lineage.LineageRecord.from_json(written)
    assert record.to_json() == written
    assert json.dumps(record.to_json(), indent=1) == json.dumps(written, indent=1), "same keys in the same order"


def test_a_new_record_as_json_keeps_the_schema_1_shape(tmp_path: Path) -> None:
    """Not hashed yet: an input has only param, value, path; outputs is null (what the manifest holds at start)."""
    (tmp_path / "raw.csv").write_bytes(b"1")
    record = lineage.new_record({"raw": "raw.csv"}, cwd=tmp_path, output_dir=tmp_path / "out", excluded=[],
                                python="3.10.13", notebook="nb.ipynb", source_notebook=None,
                                parameters="params/x.params.yaml", masked={"raw": "raw.csv"})
    data = record.to_json()
    assert list(data) == ["schema", "python", "notebook", "source_notebook", "parameters", "masked", "cwd", "inputs",
                          "excluded", "outputs"]
    assert data["inputs"] == [{"param": ["raw"], "value": "raw.csv", "path": str(tmp_path / "raw.csv")}]
    assert data["outputs"] is None and lineage.LineageRecord.from_json(data) == record
    lineage.hash_inputs(record, warn=print)
    assert list(record.to_json()["inputs"][0]) == ["param", "value", "path", "kind", "sha256", "size", "files"]


def test_an_input_path_recorded_on_either_platform_is_a_file_uri() -> None:
    """A Windows agent's manifest uploaded with --log-existing from Linux (and the other way round)."""
    assert lineage.file_uri("C:\\go agent\\data") == "file:///C:/go%20agent/data"
    assert lineage.file_uri("\\\\server\\share\\raw.csv") == "file://server/share/raw.csv"
    assert lineage.file_uri("/srv/data dir") == "file:///srv/data%20dir"
    assert lineage.file_uri("relative/x") == "relative/x"
