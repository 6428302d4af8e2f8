"""The GoCD config: the example pipeline's structure, the strict reader, and the local executor's GoCD rules.

Executor tests run real processes (``python -c ...`` exec tasks) through ``scripts/run_pipeline.py``; they need
neither the stage venvs nor MLflow, so they are fast. The full example pipeline runs in test_run_pipeline.py.
"""

from __future__ import annotations

import json
import os
import posixpath
import sys
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

import run_pipeline
from conftest import REPO_ROOT, TOOLKIT_PYTHON, run_script
from mlops_kit import gocd, pipeline
from mlops_kit.errors import BadInput
from mlops_kit.spec import load_spec

EXAMPLE = REPO_ROOT / "gocd" / "pipeline_config.xml"
XSD = REPO_ROOT / "tests" / "data" / "cruise-config.xsd"  # GoCD's official schema, schemaVersion 139 (Apache-2.0)


# ----------------------------------------------------------------------------------------------- helpers


def _cruise(stages: str, *, pipeline_extra: str = "", name: str = "demo") -> str:
    return textwrap.dedent(f"""\
        <?xml version="1.0" encoding="utf-8"?>
        <cruise schemaVersion="139">
          <pipelines group="g">
            <pipeline name="{name}">
              {pipeline_extra}
              <materials><git url="https://example.invalid/repo.git" materialName="repo" /></materials>
              {stages}
            </pipeline>
          </pipelines>
        </cruise>
        """)


def _stage(name: str, tasks: str, *, artifacts: str = "", job: str | None = None, extra: str = "") -> str:
    return (f'<stage name="{name}">{extra}<jobs><job name="{job or name}"><tasks>{tasks}</tasks>'
            f'<artifacts>{artifacts}</artifacts></job></jobs></stage>')


def _py(code: str, runif: str = "") -> str:
    """An exec task running ``python -c code`` (``python`` found on the job's PATH, as on an agent)."""
    code = code.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    runifs = "".join(f'<runif status="{s}" />' for s in runif.split()) if runif else ""
    return f'<exec command="python"><arg>-c</arg><arg>{code}</arg>{runifs}</exec>'


def _parse(xml: str) -> gocd.Pipeline:
    return gocd.parse_config(xml, source=Path("cfg.xml"))[0]


def _example() -> gocd.Pipeline:
    return gocd.select_pipeline(gocd.load_config(EXAMPLE), None)


def _execs(job: gocd.Job) -> list[gocd.ExecTask]:
    return [t for t in job.tasks if isinstance(t, gocd.ExecTask)]


def _opt(task: gocd.ExecTask, name: str) -> str:
    return task.args[task.args.index(name) + 1]


def _param(task: gocd.ExecTask, name: str) -> str | None:
    for i, arg in enumerate(task.args[:-2]):
        if arg == "-p" and task.args[i + 1] == name:
            return task.args[i + 2]
    return None


# ----------------------------------------------------------------------------------------------- example XML


def test_example_stages_in_ml_order_one_job_each() -> None:
    example = _example()
    assert [s.name for s in example.stages] == ["ingest", "features", "train"]
    assert all(len(s.jobs) == 1 for s in example.stages), "setup and run must be tasks of ONE job, not two jobs"


def test_each_job_sets_up_its_venv_before_running_its_notebook() -> None:
    for stage in _example().stages:
        execs = _execs(stage.jobs[0])
        setups = [t for t in execs if t.args[0].endswith("create_venv.py")]
        runs = [t for t in execs if t.args[0].endswith("run_notebook.py")]
        assert len(setups) == 1 and len(runs) == 1, stage.name
        tasks = list(stage.jobs[0].tasks)
        assert tasks.index(setups[0]) < tasks.index(runs[0])
        assert setups[0].command == runs[0].command == "python"
        assert setups[0].runif == runs[0].runif == frozenset({"passed"})
        spec = f"specs/{stage.name}.yaml"
        assert _opt(setups[0], "--spec") == _opt(runs[0], "--spec") == spec
        assert load_spec(REPO_ROOT / spec).stage == stage.name
        assert (REPO_ROOT / _opt(runs[0], "--notebook")).is_file()
        assert (REPO_ROOT / _opt(runs[0], "--params-file")).is_file()


