"""mlops_kit.rehearsal.gocd_rules: what GoCD's server checks when it loads a config, after its schema, with GoCD's
own messages, each pointing at the element's line and column."""

from __future__ import annotations

import pytest

from helpers_gocd import cruise_xml, parse_xml, py_task, refused, stage_xml
from mlops_kit.rehearsal import gocd_rules

_FETCH = '<fetchartifact artifactOrigin="gocd" {attrs} />'
_TWO_STAGES = (stage_xml("a", py_task("pass"), artifacts='<artifact type="build" src="out" />')
               + stage_xml("b", _FETCH + py_task("pass")) + stage_xml("c", py_task("pass")))
_OTHER = '<pipeline name="other"><materials><git url="https://x.invalid/r.git" /></materials>' + stage_xml(
    "s", py_task("pass")) + "</pipeline>"


@pytest.mark.parametrize("attrs, expected", [
    ('pipeline="other" stage="s" job="s" srcdir="out"',
     'Pipeline "demo" tries to fetch artifact from pipeline "other" which is not an upstream pipeline'),
    ('pipeline="nope" stage="a" job="a" srcdir="out"',
     '"demo :: b :: b" tries to fetch artifact from pipeline "nope" which does not exist.'),
    ('pipeline="other/demo" stage="s" job="s" srcdir="out"',
     "Pipeline named 'demo' exists, but is not an ancestor of 'demo' as declared in 'other/demo'."),
    ('stage="nope" job="a" srcdir="out"',
     '"demo :: b :: b" tries to fetch artifact from stage "demo :: nope" which does not exist.'),
    ('stage="a" job="nope" srcdir="out"',
     '"demo :: b :: b" tries to fetch artifact from job "demo :: a :: nope" which does not exist.'),
    ('stage="B" job="b" srcdir="out"',
     '"demo :: b :: b" tries to fetch artifact from its stage "B" which does not complete before the current '
     'stage "b".'),
    ('stage="c" job="c" srcdir="out"', 'its stage "c" which does not complete before the current stage "b".'),
    ('stage="a" job="a"', "Should provide either srcdir or srcfile"),
    ('stage="a" job="a" srcdir="out" srcfile="out/x"', "Only one of srcfile or srcdir is allowed at a time"),
    ('stage="" job="a" srcdir="out"', "Stage is a required field."),
    ('stage="a" job=" " srcdir="out"', "Job is a required field."),
    ('stage="a" job="a" srcdir="out" dest="~/x"',
     "Task of job 'b' in stage 'b' of pipeline 'demo' has dest path '~/x' which is outside the working directory."),
    ('stage="a" job="a" srcdir="out/../../x"', "has src path 'out/../../x' which is outside the working directory."),
    ('stage="a" job="a" srcdir="C:\\x"', "has src path 'C:\\x' which is outside the working directory."),
])
def test_fetchartifact_rules_are_gocds(attrs: str, expected: str) -> None:
    xml = cruise_xml(_TWO_STAGES.replace("{attrs}", attrs)).replace("</pipelines>", _OTHER + "</pipelines>")
    assert expected in refused(xml, "<fetchartifact")


def test_fetch_from_its_own_pipeline_by_name_any_case_is_accepted() -> None:
    xml = cruise_xml(_TWO_STAGES.replace("{attrs}", 'pipeline="DEMO" stage="A" job="A" srcdir="out"'))
    task = parse_xml(xml).stages[1].jobs[0].tasks[0]
    assert (task.stage, task.job, task.pipeline) == ("a", "a", "DEMO")


def test_fetch_of_a_path_not_published_is_a_note_not_a_refusal() -> None:
    """GoCD does not check at config load that the other job publishes the path (it fails at run time)."""
    publish = '<artifact type="build" src="out/data" dest="d" />'
    good = stage_xml("a", py_task("pass"), artifacts=publish) + stage_xml(
        "b", '<fetchartifact artifactOrigin="gocd" stage="a" job="a" srcdir="d/data" dest="in" />')
    parsed = parse_xml(cruise_xml(good))
    assert parsed.stages[1].jobs[0].tasks[0].source == "d/data" and not parsed.notes
    parsed = parse_xml(cruise_xml(good.replace('srcdir="d/data"', 'srcdir="data"')))
    assert any("fetches 'data' from a/a, which publishes d/data" in note for note in parsed.notes), parsed.notes


def _var(name: str) -> str:
    return f'<variable name="{name}"><value>1</value></variable>'


