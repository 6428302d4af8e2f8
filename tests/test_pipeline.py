"""mlops_kit.pipeline: the local rehearsal (working copies, tasks, runif, stages in order), run for real on small
XML files."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from helpers import TOOLKIT_PYTHON, run_script
from helpers_gocd import WRITE_ENV, cruise_xml, py_task, stage_xml, write_tree
from mlops_kit import gocd, paths, pipeline


@pytest.mark.parametrize("runif, status, expected", [
    ({"passed"}, "passed", True), ({"passed"}, "failed", False), ({"failed"}, "passed", False),
    ({"failed"}, "failed", True), ({"any"}, "failed", True), ({"any"}, "passed", True),
])
def test_runif_rules(runif: set[str], status: str, expected: bool) -> None:
    assert pipeline.should_run(frozenset(runif), status) is expected


def test_counter_goes_up_per_run_and_state_dir_is_marked(tmp_path: Path) -> None:
    state = tmp_path / ".pipeline"
    assert [pipeline.next_counter(state, "p") for _ in range(3)] == [1, 2, 3]
    assert pipeline.next_counter(state, "other") == 1
    (state / "counters.json").unlink()
    (state / "artifacts" / "p" / "7").mkdir(parents=True)
    assert pipeline.next_counter(state, "p") == 8, "existing run folders are never reused"
    assert (state / "CACHEDIR.TAG").is_file() and (state / ".gitignore").read_text() == "*\n"


def test_source_files_use_git_and_skip_ignored_and_state(tmp_path: Path) -> None:
    write_tree(tmp_path, ["a.txt", "ignored.log", "sub/b.txt", ".pipeline/work/x.txt"])
    (tmp_path / ".gitignore").write_text("*.log\n", encoding="utf-8")
    os.system(f"git -C '{tmp_path}' init -q")
    assert sorted(pipeline.source_files(tmp_path, skip=tmp_path / ".pipeline")) == [".gitignore", "a.txt",
                                                                                     "sub/b.txt"]


def test_source_files_without_git_is_a_filtered_copy(tmp_path: Path, git_missing: None) -> None:
    repo = tmp_path / "repo"
    write_tree(repo, ["a.txt", ".venv/bin/python", "x/__pycache__/m.pyc", "out/y", "mlflow.db", "keep/z.txt"])
    assert sorted(pipeline.source_files(repo)) == ["a.txt", "keep/z.txt"]


def test_python_command_resolves_through_the_job_path(tmp_path: Path) -> None:
    env = {"PATH": os.pathsep.join([str(TOOLKIT_PYTHON.parent), "/usr/bin"])}
    assert Path(pipeline.resolve_command("python", cwd=tmp_path, env=env)).parent == TOOLKIT_PYTHON.parent
    write_tree(tmp_path, ["tools/run.sh"])
    assert pipeline.resolve_command("tools/run.sh", cwd=tmp_path, env=env) == str(tmp_path / "tools/run.sh")
    assert pipeline.resolve_command("no-such-tool-xyz", cwd=tmp_path, env=env) is None


def test_batch_files_run_through_cmd_on_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def fake_run(argv, **kwargs):  # type: ignore[no-untyped-def]
        assert isinstance(argv, pipeline.proc.WindowsCommandLine), "one command line, quoted for cmd /s /c"
        seen.append(str(argv))
        return pipeline.proc.Result(tuple(argv), 0, "", "")

    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    monkeypatch.setattr(pipeline, "resolve_command", lambda *a, **k: "C:\\tools\\build.bat")
    monkeypatch.setattr(pipeline.proc, "run", fake_run)
    task = gocd.ExecTask("build.bat", ("a b", 'say "hi"'), None, frozenset({"passed"}), 1)
    assert pipeline.run_exec(task, workdir=tmp_path, env={}, echo=lambda s: None)
    assert seen == ['cmd /s /c "C:\\tools\\build.bat "a b" "say \\"hi\\"""']