def test_stage_pythons_differ_and_jobs_ask_for_matching_agents() -> None:
    versions = []
    for stage in _example().stages:
        spec = load_spec(REPO_ROOT / f"specs/{stage.name}.yaml")
        versions.append(spec.python_version)
        assert {"windows", f"python{spec.python_version}"} <= set(stage.jobs[0].resources)
    assert len(set(versions)) == len(versions)


def test_every_fetch_takes_an_earlier_stages_published_output_before_the_run() -> None:
    example = _example()
    fetched = 0
    for index, stage in enumerate(example.stages):
        job = stage.jobs[0]
        tasks = list(job.tasks)
        run = next(t for t in _execs(job) if t.args[0].endswith("run_notebook.py"))
        for fetch in (t for t in tasks if isinstance(t, gocd.FetchTask)):
            fetched += 1
            source = example.stage(fetch.stage)
            assert source is not None and example.stages.index(source) < index
            source_job = next(j for j in source.jobs if j.name == fetch.job)
            assert fetch.source in {a.published_path() for a in source_job.artifacts}
            assert tasks.index(fetch) < tasks.index(run)
            # the notebook reads exactly where the fetch puts the folder
            assert _param(run, "input_dir") == posixpath.join(fetch.dest, posixpath.basename(fetch.source))
    assert fetched == len(example.stages) - 1


def test_each_job_publishes_its_notebook_outputs_and_audit_bundle() -> None:
    for stage in _example().stages:
        job = stage.jobs[0]
        run = next(t for t in _execs(job) if t.args[0].endswith("run_notebook.py"))
        setup = next(t for t in _execs(job) if t.args[0].endswith("create_venv.py"))
        for path in (_opt(run, "--output"), _opt(run, "--output-dir"), _opt(setup, "--audit-dir")):
            assert any(pipeline.ant_regex(a.src).match(path) for a in job.artifacts), (stage.name, path)
        html = _opt(run, "--output").replace(".ipynb", ".html")
        assert any(pipeline.ant_regex(a.src).match(html) for a in job.artifacts), "the HTML shown in the tab"


def test_example_stages_start_from_a_clean_working_directory() -> None:
    assert all(s.clean_working_dir for s in _example().stages)


def test_example_sets_venv_root_and_tracking_uri_for_the_agents() -> None:
    variables = {v.name: v.value for v in _example().variables}
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
    parsed = _parse(_cruise(_stage("a", _py("pass") + _py("pass", "failed any"))))
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
        _parse(_cruise(_stage("a", element)))
    message = str(info.value)
    assert expected in message and "cfg.xml: line " in message and "not supported" in message


def test_pipeline_params_are_substituted() -> None:
    params = '<params><param name="nb">notebooks/x.ipynb</param><param name="out">out</param></params>'
    stage = _stage("a", '<exec command="python"><arg>#{nb}</arg><arg>C##1</arg></exec>',
                   artifacts='<artifact type="build" src="#{out}/x" />')
    parsed = _parse(_cruise(stage, pipeline_extra=params))
    assert parsed.stages[0].jobs[0].tasks[0].args == ("notebooks/x.ipynb", "C#1")
    assert parsed.stages[0].jobs[0].artifacts[0].src == "out/x"
    with pytest.raises(BadInput, match=r"parameter #\{nope\} is not defined"):
        _parse(_cruise(_stage("a", '<exec command="#{nope}" />'), pipeline_extra=params))


def test_unsupported_pipeline_parts_are_refused() -> None:
    with pytest.raises(BadInput, match="<dependencies>"):
        _parse(_cruise(_stage("a", _py("pass")), pipeline_extra='<dependencies />'))
    manual = _stage("b", _py("pass"), extra='<approval type="manual" />')
    with pytest.raises(BadInput, match="<approval>.*manual"):
        _parse(_cruise(_stage("a", _py("pass")) + manual))
    # a manual approval on the FIRST stage only means "trigger by hand", which a local run is
    assert _parse(_cruise(_stage("a", _py("pass"), extra='<approval type="manual" />')))


