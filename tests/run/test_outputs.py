"""mlops_kit.run.outputs: where a run writes, refused before anything runs when unusable or when it holds the store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlops_kit.core.errors import BadInput
from mlops_kit.run import outputs, store


def _target(folder: Path) -> store.Target:
    return store.resolve_target(f"sqlite:///{folder / 'mlflow.db'}", "e")


def test_companion_files_are_named_after_the_output(tmp_path: Path) -> None:
    files = outputs.run_files(tmp_path / "out" / "train_out.ipynb", None, "train")
    assert files.output_dir == tmp_path / "out" / "train_outputs"
    assert (files.html.name, files.params_copy.name, files.manifest.name, files.lock.name) == (
        "train_out.html", "train_out.params.yaml", "train_out.mlops_run.json", ".train_out.mlops_run.lock")


@pytest.mark.parametrize(("output_dir", "what"), [(".", "tracking store"), ("out", "executed notebook"),
                                                 ("venvs", "venv"), ("mlruns/e/x", "inside the tracking store")])
def test_an_output_folder_may_not_swallow_what_the_run_logs(tmp_path: Path, output_dir: str, what: str,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    files = outputs.run_files(Path("out/x.ipynb"), Path(output_dir), "s")
    with pytest.raises(BadInput, match=what):
        outputs.check(files, target=_target(tmp_path), venv=tmp_path / "venvs" / "v")


def test_a_remote_store_only_guards_the_working_folders_mlruns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    remote, venv = store.resolve_target("http://mlflow.example:5000", "e"), tmp_path.parent / "venvs" / "v"
    outputs.check(outputs.run_files(Path("out/x.ipynb"), Path("data"), "s"), target=remote, venv=venv)
    (tmp_path / "mlruns").mkdir()
    with pytest.raises(BadInput, match="tracking store"):
        outputs.check(outputs.run_files(Path("out/x.ipynb"), Path("."), "s"), target=remote, venv=venv)


def test_folders_are_made_or_refused(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    ok = outputs.run_files(tmp_path / "a" / "b" / "x.ipynb", None, "s")
    outputs.check(ok, target=_target(tmp_path / "store"), venv=tmp_path / "v")
    assert not (tmp_path / "a").exists(), "checking creates nothing"
    outputs.make_folders(ok)
    assert ok.output.parent.is_dir() and ok.output_dir.is_dir() and os.listdir(ok.output_dir) == []
    for output in (tmp_path / "file" / "x.ipynb", tmp_path / "file" / "deeper" / "x.ipynb"):
        with pytest.raises(BadInput, match="is a file, not a folder"):
            outputs.check(outputs.run_files(output, None, "s"), target=_target(tmp_path), venv=tmp_path / "v")


def test_one_live_run_per_output(tmp_path: Path) -> None:
    files = outputs.run_files(tmp_path / "x.ipynb", None, "s")
    assert not outputs.runner_alive(files)
    with outputs.claimed(files):
        assert outputs.runner_alive(files)
        with pytest.raises(BadInput, match="another run_notebook.py is writing this output"):
            with outputs.claimed(files):
                pass
    assert not outputs.runner_alive(files)


def test_a_killed_reuses_staging_is_removed_by_the_next_run_of_that_output_only(tmp_path: Path) -> None:
    """kill -9 during a reuse's download leaves its staging folder; the next run of the same output (holding its
    lock) removes it, and nothing that merely looks alike: another output's staging, a user's folder, a file."""
    files = outputs.run_files(tmp_path / "train_out.ipynb", None, "train")
    other = outputs.run_files(tmp_path / "train_out.ipynb.bak", None, "train")
    with outputs.claimed(files):
        left = outputs.reuse_staging(files)
        (left / "outputs").mkdir()
        (left / "outputs" / "model.joblib").write_bytes(b"x" * 1000)
    with outputs.claimed(other):
        others = outputs.reuse_staging(other)
    alike = [tmp_path / ".mlops_kit-reuse-train_out.ipynb-mine", tmp_path / ".mlops_kit-reuse-train_out.ipynb-ABCDEFGH"]
    for folder in alike:
        folder.mkdir()
    a_file = tmp_path / ".mlops_kit-reuse-train_out.ipynb-abcdefgh"
    a_file.write_text("a user's file", encoding="utf-8")
    with outputs.claimed(files):
        assert outputs.remove_stale_staging(files) == [left]
        fresh = outputs.reuse_staging(files)
    assert not left.exists() and fresh.is_dir() and others.is_dir() and all(f.is_dir() for f in alike)
    assert a_file.read_text(encoding="utf-8") == "a user's file"
