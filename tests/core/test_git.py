"""mlops_kit.core.git: what the toolkit asks git, and the GoCD revision fallback outside a checkout."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from mlops_kit.core import git


def test_git_fields_fall_back_to_the_gocd_material_revision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job working on a copy (no .git) still records the commit GoCD says it built."""
    monkeypatch.setenv("GO_REVISION_REPO", "0badc0ffee")
    monkeypatch.setenv("GO_MATERIAL_BRANCH_REPO", "main")
    info = git.source_info(tmp_path)
    assert (info.commit, info.branch, info.dirty) == ("0badc0ffee", "main", "unknown")
    monkeypatch.delenv("GO_REVISION_REPO")
    assert git.source_info(tmp_path).commit == "unknown"


def test_a_notebook_the_repo_ignores_is_not_that_repos_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rehearsal's working copy lives under the repo's ignored .pipeline/: its state is not the repo's."""
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / ".gitignore").write_text(".pipeline/\n", encoding="utf-8")
    copy = tmp_path / ".pipeline" / "work" / "nb.ipynb"
    copy.parent.mkdir(parents=True)
    copy.write_text("{}", encoding="utf-8")
    monkeypatch.setenv("GO_REVISION", "cafe")
    info = git.source_info(copy)
    assert (info.commit, info.dirty, info.root) == ("cafe", "unknown", None)
    assert git.source_info(tmp_path / ".gitignore").root == tmp_path.resolve()


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
    info = git.source_info(repo / "nb.ipynb")
    assert (info.commit, info.branch, info.dirty) == (_git(repo, "rev-parse", "HEAD"), "main", "False")
    assert info.root is not None and info.root.resolve() == repo.resolve()
    (repo / "untracked.txt").write_text("x")
    assert git.source_info(repo / "nb.ipynb").dirty == "False"  # untracked files do not count
    (repo / "nb.ipynb").write_text('{"changed": 1}')
    assert git.source_info(repo / "nb.ipynb").dirty == "True"


def test_git_info_outside_repo_and_without_git(tmp_path: Path, git_missing: None) -> None:
    assert git.source_info(tmp_path) == git.SourceInfo()


def test_git_info_outside_any_repo(tmp_path: Path) -> None:
    assert git.source_info(tmp_path / "x.ipynb").commit == "unknown"