def test_timer_is_ignored_with_a_note() -> None:
    parsed = _parse(_cruise(_stage("a", _py("pass")), pipeline_extra="<timer>0 0 22 ? * MON-FRI</timer>"))
    assert any("timer" in note for note in parsed.notes)


def test_fetch_must_name_an_earlier_stage_and_a_published_path() -> None:
    publish = '<artifact type="build" src="out/data" dest="d" />'
    good = _stage("a", _py("pass"), artifacts=publish) + _stage(
        "b", '<fetchartifact artifactOrigin="gocd" stage="a" job="a" srcdir="d/data" dest="in" />')
    assert _parse(_cruise(good)).stages[1].jobs[0].tasks[0].source == "d/data"
    wrong_path = good.replace('srcdir="d/data"', 'srcdir="data"')
    with pytest.raises(BadInput, match="publishes no 'data'.*d/data"):
        _parse(_cruise(wrong_path))
    later = _stage("a", '<fetchartifact artifactOrigin="gocd" stage="b" job="b" srcdir="x" />') + _stage(
        "b", _py("pass"), artifacts='<artifact type="build" src="x" />')
    with pytest.raises(BadInput, match="'b' is not an earlier stage"):
        _parse(_cruise(later))
    no_job = good.replace('job="a" srcdir', 'job="nope" srcdir')
    with pytest.raises(BadInput, match="has no job 'nope'"):
        _parse(_cruise(no_job))


def test_fetch_names_are_spelled_as_the_stage_and_job_are(tmp_path: Path) -> None:
    """GoCD matches fetch names case-insensitively; the local artifact folders carry the stage's own spelling."""
    xml = _stage("Make", _py("pass"), artifacts='<artifact type="build" src="out" />', job="Build") + _stage(
        "use", '<fetchartifact artifactOrigin="gocd" stage="MAKE" job="build" srcfile="out/x.txt" />')
    task = _parse(_cruise(xml)).stages[1].jobs[0].tasks[0]
    assert (task.stage, task.job) == ("Make", "Build")
    store = tmp_path / "store"
    (store / "Make" / "1" / "Build" / "out").mkdir(parents=True)
    (store / "Make" / "1" / "Build" / "out" / "x.txt").write_text("42")
    (tmp_path / "work").mkdir()
    assert pipeline.run_fetch(task, workdir=tmp_path / "work", store=store, echo=lambda s: None)
    assert (tmp_path / "work" / "x.txt").read_text() == "42"


def test_task_descriptions_hide_passwords_in_urls() -> None:
    task = gocd.ExecTask("python", ("run.py", "--tracking-uri", "https://ana:hunter2@mlflow:5000"), None,
                         frozenset({"passed"}), 1)
    assert task.describe() == "python run.py --tracking-uri https://ana:********@mlflow:5000"


def test_paths_may_not_leave_the_working_directory() -> None:
    with pytest.raises(BadInput, match="workingdir.*inside the working directory"):
        _parse(_cruise(_stage("a", '<exec command="x" workingdir="../up" />')))
    with pytest.raises(BadInput, match="'src'"):
        _parse(_cruise(_stage("a", _py("pass"), artifacts='<artifact type="build" src="C:/x" />')))


def test_bad_files_are_one_line_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="not found"):
        gocd.load_config(tmp_path / "missing.xml")
    broken = tmp_path / "broken.xml"
    broken.write_text("<cruise>\n<pipelines>\n</cruise>\n", encoding="utf-8")
    with pytest.raises(BadInput, match=r"broken.xml: line 3: invalid XML"):
        gocd.load_config(broken)
    with pytest.raises(BadInput, match="several pipelines"):
        gocd.select_pipeline(gocd.parse_config(_cruise(_stage("a", _py("pass"))), source=Path("c")) * 2, None)


def test_label_template_tokens() -> None:
    parsed = _parse(_cruise(_stage("a", _py("pass"))).replace(
        'name="demo"', 'name="demo" labeltemplate="v${COUNT}-${repo[:7]}-${env:WHO}"'))
    assert gocd.label_for(parsed, 12, "0123456789abcdef", {"WHO": "me"}) == "v12-0123456-me"
    with pytest.raises(BadInput, match="labeltemplate token"):
        _parse(_cruise(_stage("a", _py("pass"))).replace('name="demo"', 'name="demo" labeltemplate="${nope}"'))


