"""The GoCD config: the example pipeline's structure, the strict reader, and the local executor's GoCD rules.

Executor tests run real processes (``python -c ...`` exec tasks) through ``scripts/run_pipeline.py``; they need
neither the stage venvs nor MLflow, so they are fast. The full example pipeline runs in test_run_pipeline.py.
"""

from __future__ import annotations

import posixpath
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import REPO_ROOT
from helpers_gocd import (
    EXAMPLE,
    XSD,
    cruise_xml,
    example_pipeline,
    exec_tasks,
    option_of,
    param_of,
    parse_xml,
    py_task,
    stage_xml,
)
from mlops_kit.core.errors import BadInput
from mlops_kit.envs.spec import load_spec
from mlops_kit.rehearsal import artifacts, gocd

# ----------------------------------------------------------------------------------------------- helpers


# ----------------------------------------------------------------------------------------------- example XML


def test_example_stages_in_ml_order_one_job_each() -> None:
    example = example_pipeline()
    assert [s.name for s in example.stages] == ["ingest", "features", "train"]
    assert all(len(s.jobs) == 1 for s in example.stages), "setup and run must be tasks of ONE job, not two jobs"


def test_each_job_sets_up_its_venv_before_running_its_notebook() -> None:
    for stage in example_pipeline().stages:
        execs = exec_tasks(stage.jobs[0])
        setups = [t for t in execs if t.args[0].endswith("create_venv.py")]
        runs = [t for t in execs if t.args[0].endswith("run_notebook.py")]
        assert len(setups) == 1 and len(runs) == 1, stage.name
        tasks = list(stage.jobs[0].tasks)
        assert tasks.index(setups[0]) < tasks.index(runs[0])
        assert setups[0].command == runs[0].command == "python"
        assert setups[0].runif == runs[0].runif == frozenset({"passed"})
        spec = f"specs/{stage.name}.yaml"
        assert option_of(setups[0], "--spec") == option_of(runs[0], "--spec") == spec
        assert load_spec(REPO_ROOT / spec).stage == stage.name
        assert (REPO_ROOT / option_of(runs[0], "--notebook")).is_file()
        assert (REPO_ROOT / option_of(runs[0], "--params-file")).is_file()


def test_stage_pythons_differ_and_jobs_ask_for_matching_agents() -> None:
    versions = []
    for stage in example_pipeline().stages:
        spec = load_spec(REPO_ROOT / f"specs/{stage.name}.yaml")
        versions.append(spec.python.text)
        assert {"windows", f"python{spec.python.text}"} <= set(stage.jobs[0].resources)
    assert len(set(versions)) == len(versions)


def test_every_fetch_takes_an_earlier_stages_published_output_before_the_run() -> None:
    example = example_pipeline()
    fetched = 0
    for index, stage in enumerate(example.stages):
        job = stage.jobs[0]
        tasks = list(job.tasks)
        run = next(t for t in exec_tasks(job) if t.args[0].endswith("run_notebook.py"))
        for fetch in (t for t in tasks if isinstance(t, gocd.FetchTask)):
            fetched += 1
            source = example.stage(fetch.stage)
            assert source is not None and example.stages.index(source) < index
            source_job = next(j for j in source.jobs if j.name == fetch.job)
            assert fetch.source in {a.published_path() for a in source_job.artifacts}
            assert tasks.index(fetch) < tasks.index(run)
            # the notebook reads exactly where the fetch puts the folder
            assert param_of(run, "input_dir") == posixpath.join(fetch.dest, posixpath.basename(fetch.source))
    assert fetched == len(example.stages) - 1


def test_each_job_publishes_its_notebook_outputs_and_audit_bundle() -> None:
    for stage in example_pipeline().stages:
        job = stage.jobs[0]
        run = next(t for t in exec_tasks(job) if t.args[0].endswith("run_notebook.py"))
        setup = next(t for t in exec_tasks(job) if t.args[0].endswith("create_venv.py"))
        for path in (option_of(run, "--output"), option_of(run, "--output-dir"), option_of(setup, "--audit-dir")):
            assert any(artifacts.ant_regex(a.src).match(path) for a in job.artifacts), (stage.name, path)
        html = option_of(run, "--output").replace(".ipynb", ".html")
        assert any(artifacts.ant_regex(a.src).match(html) for a in job.artifacts), "the HTML shown in the tab"


