"""mlops_kit.rehearsal.gocd: the records a rehearsal runs, their descriptions and the pipeline label."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers_gocd import cruise_xml, parse_xml, py_task, stage_xml
from mlops_kit.core.errors import BadInput
from mlops_kit.rehearsal import gocd


def _labelled(template: str) -> gocd.Pipeline:
    return parse_xml(cruise_xml(stage_xml("a", py_task("pass"))).replace(
        'name="demo"', f'name="demo" labeltemplate="{template}"'))


def test_label_template_tokens() -> None:
    pipeline = _labelled("v${COUNT}-${repo[:7]}-${env:WHO}-${repo}")
    assert gocd.label_for(pipeline, 12, "0123456789abcdef", {"WHO": "me"}) == "v12-0123456-me-0123456789abcdef"


def test_without_git_the_label_says_unversioned_whole() -> None:
    """The example's ``${COUNT}-${repo[:8]}`` used to give ``1-unversio``."""
    assert gocd.label_for(_labelled("${COUNT}-${repo[:8]}"), 1, None, {}) == "1-unversioned"
    assert gocd.label_for(_labelled("${count}-${env:NOPE}"), 2, None, {}) == "2-"


def test_task_descriptions_hide_passwords_in_urls() -> None:
    task = gocd.ExecTask("python", ("run.py", "--tracking-uri", "https://ana:hunter2@mlflow:5000"), None,
                         frozenset({"passed"}), 1)
    assert task.describe() == "python run.py --tracking-uri https://***@mlflow:5000"


def test_select_pipeline_by_name_any_case_or_the_only_one() -> None:
    one = parse_xml(cruise_xml(stage_xml("a", py_task("pass"))))
    two = parse_xml(cruise_xml(stage_xml("a", py_task("pass")), name="other"))
    assert gocd.select_pipeline([one], None) is one
    assert gocd.select_pipeline([one, two], "OTHER") is two
    with pytest.raises(BadInput, match=r"cfg.xml: several pipelines \(demo, other\): choose one with --pipeline"):
        gocd.select_pipeline([one, two], None)
    with pytest.raises(BadInput, match=r"no pipeline named 'x' \(found: demo, other\)"):
        gocd.select_pipeline([one, two], "x")


def test_a_plain_artifact_lands_under_its_dest_by_its_name() -> None:
    assert gocd.Artifact("out/model.pkl", "pkg", 1).published_path() == "pkg/model.pkl"
    assert gocd.Artifact("out/model.pkl", "", 1).published_path() == "model.pkl"
    assert gocd.Artifact("out/*.pkl", "pkg", 1).published_path() is None
    assert gocd.Pipeline("p", "g", "${COUNT}", (), (), gocd.Material("u", "main", None, ""), (), Path("c")).stage(
        "x") is None
