"""mlops_kit.artifacts: GoCD artifact rules (publish, wildcards), locally."""

from __future__ import annotations

from pathlib import Path

from helpers_gocd import write_tree
from mlops_kit import artifacts, gocd


def _published(artifact: gocd.Artifact, root: Path) -> list[str]:
    return sorted(dest for _, dest in artifacts.artifact_targets(artifact, root))


def test_artifact_src_dest_rules_follow_gocd(tmp_path: Path) -> None:
    write_tree(tmp_path, ["out/model.pkl", "out/data/a.csv", "test/a/b/a.log", "test/x.log", "test/a/keep.txt"])
    assert _published(gocd.Artifact("out/model.pkl", "pkg", 1), tmp_path) == ["pkg/model.pkl"]
    assert _published(gocd.Artifact("out/data", "", 1), tmp_path) == ["data"]
    assert _published(gocd.Artifact("test/**/*/a.log", "logs", 1), tmp_path) == ["logs/a/b/a.log"]
    assert _published(gocd.Artifact("**/*.log", "", 1), tmp_path) == ["test/a/b/a.log", "test/x.log"]
    assert _published(gocd.Artifact("test/*.log", "logs", 1), tmp_path) == ["logs/x.log"]
    assert _published(gocd.Artifact("nothing/here", "", 1), tmp_path) == []


def test_publish_copies_folders_and_fails_a_passing_job_on_a_missing_source(tmp_path: Path) -> None:
    write_tree(tmp_path / "w", ["out/data/a.csv", "out/data/sub/b.csv"])
    job = gocd.Job("j", (), (gocd.Artifact("out/data", "d", 1), gocd.Artifact("missing.txt", "", 2)), (), (), 1)
    lines: list[str] = []
    assert not artifacts.publish_artifacts(job, workdir=tmp_path / "w", target=tmp_path / "store", job_passed=True,
                                          echo=lines.append)
    assert (tmp_path / "store/d/data/sub/b.csv").read_text() == "out/data/sub/b.csv"
    assert any("cannot match any resource" in line for line in lines)
    assert artifacts.publish_artifacts(job, workdir=tmp_path / "w", target=tmp_path / "s2", job_passed=False,
                                      echo=lines.append) is True  # failed job: stays failed, not 'more failed'