def test_example_stages_start_from_a_clean_working_directory() -> None:
    assert all(s.clean_working_dir for s in example_pipeline().stages)


def test_example_sets_venv_root_and_tracking_uri_for_the_agents() -> None:
    variables = {v.name: v.value for v in example_pipeline().variables}
    assert variables["ML_VENV_ROOT"].startswith("C:\\")
    assert variables["MLFLOW_TRACKING_URI"].startswith("http")


def test_example_passes_arguments_as_arg_elements_only() -> None:
    root = ET.parse(EXAMPLE).getroot()
    assert root.get("schemaVersion") == "139"
    execs = root.findall(".//exec")
    assert execs and all(e.get("args") is None and e.findall("arg") for e in execs)
    assert all(len(a.text or "") > 0 and a.text == a.text.strip() for e in execs for a in e.findall("arg"))


def test_example_is_valid_against_gocd_schema() -> None:
    import xmlschema  # pinned in requirements.txt
    xmlschema.XMLSchema(str(XSD)).validate(str(EXAMPLE))


# ----------------------------------------------------------------------------------------------- reader


def test_runif_defaults_to_passed_and_collects_several() -> None:
    parsed = parse_xml(cruise_xml(stage_xml("a", py_task("pass") + py_task("pass", "failed any"))))
    first, second = parsed.stages[0].jobs[0].tasks
    assert first.runif == {"passed"} and second.runif == {"failed", "any"}


@pytest.mark.parametrize("element, expected", [
    ('<ant target="x" />', "<ant>"),
    ('<rake target="x" />', "<rake>"),
    ('<task><pluginConfiguration id="p" version="1" /></task>', "<task>"),
    ('<exec command="python" args="-c pass" />', "'args' attribute"),
    ('<exec command="python"><arg>x</arg><oncancel><exec command="y" /></oncancel></exec>', "<oncancel>"),
])
def test_unsupported_task_is_refused_naming_element_and_line(element: str, expected: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_xml(cruise_xml(stage_xml("a", element)))
    message = str(info.value)
    assert expected in message and "cfg.xml: line " in message and "not supported" in message


def test_pipeline_params_are_substituted() -> None:
    params = '<params><param name="nb">notebooks/x.ipynb</param><param name="out">out</param></params>'
    stage = stage_xml("a", '<exec command="python"><arg>#{nb}</arg><arg>C##1</arg></exec>',
                   artifacts='<artifact type="build" src="#{out}/x" />')
    parsed = parse_xml(cruise_xml(stage, pipeline_extra=params))
    assert parsed.stages[0].jobs[0].tasks[0].args == ("notebooks/x.ipynb", "C#1")
    assert parsed.stages[0].jobs[0].artifacts[0].src == "out/x"
    with pytest.raises(BadInput, match=r"parameter #\{nope\} is not defined"):
        parse_xml(cruise_xml(stage_xml("a", '<exec command="#{nope}" />'), pipeline_extra=params))


def test_unsupported_pipeline_parts_are_refused() -> None:
    with pytest.raises(BadInput, match="<dependencies>"):
        parse_xml(cruise_xml(stage_xml("a", py_task("pass")), pipeline_extra='<dependencies />'))
    manual = stage_xml("b", py_task("pass"), extra='<approval type="manual" />')
    with pytest.raises(BadInput, match="<approval>.*manual"):
        parse_xml(cruise_xml(stage_xml("a", py_task("pass")) + manual))
    # a manual approval on the FIRST stage only means "trigger by hand", which a local run is
    assert parse_xml(cruise_xml(stage_xml("a", py_task("pass"), extra='<approval type="manual" />')))


def test_timer_is_ignored_with_a_note() -> None:
    parsed = parse_xml(cruise_xml(stage_xml("a", py_task("pass")), pipeline_extra="<timer>0 0 22 ? * MON-FRI</timer>"))
    assert any("timer" in note for note in parsed.notes)


def test_fetch_of_a_path_not_published_is_a_note_not_a_refusal() -> None:
    """GoCD does not check at config load that the other job publishes the path (it fails at run time)."""
    publish = '<artifact type="build" src="out/data" dest="d" />'
    good = stage_xml("a", py_task("pass"), artifacts=publish) + stage_xml(
        "b", '<fetchartifact artifactOrigin="gocd" stage="a" job="a" srcdir="d/data" dest="in" />')
    parsed = parse_xml(cruise_xml(good))
    assert parsed.stages[1].jobs[0].tasks[0].source == "d/data" and not parsed.notes
    parsed = parse_xml(cruise_xml(good.replace('srcdir="d/data"', 'srcdir="data"')))
    assert any("fetches 'data' from a/a, which publishes d/data" in note for note in parsed.notes), parsed.notes


def _line_of(xml: str, marker: str) -> int:
    return xml[: xml.index(marker)].count("\n") + 1


def _refused(xml: str, marker: str) -> str:
    """The one-line refusal of ``xml``; it must name the line of the element holding ``marker``."""
    with pytest.raises(BadInput) as info:
        parse_xml(xml)
    message = str(info.value)
    assert f"cfg.xml: line {_line_of(xml, marker)}: <" in message, message
    assert "\n" not in message
    return message


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
    ('stage="a" job="a" srcdir="out" dest="~/x"',
     "Task of job 'b' in stage 'b' of pipeline 'demo' has dest path '~/x' which is outside the working directory."),
    ('stage="a" job="a" srcdir="out/../../x"', "has src path 'out/../../x' which is outside the working directory."),
    ('stage="a" job="a" srcdir="C:\\x"', "has src path 'C:\\x' which is outside the working directory."),
    ('stage="a" job="a" srcdir="out" dest="in "', "is not facet-valid with respect to pattern"),
])
def test_fetchartifact_rules_are_gocds(attrs: str, expected: str) -> None:
    xml = cruise_xml(_TWO_STAGES.replace("{attrs}", attrs)).replace("</pipelines>", _OTHER + "</pipelines>")
    assert expected in _refused(xml, "<fetchartifact")


