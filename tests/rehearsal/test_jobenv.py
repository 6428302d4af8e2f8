"""mlops_kit.rehearsal.jobenv: a job environment as a GoCD agent builds it, and what a local rehearsal changes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers_gocd import cruise_xml, parse_xml, py_task, stage_xml
from mlops_kit.core import paths
from mlops_kit.core.errors import BadInput
from mlops_kit.rehearsal import jobenv


def test_environment_precedence_overrides_go_vars_and_path(tmp_path: Path) -> None:
    def var(name: str, value: str) -> str:
        return f'<variable name="{name}"><value>{value}</value></variable>'

    xml = cruise_xml(
        '<stage name="s"><environmentvariables>' + var("LEVEL", "stage") + var("S", "1") + "</environmentvariables>"
        '<jobs><job name="j"><environmentvariables>' + var("LEVEL", "job") + "</environmentvariables>"
        "<tasks />" "</job></jobs></stage>",
        pipeline_extra="<environmentvariables>" + var("LEVEL", "pipeline") + var("P", "1")
        + var("MLFLOW_TRACKING_URI", "http://server") + var("ML_VENV_ROOT", "C:\\ml_venvs")
        + '<variable name="TOKEN" secure="true"><encryptedValue>AES:xx</encryptedValue></variable>'
        + "</environmentvariables>")
    parsed = parse_xml(xml)
    stage, job = parsed.stages[0], parsed.stages[0].jobs[0]
    local = {"overrides": {"MLFLOW_TRACKING_URI": "sqlite:///x.db", "ML_VENV_ROOT": None},
             "toolkit_bin": Path("/toolkit/bin")}
    lines: list[str] = []
    go_vars = jobenv.go_variables(parsed, counter=4, label="4", revision="abc", stage="s", job="j")
    env = jobenv.job_environment(parsed, stage, job, base={"PATH": "/usr/bin", "LEVEL": "agent", "TOKEN": "t0p"},
                                 go_vars=go_vars, **local, echo=lines.append)
    assert env["LEVEL"] == "job" and env["S"] == env["P"] == "1" and env["TOKEN"] == "t0p"
    assert env["MLFLOW_TRACKING_URI"] == "sqlite:///x.db" and "ML_VENV_ROOT" not in env
    assert env["PATH"] == os.pathsep.join(["/toolkit/bin", "/usr/bin"])
    assert env["GO_PIPELINE_COUNTER"] == "4" and env["GO_STAGE_NAME"] == "s" and env["GO_JOB_NAME"] == "j"
    assert env["GO_REVISION"] == env["GO_REVISION_REPO"] == "abc"
    assert not any("t0p" in line for line in lines), "secure values are never printed"
    lines.clear()
    secret = {"MLFLOW_TRACKING_TOKEN": "abc123", "MLFLOW_TRACKING_URI": "https://user:hunter2@mlflow.example/"}
    jobenv.job_environment(parsed, stage, job, base={"TOKEN": "t0p"}, go_vars={}, overrides=secret,
                           toolkit_bin=Path("/tk"), echo=lines.append)
    assert not any("abc123" in line or "hunter2" in line for line in lines)
    assert any("https://***@mlflow.example/" in line for line in lines)
    with pytest.raises(BadInput, match="secure variable 'TOKEN'.*set TOKEN in your environment"):
        jobenv.job_environment(parsed, stage, job, base={}, go_vars={}, **local, echo=lines.append)


def test_secure_variable_from_env_option_is_accepted_and_never_echoed(tmp_path: Path) -> None:
    parsed = parse_xml(cruise_xml(stage_xml("s", py_task("pass")), pipeline_extra=(
        '<environmentvariables><variable name="DB_CONN" secure="true"><encryptedValue>AES:xx</encryptedValue>'
        '</variable></environmentvariables>')))
    overrides = {"DB_CONN": "hunter2"}
    jobenv.check_secure_variables(parsed, {}, overrides)  # --env alone is enough
    for base in ({}, {"DB_CONN": "from-env"}):
        lines: list[str] = []
        env = jobenv.job_environment(parsed, parsed.stages[0], parsed.stages[0].jobs[0], base=base, go_vars={},
                                     overrides=overrides, toolkit_bin=Path("/tk"), echo=lines.append)
        assert env["DB_CONN"] == "hunter2"
        assert not any("hunter2" in line or "from-env" in line for line in lines), lines
    with pytest.raises(BadInput, match="secure variable 'DB_CONN'.*--env DB_CONN=VALUE"):
        jobenv.check_secure_variables(parsed, {}, {})


def test_callers_go_variables_do_not_leak_into_jobs(tmp_path: Path) -> None:
    """A rehearsal run inside a GoCD job: the outer pipeline's GO_* must not pose as the rehearsal's."""
    parsed = parse_xml(cruise_xml(stage_xml("s", py_task("pass"))))
    outer = {"GO_REVISION_OTHER": "outer", "GO_PIPELINE_NAME": "outer", "GO_MATERIAL_BRANCH_X": "main",
             "go_lower": "x", "GOPATH": "/go", "KEEP": "1"}
    env = jobenv.job_environment(parsed, parsed.stages[0], parsed.stages[0].jobs[0], base=outer,
                                 go_vars={"GO_PIPELINE_NAME": "mine"}, overrides={}, toolkit_bin=Path("/tk"),
                                 echo=lambda s: None)
    assert env["GO_PIPELINE_NAME"] == "mine" and env["KEEP"] == "1" and env["GOPATH"] == "/go"
    assert not {"GO_REVISION_OTHER", "GO_MATERIAL_BRANCH_X", "go_lower"} & set(env)


def test_windows_variable_names_are_case_insensitive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    parsed = parse_xml(cruise_xml(stage_xml("s", py_task("pass")), pipeline_extra=(
        '<environmentvariables><variable name="PYTHONUTF8"><value>1</value></variable></environmentvariables>')))
    env = jobenv.job_environment(parsed, parsed.stages[0], parsed.stages[0].jobs[0],
                                 overrides={"ml_venv_root": "D:/venvs"}, toolkit_bin=Path("C:/tk"),
                                 base={"Path": "C:/Windows", "PythonUtf8": "0", "ML_VENV_ROOT": "C:/ml"},
                                 go_vars={}, echo=lambda s: None)
    assert env == {"PYTHONUTF8": "1", "ml_venv_root": "D:/venvs", "Path": os.pathsep.join(["C:/tk", "C:/Windows"])}
