"""mlops_kit.rehearsal.gocd_reader: the example pipeline's structure as read, and the strict reader (what a rehearsal
cannot emulate is refused by name and place; parameters, runif, secure variables, names as written)."""

from __future__ import annotations

import posixpath
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from helpers import REPO_ROOT
from helpers_gocd import (
    EXAMPLE,
    cruise_xml,
    example_pipeline,
    exec_tasks,
    option_of,
    param_of,
    parse_xml,
    py_task,
    refused,
    stage_xml,
)
from mlops_kit.core.errors import BadInput
from mlops_kit.envs.spec import load_spec
from mlops_kit.rehearsal import artifacts, gocd, gocd_reader

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
    assert (variables["ML_VENV_ROOT"] or "").startswith("C:\\")
    assert (variables["MLFLOW_TRACKING_URI"] or "").startswith("http")


def test_example_passes_arguments_as_arg_elements_only() -> None:
    root = ET.parse(EXAMPLE).getroot()
    assert root.get("schemaVersion") == "139"
    execs = root.findall(".//exec")
    assert execs and all(e.get("args") is None and e.findall("arg") for e in execs)
    assert all(len(a.text or "") > 0 and a.text == a.text.strip() for e in execs for a in e.findall("arg"))


# ----------------------------------------------------------------------------------------------- reader


def test_runif_defaults_to_passed_and_collects_several() -> None:
    parsed = parse_xml(cruise_xml(stage_xml("a", py_task("pass") + py_task("pass", "failed any"))))
    first, second = parsed.stages[0].jobs[0].tasks
    assert first.runif == {"passed"} and second.runif == {"failed", "any"}


@pytest.mark.parametrize("element, marker, expected", [
    ('<ant target="x" />', "<ant ", "<ant>: not supported by the local runner (the local runner runs <exec> and"),
    ('<rake target="x" />', "<rake ", "<rake>: not supported"),
    ('<task><pluginConfiguration id="p" version="1" /></task>', "<task>",
     "<task>: not supported by the local runner (plugin task;"),
    ('<exec command="python" args="-c pass" />', "<exec ",
     "<exec>: not supported by the local runner (the 'args' attribute"),
    ('<exec command="python"><arg>x</arg><oncancel><exec command="y" /></oncancel></exec>', "<oncancel>",
     "<oncancel>: not supported by the local runner (cancelling is not emulated"),
    ('<fetchartifact artifactOrigin="external" stage="a" job="a" artifactId="x" />', "<fetchartifact ",
     "<fetchartifact>: not supported by the local runner (artifactOrigin='external'"),
])
def test_unsupported_task_is_refused_naming_element_and_place(element: str, marker: str, expected: str) -> None:
    assert expected in refused(cruise_xml(stage_xml("a", element)), marker)


def test_unsupported_pipeline_parts_are_refused() -> None:
    with pytest.raises(BadInput, match="<dependencies>: not supported"):
        parse_xml(cruise_xml(stage_xml("a", py_task("pass")), pipeline_extra="<dependencies />"))
    manual = stage_xml("b", py_task("pass"), extra='<approval type="manual" />')
    assert "stage 'b' waits for a manual approval" in refused(cruise_xml(stage_xml("a", py_task("pass")) + manual),
                                                              '<approval type="manual"')
    external = '<artifact type="external" id="x" storeId="s" />'
    assert "type='external'" in refused(cruise_xml(stage_xml("a", py_task("pass"), artifacts=external)),
                                        "<artifact ")


def test_a_manual_approval_on_the_first_stage_only_means_trigger_by_hand() -> None:
    parsed = parse_xml(cruise_xml(stage_xml("a", py_task("pass"), extra='<approval type="manual" />')))
    assert [s.name for s in parsed.stages] == ["a"] and len(parsed.stages[0].jobs[0].tasks) == 1


def test_pipeline_params_are_substituted_after_the_schema_check() -> None:
    """As on GoCD: the schema sees ``#{nb}`` as written, the rehearsal runs the value."""
    params = '<params><param name="nb">notebooks/x.ipynb</param><param name="out">out</param></params>'
    stage = stage_xml("a", '<exec command="python"><arg>#{nb}</arg><arg>C##1</arg></exec>',
                      artifacts='<artifact type="build" src="#{out}/x" />')
    parsed = parse_xml(cruise_xml(stage, pipeline_extra=params))
    assert parsed.stages[0].jobs[0].tasks[0].args == ("notebooks/x.ipynb", "C#1")
    assert parsed.stages[0].jobs[0].artifacts[0].src == "out/x"
    xml = cruise_xml(stage_xml("a", '<exec command="#{nope}" />'), pipeline_extra=params)
    assert "<exec>: parameter #{nope} is not defined in <params>" in refused(xml, '<exec command="#{nope}"')


def test_timer_is_ignored_with_a_note() -> None:
    parsed = parse_xml(cruise_xml(stage_xml("a", py_task("pass")), pipeline_extra="<timer>0 0 22 ? * MON-FRI</timer>"))
    assert parsed.notes == ("ignored <timer>: a local run is a manual trigger",)


@pytest.mark.parametrize("variable, secure, value", [
    ('<variable name="T" secure="true"><encryptedValue>AES:xx</encryptedValue></variable>', True, None),
    ('<variable name="T" secure="1"><encryptedValue>AES:xx</encryptedValue></variable>', True, None),
    ('<variable name="T"><encryptedValue>AES:xx</encryptedValue></variable>', True, None),
    ('<variable name="T" secure="false"><value>plain</value></variable>', False, "plain"),
    ('<variable name="T" secure="0" />', False, ""),
])
def test_secure_variables_have_no_readable_value(variable: str, secure: bool, value: str | None) -> None:
    parsed = parse_xml(cruise_xml(stage_xml("a", py_task("pass")),
                                  pipeline_extra=f"<environmentvariables>{variable}</environmentvariables>"))
    assert parsed.variables == (gocd.Variable("T", value, secure),)


def test_fetch_names_are_spelled_as_the_stage_and_job_are(tmp_path: Path) -> None:
    """GoCD matches fetch names case-insensitively; the local artifact folders carry the stage's own spelling."""
    xml = stage_xml("Make", py_task("pass"), artifacts='<artifact type="build" src="out" />', job="Build") + stage_xml(
        "use", '<fetchartifact artifactOrigin="gocd" stage="MAKE" job="build" srcfile="out/x.txt" />')
    task = parse_xml(cruise_xml(xml)).stages[1].jobs[0].tasks[0]
    assert isinstance(task, gocd.FetchTask) and (task.stage, task.job) == ("Make", "Build")
    store = tmp_path / "store"
    (store / "Make" / "1" / "Build" / "out").mkdir(parents=True)
    (store / "Make" / "1" / "Build" / "out" / "x.txt").write_text("42")
    (tmp_path / "work").mkdir()
    assert artifacts.run_fetch(task, workdir=tmp_path / "work", store=store, echo=lambda s: None)
    assert (tmp_path / "work" / "x.txt").read_text() == "42"


def test_several_pipelines_need_a_choice() -> None:
    pipelines = gocd_reader.parse_config(cruise_xml(stage_xml("a", py_task("pass"))), source=Path("c")) * 2
    with pytest.raises(BadInput, match="several pipelines"):
        gocd.select_pipeline(pipelines, None)