# ----------------------------------------------------------------------------------------------- GoCD rules


@pytest.mark.parametrize("runif, status, expected", [
    ({"passed"}, "passed", True), ({"passed"}, "failed", False), ({"failed"}, "passed", False),
    ({"failed"}, "failed", True), ({"any"}, "failed", True), ({"any"}, "passed", True),
])
def test_runif_rules(runif: set[str], status: str, expected: bool) -> None:
    assert pipeline.should_run(frozenset(runif), status) is expected


def test_environment_precedence_overrides_go_vars_and_path(tmp_path: Path) -> None:
    def var(name: str, value: str) -> str:
        return f'<variable name="{name}"><value>{value}</value></variable>'

    xml = _cruise(
        '<stage name="s"><environmentvariables>' + var("LEVEL", "stage") + var("S", "1") + "</environmentvariables>"
        '<jobs><job name="j"><environmentvariables>' + var("LEVEL", "job") + "</environmentvariables>"
        "<tasks />" "</job></jobs></stage>",
        pipeline_extra="<environmentvariables>" + var("LEVEL", "pipeline") + var("P", "1")
        + var("MLFLOW_TRACKING_URI", "http://server") + var("ML_VENV_ROOT", "C:\\ml_venvs")
        + '<variable name="TOKEN" secure="true"><encryptedValue>AES:xx</encryptedValue></variable>'
        + "</environmentvariables>")
    parsed = _parse(xml)
    stage, job = parsed.stages[0], parsed.stages[0].jobs[0]
    settings = pipeline.LocalSettings(source=tmp_path, state_dir=tmp_path / ".pipeline",
                                      overrides={"MLFLOW_TRACKING_URI": "sqlite:///x.db", "ML_VENV_ROOT": None},
                                      toolkit_bin=Path("/toolkit/bin"))
    lines: list[str] = []
    go_vars = pipeline.go_variables(parsed, counter=4, label="4", revision="abc", stage="s", job="j")
    env = pipeline.job_environment(parsed, stage, job, base={"PATH": "/usr/bin", "LEVEL": "agent", "TOKEN": "t0p"},
                                   go_vars=go_vars, settings=settings, echo=lines.append)
    assert env["LEVEL"] == "job" and env["S"] == env["P"] == "1" and env["TOKEN"] == "t0p"
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:///x.db" and "ML_VENV_ROOT" not in env
    assert env["PATH"] == os.pathsep.join(["/toolkit/bin", "/usr/bin"])
    assert env["GO_PIPELINE_COUNTER"] == "4" and env["GO_STAGE_NAME"] == "s" and env["GO_JOB_NAME"] == "j"
    assert env["GO_REVISION"] == env["GO_REVISION_REPO"] == "abc"
    assert not any("t0p" in line for line in lines), "secure values are never printed"
    lines.clear()
    secret = pipeline.LocalSettings(source=tmp_path, state_dir=tmp_path, toolkit_bin=Path("/tk"), overrides={
        "MLFLOW_TRACKING_TOKEN": "abc123", "MLFLOW_TRACKING_URI": "https://user:hunter2@mlflow.example/"})
    pipeline.job_environment(parsed, stage, job, base={"TOKEN": "t0p"}, go_vars={}, settings=secret,
                             echo=lines.append)
    assert not any("abc123" in line or "hunter2" in line for line in lines)
    assert any("https://user:********@mlflow.example/" in line for line in lines)
    with pytest.raises(BadInput, match="secure variable 'TOKEN'.*set TOKEN in your environment"):
        pipeline.job_environment(parsed, stage, job, base={}, go_vars={}, settings=settings, echo=lines.append)