@pytest.mark.parametrize("xml, marker, expected", [
    (cruise_xml(stage_xml("a", py_task("pass"))).replace("</pipelines>", '</pipelines><pipelines group="h">'
     '<pipeline name="DEMO"><materials><git url="u" /></materials>' + stage_xml("a", py_task("pass"))
     + "</pipeline></pipelines>"), '<pipeline name="DEMO"',
     "You have defined multiple pipelines named 'DEMO'. Pipeline names must be unique. Source(s): [cfg.xml]"),
    (cruise_xml(stage_xml("a", py_task("pass")) + stage_xml("A", py_task("pass"))), '<stage name="A"',
     "You have defined multiple stages called 'A'. Stage names are case-insensitive and must be unique."),
    (cruise_xml('<stage name="a"><jobs><job name="j"><tasks>' + py_task("pass") + '</tasks></job><job name="J">'
                '<tasks>' + py_task("pass") + "</tasks></job></jobs></stage>"), '<job name="J"',
     "You have defined multiple jobs called 'J'. Job names are case-insensitive and must be unique."),
    (cruise_xml(stage_xml("a", py_task("pass")), pipeline_extra="<environmentvariables>" + _var("X") + _var("x")
                + "</environmentvariables>"), '<variable name="x"',
     "Environment Variable name 'x' is not unique for pipeline 'demo'."),
    (cruise_xml(stage_xml("a", py_task("pass"), extra="<environmentvariables>" + _var("Y") + _var("y")
                          + "</environmentvariables>")), '<variable name="y"',
     "Environment Variable name 'y' is not unique for stage 'a'."),
    (cruise_xml(stage_xml("a", py_task("pass"), extra="<environmentvariables>" + _var(" Y")
                          + "</environmentvariables>")), '<variable name=" Y"',
     "Environment Variable cannot start or end with spaces for stage 'a'."),
    (cruise_xml(stage_xml("a", py_task("pass"), extra="<environmentvariables>" + _var(" ")
                          + "</environmentvariables>")), '<variable name=" "',
     "Environment Variable cannot have an empty name for stage 'a'."),
    (cruise_xml(stage_xml("a", py_task("pass"))).replace("</pipelines>", "</pipelines><environments><environment "
     'name="e"><environmentvariables>' + _var("Z") + _var("z") + '</environmentvariables><pipelines><pipeline '
     'name="demo" /></pipelines></environment></environments>'), '<variable name="z"',
     "Environment Variable name 'z' is not unique for environment 'e'."),
])
def test_names_are_unique_case_insensitively_as_gocd_says(xml: str, marker: str, expected: str) -> None:
    assert expected in refused(xml, marker)


def test_the_same_variable_name_at_two_levels_is_an_override_not_a_duplicate() -> None:
    job = ('<stage name="a"><environmentvariables>' + _var("X") + '</environmentvariables><jobs><job name="j">'
           "<environmentvariables>" + _var("X") + _var("Y") + "</environmentvariables><tasks>" + py_task("pass")
           + "</tasks></job></jobs></stage>")
    parsed = parse_xml(cruise_xml(job, pipeline_extra="<environmentvariables>" + _var("x")
                                  + "</environmentvariables>"))
    stage = parsed.stages[0]
    assert ([v.name for v in parsed.variables], [v.name for v in stage.variables],
            [v.name for v in stage.jobs[0].variables]) == (["x"], ["X"], ["X", "Y"])
    assert "not unique for job 'j'" in refused(cruise_xml(job.replace(_var("Y"), _var("x"))), '<variable name="x"')


def _timeout(value: str) -> str:
    return cruise_xml(stage_xml("a", py_task("pass")).replace('<job name="a">', f'<job name="a" timeout="{value}">'))


@pytest.mark.parametrize("value, expected", [
    ("-1", "Timeout cannot be a negative number as it represents number of minutes"),
    ("-0.5", "Timeout cannot be a negative number as it represents number of minutes"),
    ("INF", "Timeout should be a valid number as it represents number of minutes"),
    ("1.5", "use a whole number of minutes (a rehearsal check, stricter than GoCD's config load)"),
    ("1e2", "use a whole number of minutes"),
    (" 60", "use a whole number of minutes"),
    ("NaN", "use a whole number of minutes"),
])
def test_job_timeout_values_gocds_server_or_the_rehearsal_refuses(value: str, expected: str) -> None:
    """Numbers the schema takes (xs:double) but GoCD's server refuses (negative, Java cannot parse it) or cannot
    use (not whole minutes)."""
    assert expected in refused(_timeout(value), "<job ")


def test_job_timeout_values_gocd_runs() -> None:
    for value, minutes in (("60", 60), ("0", 0), ("+5", 5), ("-0", 0), (None, None)):
        xml = _timeout(value) if value is not None else cruise_xml(stage_xml("a", py_task("pass")))
        assert parse_xml(xml).stages[0].jobs[0].timeout == minutes


