"""mlops_kit.rehearsal.artifacts: GoCD artifact rules (publish, wildcards), locally."""

from __future__ import annotations

from pathlib import Path

from helpers_gocd import write_tree
from mlops_kit.rehearsal import artifacts, gocd


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


def test_what_gocd_leaves_to_run_time_fails_the_job_with_gocds_words(tmp_path: Path) -> None:
    """Artifact src is matched under the working directory only; a dest leading out of the job's artifact folder is
    refused as GoCD's server refuses the upload."""
    write_tree(tmp_path, ["w/out/x.txt", "secret.txt"])
    for artifact, said in ((gocd.Artifact("../secret.txt", "", 1), "The rule [../secret.txt] cannot match any "
                                                                     "resource under"),
                           (gocd.Artifact(str(tmp_path / "secret.txt"), "", 1), "cannot match any resource"),
                           (gocd.Artifact("out/x.txt", "../../up", 1), "Artifact path [../../up/x.txt] is illegal. "
                                                                       "Path must be inside the artifact directory.")):
        lines: list[str] = []
        job = gocd.Job("j", (), (artifact,), (), (), 1)
        target = tmp_path / "store" / "s" / "1" / "j"
        assert not artifacts.publish_artifacts(job, workdir=tmp_path / "w", target=target, job_passed=True,
                                               echo=lines.append)
        assert any(said in line for line in lines), lines
    assert not (tmp_path / "store" / "secret.txt").exists() and not (tmp_path / "store" / "s" / "up").exists()