def test_secure_variable_from_env_option_is_accepted_and_never_echoed(tmp_path: Path) -> None:
    parsed = _parse(_cruise(_stage("s", _py("pass")), pipeline_extra=(
        '<environmentvariables><variable name="DB_CONN" secure="true"><encryptedValue>AES:xx</encryptedValue>'
        '</variable></environmentvariables>')))
    settings = pipeline.LocalSettings(source=tmp_path, state_dir=tmp_path, toolkit_bin=Path("/tk"),
                                      overrides={"DB_CONN": "hunter2"})
    pipeline._check_secure_variables(parsed, {}, settings.overrides)  # --env alone is enough
    for base in ({}, {"DB_CONN": "from-env"}):
        lines: list[str] = []
        env = pipeline.job_environment(parsed, parsed.stages[0], parsed.stages[0].jobs[0], base=base, go_vars={},
                                       settings=settings, echo=lines.append)
        assert env["DB_CONN"] == "hunter2"
        assert not any("hunter2" in line or "from-env" in line for line in lines), lines
    with pytest.raises(BadInput, match="secure variable 'DB_CONN'.*--env DB_CONN=VALUE"):
        pipeline._check_secure_variables(parsed, {}, {})


def test_callers_go_variables_do_not_leak_into_jobs(tmp_path: Path) -> None:
    """A rehearsal run inside a GoCD job: the outer pipeline's GO_* must not pose as the rehearsal's."""
    parsed = _parse(_cruise(_stage("s", _py("pass"))))
    settings = pipeline.LocalSettings(source=tmp_path, state_dir=tmp_path, toolkit_bin=Path("/tk"))
    outer = {"GO_REVISION_OTHER": "outer", "GO_PIPELINE_NAME": "outer", "GO_MATERIAL_BRANCH_X": "main",
             "go_lower": "x", "GOPATH": "/go", "KEEP": "1"}
    env = pipeline.job_environment(parsed, parsed.stages[0], parsed.stages[0].jobs[0], base=outer,
                                   go_vars={"GO_PIPELINE_NAME": "mine"}, settings=settings, echo=lambda s: None)
    assert env["GO_PIPELINE_NAME"] == "mine" and env["KEEP"] == "1" and env["GOPATH"] == "/go"
    assert not {"GO_REVISION_OTHER", "GO_MATERIAL_BRANCH_X", "go_lower"} & set(env)


def test_windows_variable_names_are_case_insensitive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "_PLATFORM", "win32")
    parsed = _parse(_cruise(_stage("s", _py("pass")), pipeline_extra=(
        '<environmentvariables><variable name="PYTHONUTF8"><value>1</value></variable></environmentvariables>')))
    settings = pipeline.LocalSettings(source=tmp_path, state_dir=tmp_path, toolkit_bin=Path("C:/tk"),
                                      overrides={"ml_venv_root": "D:/venvs"})
    env = pipeline.job_environment(parsed, parsed.stages[0], parsed.stages[0].jobs[0], settings=settings,
                                   base={"Path": "C:/Windows", "PythonUtf8": "0", "ML_VENV_ROOT": "C:/ml"},
                                   go_vars={}, echo=lambda s: None)
    assert env == {"PYTHONUTF8": "1", "ml_venv_root": "D:/venvs", "Path": os.pathsep.join(["C:/tk", "C:/Windows"])}


def _tree(root: Path, files: list[str]) -> None:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name, encoding="utf-8")


def _published(artifact: gocd.Artifact, root: Path) -> list[str]:
    return sorted(dest for _, dest in pipeline.artifact_targets(artifact, root))


def test_artifact_src_dest_rules_follow_gocd(tmp_path: Path) -> None:
    _tree(tmp_path, ["out/model.pkl", "out/data/a.csv", "test/a/b/a.log", "test/x.log", "test/a/keep.txt"])
    assert _published(gocd.Artifact("out/model.pkl", "pkg", 1), tmp_path) == ["pkg/model.pkl"]
    assert _published(gocd.Artifact("out/data", "", 1), tmp_path) == ["data"]
    assert _published(gocd.Artifact("test/**/*/a.log", "logs", 1), tmp_path) == ["logs/a/b/a.log"]
    assert _published(gocd.Artifact("**/*.log", "", 1), tmp_path) == ["test/a/b/a.log", "test/x.log"]
    assert _published(gocd.Artifact("test/*.log", "logs", 1), tmp_path) == ["logs/x.log"]
    assert _published(gocd.Artifact("nothing/here", "", 1), tmp_path) == []