@pytest.mark.parametrize("workingdir", ["~/x", "/abs", "a/../../x", "\\\\server\\x", "C:\\x"])
def test_an_exec_workingdir_outside_the_working_directory_is_refused_by_gocds_server(workingdir: str) -> None:
    xml = cruise_xml(stage_xml("a", f'<exec command="x" workingdir="{workingdir}" />'))
    assert refused(xml, "<exec ").endswith(
        "<exec>: The path of the working directory for the custom command in job 'a' in stage 'a' of pipeline "
        "'demo' is outside the agent sandbox. It must be relative to the directory where the agent checks out "
        "materials.")


def test_a_workingdir_starting_with_dots_is_the_schemas_to_refuse() -> None:
    """``../up`` does not even have the schema's path shape: GoCD's schema refuses it before its server looks."""
    xml = cruise_xml(stage_xml("a", '<exec command="x" workingdir="../up" />'))
    assert "attribute workingdir='../up': does not match the pattern of filePathType" in refused(xml, "<exec ")
    xml = cruise_xml(stage_xml("a", '<exec command="x" workingdir="a/~/x" />'))
    assert parse_xml(xml).stages[0].jobs[0].tasks[0].workingdir == "a/~/x"


def test_artifact_paths_follow_gocds_config_rules_only() -> None:
    """GoCD's config load leaves artifact src free text and checks dest's shape only; escaping is a run-time
    failure (see test_artifacts)."""
    for src, dest in (("../x", ""), ("/abs/x", ""), ("x", "a/../../x")):
        attrs = f'src="{src}"' + (f' dest="{dest}"' if dest else "")
        (artifact,) = parse_xml(cruise_xml(stage_xml("a", py_task("pass"),
                                                     artifacts=f'<artifact type="build" {attrs} />'))
                                ).stages[0].jobs[0].artifacts
        assert (artifact.src, artifact.dest) == (src, "../x" if dest else "")
    xml = cruise_xml(stage_xml("a", py_task("pass"), artifacts='<artifact type="build" src=" " />'))
    assert refused(xml, "<artifact ").endswith("<artifact>: Job 'a' has an artifact with an empty source")


@pytest.mark.parametrize("git, expected", [
    ('<git url=" " />', "<git>: URL cannot be blank"),
    ('<git url="u" dest="../x" />', "does not match the pattern of filePathType"),  # the schema's
    ('<git url="u" dest="a/../../x" />', "<git>: Dest folder 'a/../../x' is not valid. It must be a sub-directory of "
                                         "the working folder."),
])
def test_the_material_rules(git: str, expected: str) -> None:
    xml = cruise_xml(stage_xml("a", py_task("pass"))).replace(
        '<git url="https://example.invalid/repo.git" materialName="repo" />', git)
    assert expected in refused(xml, "<git ")


@pytest.mark.parametrize("template, expected", [
    ("${nope}", "You have defined a label template in pipeline 'demo' that refers to a material called 'nope', but "
                "no material with this name is defined."),
    ("${repo[:0]}", "Length of zero not allowed on label ${repo[:0]} defined on pipeline demo."),
    ("${repo[:x]}", "Invalid label '${repo[:x]}'. Label should be composed of alphanumeric text"),
    ("release", "Invalid label 'release'."),
    ("${ }", "Label template variable cannot be blank."),
    ("${env:}", "Missing environment variable name."),
])
def test_label_template_rules_are_gocds(template: str, expected: str) -> None:
    xml = cruise_xml(stage_xml("a", py_task("pass"))).replace('name="demo"', f'name="demo" labeltemplate="{template}"')
    assert expected in refused(xml, "<pipeline ")


def test_label_templates_gocd_accepts() -> None:
    for template in ("${COUNT}", "${count}-${REPO[:7]}", "v${COUNT}-${env:WHO}", "#{p}-${COUNT}"):
        xml = cruise_xml(stage_xml("a", py_task("pass")), pipeline_extra='<params><param name="p">x</param></params>')
        parsed = parse_xml(xml.replace('name="demo"', f'name="demo" labeltemplate="{template}"'))
        assert parsed.label_template == template.replace("#{p}", "x")


def test_a_pipeline_without_stages_is_refused_as_gocd_does() -> None:
    xml = cruise_xml("")
    assert refused(xml, "<pipeline ").endswith(
        "<pipeline>: Pipeline 'demo' does not have any stages configured. A pipeline must have at least one stage.")


@pytest.mark.parametrize("path, inside", [
    ("a/b", True), ("./a", True), ("a/../b", True), ("a/~/x", True), ("..", False), ("a/../../x", False),
    ("/abs", False), ("\\\\server\\x", False), ("C:", False), ("C:\\x", False), ("~/x", False), ("~user/x", False),
])
def test_inside_working_dir_is_gocds_normalisation(path: str, inside: bool) -> None:
    assert gocd_rules.inside_working_dir(path) is inside
