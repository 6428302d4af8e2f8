"""mlops_kit.rehearsal.workspace: a job's working copy holds what a checkout would."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers_gocd import write_tree
from mlops_kit.core.errors import BadInput
from mlops_kit.rehearsal import workspace


def test_source_files_use_git_and_skip_ignored_and_state(tmp_path: Path) -> None:
    write_tree(tmp_path, ["a.txt", "ignored.log", "sub/b.txt", ".pipeline/work/x.txt"])
    (tmp_path / ".gitignore").write_text("*.log\n", encoding="utf-8")
    os.system(f"git -C '{tmp_path}' init -q")
    assert sorted(workspace.source_files(tmp_path, skip=tmp_path / ".pipeline")) == [".gitignore", "a.txt",
                                                                                      "sub/b.txt"]


def test_source_files_without_git_is_a_filtered_copy(tmp_path: Path, git_missing: None) -> None:
    repo = tmp_path / "repo"
    write_tree(repo, ["a.txt", ".venv/bin/python", "x/__pycache__/m.pyc", "out/y", "mlflow.db", "keep/z.txt"])
    assert sorted(workspace.source_files(repo)) == ["a.txt", "keep/z.txt"]


def test_a_working_copy_lands_under_the_materials_dest_and_is_never_reused(tmp_path: Path) -> None:
    write_tree(tmp_path / "repo", ["a.txt", "sub/b.txt"])
    workspace.make_workdir(tmp_path / "w", tmp_path / "repo", ["a.txt", "sub/b.txt"], "src")
    assert (tmp_path / "w" / "src" / "sub" / "b.txt").read_text() == "sub/b.txt"
    with pytest.raises(BadInput, match="working directory already exists"):
        workspace.make_workdir(tmp_path / "w", tmp_path / "repo", [], "")