def test_publish_copies_folders_and_fails_a_passing_job_on_a_missing_source(tmp_path: Path) -> None:
    _tree(tmp_path / "w", ["out/data/a.csv", "out/data/sub/b.csv"])
    job = gocd.Job("j", (), (gocd.Artifact("out/data", "d", 1), gocd.Artifact("missing.txt", "", 2)), (), (), 1)
    lines: list[str] = []
    assert not pipeline.publish_artifacts(job, workdir=tmp_path / "w", target=tmp_path / "store", job_passed=True,
                                          echo=lines.append)
    assert (tmp_path / "store/d/data/sub/b.csv").read_text() == "out/data/sub/b.csv"
    assert any("cannot match any resource" in line for line in lines)
    assert pipeline.publish_artifacts(job, workdir=tmp_path / "w", target=tmp_path / "s2", job_passed=False,
                                      echo=lines.append) is True  # failed job: stays failed, not 'more failed'


def test_counter_goes_up_per_run_and_state_dir_is_marked(tmp_path: Path) -> None:
    state = tmp_path / ".pipeline"
    assert [pipeline.next_counter(state, "p") for _ in range(3)] == [1, 2, 3]
    assert pipeline.next_counter(state, "other") == 1
    (state / "counters.json").unlink()
    (state / "artifacts" / "p" / "7").mkdir(parents=True)
    assert pipeline.next_counter(state, "p") == 8, "existing run folders are never reused"
    assert (state / "CACHEDIR.TAG").is_file() and (state / ".gitignore").read_text() == "*\n"


def test_source_files_use_git_and_skip_ignored_and_state(tmp_path: Path) -> None:
    _tree(tmp_path, ["a.txt", "ignored.log", "sub/b.txt", ".pipeline/work/x.txt"])
    (tmp_path / ".gitignore").write_text("*.log\n", encoding="utf-8")
    os.system(f"git -C '{tmp_path}' init -q")
    assert sorted(pipeline.source_files(tmp_path, skip=tmp_path / ".pipeline")) == [".gitignore", "a.txt",
                                                                                     "sub/b.txt"]


def test_source_files_without_git_is_a_filtered_copy(tmp_path: Path, git_missing: None) -> None:
    repo = tmp_path / "repo"
    _tree(repo, ["a.txt", ".venv/bin/python", "x/__pycache__/m.pyc", "out/y", "mlflow.db", "keep/z.txt"])
    assert sorted(pipeline.source_files(repo)) == ["a.txt", "keep/z.txt"]


def test_python_command_resolves_through_the_job_path(tmp_path: Path) -> None:
    env = {"PATH": os.pathsep.join([str(TOOLKIT_PYTHON.parent), "/usr/bin"])}
    assert Path(pipeline.resolve_command("python", cwd=tmp_path, env=env)).parent == TOOLKIT_PYTHON.parent
    _tree(tmp_path, ["tools/run.sh"])
    assert pipeline.resolve_command("tools/run.sh", cwd=tmp_path, env=env) == str(tmp_path / "tools/run.sh")
    assert pipeline.resolve_command("no-such-tool-xyz", cwd=tmp_path, env=env) is None


def test_batch_files_run_through_cmd_on_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def fake_run(argv, **kwargs):  # type: ignore[no-untyped-def]
        assert isinstance(argv, pipeline.proc.WindowsCommandLine), "one command line, quoted for cmd /s /c"
        seen.append(str(argv))
        return pipeline.proc.Result(tuple(argv), 0, "", "")

    monkeypatch.setattr(pipeline, "_PLATFORM", "win32")
    monkeypatch.setattr(pipeline, "resolve_command", lambda *a, **k: "C:\\tools\\build.bat")
    monkeypatch.setattr(pipeline.proc, "run", fake_run)
    task = gocd.ExecTask("build.bat", ("a b", 'say "hi"'), None, frozenset({"passed"}), 1)
    assert pipeline.run_exec(task, workdir=tmp_path, env={}, echo=lambda s: None)
    assert seen == ['cmd /s /c "C:\\tools\\build.bat "a b" "say \\"hi\\"""']


