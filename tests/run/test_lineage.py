"""mlops_kit.run.lineage: the inputs a run's parameters name, their hashes, producers and masked names."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

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
    assert [(lineage.param_name(i["param"]), i["path"]) for i in found] == [
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
    assert [f["path"] for f in tree.files] == ["sub/f"] and "a link back" in tree.excluded[0]


def test_hash_inputs_records_problems_and_warns(tmp_path: Path) -> None:
    (tmp_path / "raw.csv").write_bytes(b"1")
    record = lineage.new_record({"raw": "raw.csv", "token": "s3cret"}, cwd=tmp_path, output_dir=tmp_path / "out",
                          excluded=[], python="3.10.13", notebook="nb.ipynb", source_notebook="source/x.ipynb",
                          parameters="params/x.params.yaml", masked={"raw": "raw.csv", "token": "***"})
    (tmp_path / "raw.csv").unlink()
    warnings: list[str] = []
    lineage.hash_inputs(record, warn=warnings.append)
    assert record["masked"] == ["token"] and record["inputs"][0]["kind"] == "missing"
    assert "raw.csv does not exist" in warnings[0] and "cannot verify" in warnings[0]


def test_producers_are_matched_by_content_latest_run_first_same_name_preferred() -> None:
    old = {"outputs": {"files": [{"path": "raw.csv", "sha256": "s1"}]}}
    new = {"outputs": {"files": [{"path": "copy.csv", "sha256": "s1"}, {"path": "sub/raw.csv", "sha256": "s1"}]}}
    index = lineage.producer_index([("old", 1, old), ("new", 2, new)])
    record = {"inputs": [{"files": [{"path": "raw.csv", "sha256": "s1"}, {"path": "other", "sha256": "s2"}]}]}
    lineage.name_producers(record, index)
    first, second = record["inputs"][0]["files"]
    assert first["producer"] == {"run_id": "new", "artifact": "outputs/sub/raw.csv"} and "producer" not in second
    assert lineage.producers_of(record["inputs"][0]) == ["new"]


def test_masked_names_are_what_p_can_set() -> None:
    masked = {"db_password": "***", "cfg": {"token": "***", "lr": 1}, "urls": ["https://***@host/x", "ok"]}
    assert lineage.masked_names(masked) == ["cfg.token", "db_password", "urls"]