def test_batch_file_in_a_folder_with_spaces_keeps_its_quotes_through_cmd_s() -> None:
    line = pipeline.windows_batch_command(["C:\\Users\\Jane Doe\\repo\\tools\\build.bat", "x"])
    assert isinstance(line, pipeline.proc.WindowsCommandLine)
    assert line == 'cmd /s /c ""C:\\Users\\Jane Doe\\repo\\tools\\build.bat" x"'  # /s strips the outer pair only


def _two_stage_xml() -> str:
    first = stage_xml("make", py_task(WRITE_ENV) + py_task("open('secret.txt', 'w').write('not published')")
                   + py_task("from pathlib import Path; Path('out/data').mkdir(); "
                             "Path('out/data/x.txt').write_text('42')"),
                   artifacts='<artifact type="build" src="out/data" dest="d" /><artifact type="build" '
                             'src="out/env.json" />')
    second = stage_xml("use", '<fetchartifact artifactOrigin="gocd" stage="make" job="make" srcdir="d/data" '
                           'dest="inputs" />' + py_task(
        "from pathlib import Path; import os; assert Path('inputs/data/x.txt').read_text() == '42'; "
        "Path('out').mkdir(exist_ok=True); Path('out/saw_secret.txt').write_text(str(os.path.exists('secret.txt')))"),
        artifacts='<artifact type="build" src="out/saw_secret.txt" />')
    var = '<environmentvariables><variable name="MLFLOW_TRACKING_URI"><value>http://gocd-only</value></variable>' \
          '<variable name="ML_VENV_ROOT"><value>C:\\ml_venvs</value></variable></environmentvariables>'
    return cruise_xml(first + second, pipeline_extra=var)


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
    tasks = (py_task("open('ran1', 'w')") + py_task("raise SystemExit(3)") + py_task("open('skipped', 'w')")
             + py_task("open('on_failure', 'w')", "failed") + py_task("open('always', 'w')", "any"))
    xml = cruise_xml(stage_xml("first", tasks, artifacts='<artifact type="build" src="ran1" />'
                                                   '<artifact type="build" src="skipped" />')
                  + stage_xml("second", py_task("open('never', 'w')")))
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
    code, out, err = _run(tmp_path, cruise_xml(stage_xml("a", py_task("open('ran', 'w')") + '<ant target="x" />')))
    assert code == 2
    assert err.startswith("error: ") and "<ant>" in err and err.strip().count("\n") == 0
    assert not (tmp_path / "my repo/.pipeline").exists()


def test_missing_command_fails_the_job(tmp_path: Path) -> None:
    code, out, _ = _run(tmp_path, cruise_xml(stage_xml("a", '<exec command="no-such-tool-xyz"><arg>x</arg></exec>')))
    assert code == 7 and "command not found: 'no-such-tool-xyz'" in out


def test_shared_workdir_still_honours_clean_working_dir_and_fetch_materials(tmp_path: Path) -> None:
    first = stage_xml("one", py_task("open('left_over', 'w')"))
    second = stage_xml("two", py_task("import os; assert not os.path.exists('left_over'); "
                               "assert os.path.exists('README.txt'); open('ok2', 'w')"),
                    artifacts='<artifact type="build" src="ok2" />').replace(
        '<stage name="two">', '<stage name="two" cleanWorkingDir="true">')
    third = stage_xml("three", py_task("import os; assert not os.path.exists('README.txt'); open('ok3', 'w')"),
                   artifacts='<artifact type="build" src="ok3" />').replace(
        '<stage name="three">', '<stage name="three" cleanWorkingDir="true" fetchMaterials="false">')
    code, out, err = _run(tmp_path, cruise_xml(first + second + third), "--shared-workdir")
    assert code == 0, out + err
    assert "cleaning working directory" in out


def test_local_tracking_uri_is_absolute_on_windows_and_posix() -> None:
    assert pipeline.local_tracking_uri(PureWindowsPath(r"C:\Users\Ana Lopez\ml repo")) == \
        "sqlite:///C:/Users/Ana Lopez/ml repo/mlflow.db"
    assert pipeline.local_tracking_uri(PurePosixPath("/home/ana/repo")) == "sqlite:////home/ana/repo/mlflow.db"