def test_batch_file_in_a_folder_with_spaces_keeps_its_quotes_through_cmd_s() -> None:
    line = pipeline.windows_batch_command(["C:\\Users\\Jane Doe\\repo\\tools\\build.bat", "x"])
    assert isinstance(line, pipeline.proc.WindowsCommandLine)
    assert line == 'cmd /s /c ""C:\\Users\\Jane Doe\\repo\\tools\\build.bat" x"'  # /s strips the outer pair only


# ----------------------------------------------------------------------------------------------- executor (real)

_WRITE_ENV = ("import json, os, sys; from pathlib import Path; Path('out').mkdir(exist_ok=True); "
              "Path('out/env.json').write_text(json.dumps({k: v for k, v in os.environ.items() "
              "if k.startswith(('GO_', 'MLFLOW_', 'ML_VENV', 'LEVEL'))} | {'prefix': sys.prefix}))")


def _two_stage_xml() -> str:
    first = _stage("make", _py(_WRITE_ENV) + _py("open('secret.txt', 'w').write('not published')")
                   + _py("from pathlib import Path; Path('out/data').mkdir(); Path('out/data/x.txt').write_text('42')"),
                   artifacts='<artifact type="build" src="out/data" dest="d" /><artifact type="build" '
                             'src="out/env.json" />')
    second = _stage("use", '<fetchartifact artifactOrigin="gocd" stage="make" job="make" srcdir="d/data" '
                           'dest="inputs" />' + _py(
        "from pathlib import Path; import os; assert Path('inputs/data/x.txt').read_text() == '42'; "
        "Path('out').mkdir(exist_ok=True); Path('out/saw_secret.txt').write_text(str(os.path.exists('secret.txt')))"),
        artifacts='<artifact type="build" src="out/saw_secret.txt" />')
    var = '<environmentvariables><variable name="MLFLOW_TRACKING_URI"><value>http://gocd-only</value></variable>' \
          '<variable name="ML_VENV_ROOT"><value>C:\\ml_venvs</value></variable></environmentvariables>'
    return _cruise(first + second, pipeline_extra=var)


def _run(tmp_path: Path, xml: str, *args: str) -> tuple[int, str, str]:
    repo = tmp_path / "my repo"
    repo.mkdir(exist_ok=True)
    (repo / "README.txt").write_text("material", encoding="utf-8")
    (repo / "cfg.xml").write_text(xml, encoding="utf-8")
    done = run_script("run_pipeline.py", "--config", str(repo / "cfg.xml"), "--source", str(repo), *args,
                      cwd=tmp_path, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_two_stages_pass_data_only_through_artifacts(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, _two_stage_xml())
    assert code == 0, out + err
    store = tmp_path / "my repo/.pipeline/artifacts/demo/1"
    assert (store / "make/1/make/d/data/x.txt").read_text() == "42"
    assert (store / "use/1/use/saw_secret.txt").read_text() == "False", "each job has its own fresh working copy"
    env = json.loads((store / "make/1/make/env.json").read_text())
    assert env["GO_PIPELINE_NAME"] == "demo" and env["GO_PIPELINE_COUNTER"] == "1"
    assert env["GO_STAGE_NAME"] == env["GO_JOB_NAME"] == "make" and env["GO_PIPELINE_LABEL"] == "1"
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{(tmp_path / 'my repo' / 'mlflow.db').as_posix()}"
    assert "ML_VENV_ROOT" not in env, "the XML's Windows path is for agents; the tools use their own default"
    assert Path(env["prefix"]).resolve() == Path(sys.prefix).resolve(), "'python' is the toolkit's Python"
    assert "[make/make]" in out and "stage" in out and "passed" in out and "results:" in out

    code, _, err = _run(tmp_path, _two_stage_xml(), "--shared-workdir", "--tracking-uri", "http://127.0.0.1:1",
                        "--venv-root", str(tmp_path / "venvs"), "--env", "LEVEL=cli")
    assert code == 0, err
    store = tmp_path / "my repo/.pipeline/artifacts/demo/2"
    assert (store / "use/1/use/saw_secret.txt").read_text() == "True", "--shared-workdir shares one folder"
    env = json.loads((store / "make/1/make/env.json").read_text())
    assert env["GO_PIPELINE_COUNTER"] == "2" and env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:1"
    assert env["ML_VENV_ROOT"] == str(tmp_path / "venvs") and env["LEVEL"] == "cli"


def test_failed_task_runif_and_stop_after_failed_stage(tmp_path: Path) -> None:
    tasks = (_py("open('ran1', 'w')") + _py("raise SystemExit(3)") + _py("open('skipped', 'w')")
             + _py("open('on_failure', 'w')", "failed") + _py("open('always', 'w')", "any"))
    xml = _cruise(_stage("first", tasks, artifacts='<artifact type="build" src="ran1" />'
                                                   '<artifact type="build" src="skipped" />')
                  + _stage("second", _py("open('never', 'w')")))
    code, out, err = _run(tmp_path, xml)
    assert code == 7, out + err
    work = tmp_path / "my repo/.pipeline/work/demo/1/first/first"
    assert {p.name for p in work.iterdir()} >= {"ran1", "on_failure", "always"}
    assert not (work / "skipped").exists()
    assert not (tmp_path / "my repo/.pipeline/work/demo/1/second").exists()
    assert (tmp_path / "my repo/.pipeline/artifacts/demo/1/first/1/first/ran1").exists(), "published even on failure"
    assert "task failed with exit code 3" in out and "FAILED" in out and "not run" in out
    assert err.strip().count("\n") == 0 and "first/first" in err and "task 2" in err


def test_unsupported_element_fails_before_anything_runs(tmp_path: Path) -> None:
    code, out, err = _run(tmp_path, _cruise(_stage("a", _py("open('ran', 'w')") + '<ant target="x" />')))
    assert code == 2
    assert err.startswith("error: ") and "<ant>" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "my repo/.pipeline").exists()