def test_fetch_from_its_own_pipeline_by_name_any_case_is_accepted() -> None:
    xml = cruise_xml(_TWO_STAGES.replace("{attrs}", 'pipeline="DEMO" stage="A" job="A" srcdir="out"'))
    task = parse_xml(xml).stages[1].jobs[0].tasks[0]
    assert (task.stage, task.job, task.pipeline) == ("a", "a", "DEMO")


def _var(name: str) -> str:
    return f'<variable name="{name}"><value>1</value></variable>'


@pytest.mark.parametrize("xml, marker, expected", [
    (cruise_xml(stage_xml("a", py_task("pass"))).replace("</pipelines>", '</pipelines><pipelines group="h">'
     '<pipeline name="DEMO"><materials><git url="u" /></materials>' + stage_xml("a", py_task("pass"))
     + "</pipeline></pipelines>"), 'name="DEMO"',
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
    (cruise_xml(stage_xml("a", py_task("pass"))).replace("</pipelines>", "</pipelines><environments><environment "
     'name="e"><environmentvariables>' + _var("Z") + _var("z") + '</environmentvariables><pipelines><pipeline '
     'name="demo" /></pipelines></environment></environments>'), '<variable name="z"',
     "Environment Variable name 'z' is not unique for environment 'e'."),
    (cruise_xml(stage_xml("a", py_task("pass")), name="p" * 256), "<pipeline name=",
     "The maximum allowed length is 255 characters."),
    (cruise_xml(stage_xml("a", py_task("pass"), job="bad/name")), '<job name="bad/name"',
     "Invalid job name 'bad/name'. This must be alphanumeric and may contain underscores and periods."),
])
def test_names_are_unique_case_insensitively_as_gocd_says(xml: str, marker: str, expected: str) -> None:
    assert expected in _refused(xml, marker)


def test_job_variables_are_unique_per_level_only() -> None:
    """The same name at two levels is an override, not a duplicate."""
    job = ('<stage name="a"><environmentvariables>' + _var("X") + '</environmentvariables><jobs><job name="j">'
           "<environmentvariables>" + _var("X") + _var("Y") + "</environmentvariables><tasks>" + py_task("pass")
           + "</tasks></job></jobs></stage>")
    assert parse_xml(cruise_xml(job, pipeline_extra="<environmentvariables>" + _var("x") + "</environmentvariables>"))
    with pytest.raises(BadInput, match="not unique for job 'j'"):
        parse_xml(cruise_xml(job.replace(_var("Y"), _var("x"))))


@pytest.mark.parametrize("value, expected", [
    ("abc", "Timeout should be a valid number as it represents number of minutes"),
    ("never", "Timeout should be a valid number as it represents number of minutes"),
    ("-1", "Timeout cannot be a negative number as it represents number of minutes"),
    ("-0.5", "Timeout cannot be a negative number as it represents number of minutes"),
    ("1.5", "use a whole number of minutes (a rehearsal check, stricter than GoCD's config load)"),
    ("1e2", "use a whole number of minutes"),
    (" 60", "use a whole number of minutes"),
])
def test_job_timeout_values_gocd_refuses(value: str, expected: str) -> None:
    """Issue 10, point 6 (timeout="abc" was accepted) and issue 11, point 3."""
    xml = cruise_xml(stage_xml("a", py_task("pass")).replace('<job name="a">', f'<job name="a" timeout="{value}">'))
    assert expected in _refused(xml, "<job ")


def test_job_timeout_values_gocd_runs() -> None:
    for value, minutes in (("60", 60), ("0", 0), ("+5", 5), (None, None)):
        attr = f' timeout="{value}"' if value is not None else ""
        xml = cruise_xml(stage_xml("a", py_task("pass")).replace('<job name="a">', f'<job name="a"{attr}>'))
        assert parse_xml(xml).stages[0].jobs[0].timeout == minutes


def test_artifact_paths_follow_gocds_config_rules_only() -> None:
    """GoCD's config load leaves artifact src free text and checks dest's shape only; escaping is a run-time
    failure (see test_pipeline). The exec workingdir and fetch paths must normalise inside the working dir."""
    for artifact in ('<artifact type="build" src="../x" />', '<artifact type="build" src="/abs/x" />',
                     '<artifact type="build" src="x" dest="a/../../x" />'):
        assert parse_xml(cruise_xml(stage_xml("a", py_task("pass"), artifacts=artifact)))
    for artifact, expected in (('<artifact type="build" src="x" dest=".hidden " />', "not facet-valid"),
                               ('<artifact type="build" src=" " />', "Job 'a' has an artifact with an empty source")):
        xml = cruise_xml(stage_xml("a", py_task("pass"), artifacts=artifact))
        assert expected in _refused(xml, "<artifact ")
    for workingdir in ("../up", "~/x", "/abs", "a/../../x", "\\\\server\\x"):
        xml = cruise_xml(stage_xml("a", f'<exec command="x" workingdir="{workingdir}" />'))
        message = _refused(xml, "<exec ")
        assert "is outside the agent sandbox" in message or "not facet-valid" in message, message
    xml = cruise_xml(stage_xml("a", '<exec command="x" workingdir="a/~/x" />'))
    assert parse_xml(xml).stages[0].jobs[0].tasks[0].workingdir == "a/~/x"
    assert "Command cannot be empty" in _refused(cruise_xml(stage_xml("a", '<exec command=" " />')), "<exec ")


_LAUGHS = """<?xml version="1.0"?>
<!DOCTYPE cruise [
 <!ENTITY a "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa">
""" + "".join(f' <!ENTITY {chr(98 + i)} "{("&" + chr(97 + i) + ";") * 10}">\n' for i in range(9)) + """]>
<cruise><pipelines><pipeline name="p"><environmentvariables><variable name="X"><value>&j;</value></variable>
</environmentvariables></pipeline></pipelines></cruise>
"""
_EXTERNAL = """<?xml version="1.0"?>
<!DOCTYPE cruise [ <!ENTITY secret SYSTEM "file:///etc/hostname"> ]>
<cruise><pipelines><pipeline name="p"><stage name="s"><jobs><job name="j"><tasks><exec command="echo">
<arg>&secret;</arg></exec></tasks></job></jobs></stage></pipeline></pipelines></cruise>
"""


@pytest.mark.parametrize("text", [_LAUGHS, _EXTERNAL], ids=["billion-laughs", "external-entity"])
def test_a_dtd_is_refused_at_once(text: str, tmp_path: Path) -> None:
    """Issue 10, point 6: a 'billion laughs' document hung the reader; an external entity became an empty argument.
    Refused in well under a second: timed against reading the (much larger) example config, as a ratio."""
    path = tmp_path / "evil.xml"
    path.write_text(text, encoding="utf-8")
    began = time.perf_counter()
    with pytest.raises(BadInput) as info:
        gocd.load_config(path)
    refused = time.perf_counter() - began
    began = time.perf_counter()
    gocd.load_config(EXAMPLE)
    example = time.perf_counter() - began
    assert str(info.value) == (f"{path}: line 2: <!DOCTYPE cruise>: a DTD (with its entity declarations) is not "
                               "allowed in a GoCD config; remove it")
    assert refused < max(20 * example, 0.5), (refused, example)


def test_fetch_names_are_spelled_as_the_stage_and_job_are(tmp_path: Path) -> None:
    """GoCD matches fetch names case-insensitively; the local artifact folders carry the stage's own spelling."""
    xml = stage_xml("Make", py_task("pass"), artifacts='<artifact type="build" src="out" />', job="Build") + stage_xml(
        "use", '<fetchartifact artifactOrigin="gocd" stage="MAKE" job="build" srcfile="out/x.txt" />')
    task = parse_xml(cruise_xml(xml)).stages[1].jobs[0].tasks[0]
    assert (task.stage, task.job) == ("Make", "Build")
    store = tmp_path / "store"
    (store / "Make" / "1" / "Build" / "out").mkdir(parents=True)
    (store / "Make" / "1" / "Build" / "out" / "x.txt").write_text("42")
    (tmp_path / "work").mkdir()
    assert artifacts.run_fetch(task, workdir=tmp_path / "work", store=store, echo=lambda s: None)
    assert (tmp_path / "work" / "x.txt").read_text() == "42"


def test_task_descriptions_hide_passwords_in_urls() -> None:
    task = gocd.ExecTask("python", ("run.py", "--tracking-uri", "https://ana:hunter2@mlflow:5000"), None,
                         frozenset({"passed"}), 1)
    assert task.describe() == "python run.py --tracking-uri https://***@mlflow:5000"


def test_bad_files_are_one_line_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not found"):
        gocd.load_config(tmp_path / "missing.xml")
    broken = tmp_path / "broken.xml"
    broken.write_text("<cruise>\n<pipelines>\n</cruise>\n", encoding="utf-8")
    with pytest.raises(BadInput, match=r"broken.xml: line 3: invalid XML"):
        gocd.load_config(broken)
    with pytest.raises(BadInput, match="several pipelines"):
        gocd.select_pipeline(gocd.parse_config(cruise_xml(stage_xml("a", py_task("pass"))), source=Path("c")) * 2, None)


def test_label_template_tokens() -> None:
    parsed = parse_xml(cruise_xml(stage_xml("a", py_task("pass"))).replace(
        'name="demo"', 'name="demo" labeltemplate="v${COUNT}-${repo[:7]}-${env:WHO}"'))
    assert gocd.label_for(parsed, 12, "0123456789abcdef", {"WHO": "me"}) == "v12-0123456-me"
    with pytest.raises(BadInput, match="labeltemplate token"):
        parse_xml(cruise_xml(stage_xml("a", py_task("pass"))).replace('name="demo"',
                                                                     'name="demo" labeltemplate="${nope}"'))