def test_missing_command_fails_the_job(tmp_path: Path) -> None:
    code, out, _ = _run(tmp_path, _cruise(_stage("a", '<exec command="no-such-tool-xyz"><arg>x</arg></exec>')))
    assert code == 7 and "command not found: 'no-such-tool-xyz'" in out


def test_dry_run_prints_the_plan_of_the_example() -> None:
    done = run_script("run_pipeline.py", "--dry-run", cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.index("stage ingest") < done.stdout.index("stage features") < done.stdout.index("stage train")
    assert "fetchartifact ingest/ingest srcdir=ingest_outputs dest=inputs" in done.stdout


def test_shared_workdir_still_honours_clean_working_dir_and_fetch_materials(tmp_path: Path) -> None:
    first = _stage("one", _py("open('left_over', 'w')"))
    second = _stage("two", _py("import os; assert not os.path.exists('left_over'); "
                               "assert os.path.exists('README.txt'); open('ok2', 'w')"),
                    artifacts='<artifact type="build" src="ok2" />').replace(
        '<stage name="two">', '<stage name="two" cleanWorkingDir="true">')
    third = _stage("three", _py("import os; assert not os.path.exists('README.txt'); open('ok3', 'w')"),
                   artifacts='<artifact type="build" src="ok3" />').replace(
        '<stage name="three">', '<stage name="three" cleanWorkingDir="true" fetchMaterials="false">')
    code, out, err = _run(tmp_path, _cruise(first + second + third), "--shared-workdir")
    assert code == 0, out + err
    assert "cleaning working directory" in out


def test_local_tracking_uri_is_absolute_on_windows_and_posix() -> None:
    assert run_pipeline.local_tracking_uri(PureWindowsPath(r"C:\Users\Ana Lopez\ml repo")) == \
        "sqlite:///C:/Users/Ana Lopez/ml repo/mlflow.db"
    assert run_pipeline.local_tracking_uri(PurePosixPath("/home/ana/repo")) == "sqlite:////home/ana/repo/mlflow.db"


def test_closing_note_names_the_toolkits_own_mlflow_and_jupyter() -> None:
    """The newcomer copies the line: it must be the mlflow/jupyter installed with requirements.txt."""
    for name in ("mlflow", "jupyter"):
        shown = run_pipeline._toolkit_command(name, REPO_ROOT)
        assert Path(shown).name == name and (Path(shown) if Path(shown).is_absolute() else REPO_ROOT / shown).is_file()
    assert run_pipeline._toolkit_command("no-such-tool", REPO_ROOT) == "no-such-tool"
