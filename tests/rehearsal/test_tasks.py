"""mlops_kit.rehearsal.tasks: one task as an agent runs it (runif, the command found on the job's PATH, batch files
through cmd /s /c, commands that cannot start)."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest

from helpers import TOOLKIT_PYTHON
from helpers_gocd import cruise_xml, py_task, rehearse, stage_xml, write_tree
from mlops_kit.core import paths, proc
from mlops_kit.rehearsal import gocd, tasks


@pytest.mark.parametrize("runif, status, expected", [
    ({"passed"}, "passed", True), ({"passed"}, "failed", False), ({"failed"}, "passed", False),
    ({"failed"}, "failed", True), ({"any"}, "failed", True), ({"any"}, "passed", True),
])
def test_runif_rules(runif: set[gocd.RunIf], status: str, expected: bool) -> None:
    assert tasks.should_run(frozenset(runif), status) is expected


def test_python_command_resolves_through_the_job_path(tmp_path: Path) -> None:
    env = {"PATH": os.pathsep.join([str(TOOLKIT_PYTHON.parent), "/usr/bin"])}
    assert Path(tasks.resolve_command("python", cwd=tmp_path, env=env) or "").parent == TOOLKIT_PYTHON.parent
    write_tree(tmp_path, ["tools/run.sh"])
    assert tasks.resolve_command("tools/run.sh", cwd=tmp_path, env=env) == str(tmp_path / "tools/run.sh")
    assert tasks.resolve_command("no-such-tool-xyz", cwd=tmp_path, env=env) is None


def test_batch_files_run_through_cmd_on_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    class Done:
        @staticmethod
        def wait(stop: object = None) -> int:
            return 0

    def fake_start(argv, **kwargs):  # type: ignore[no-untyped-def]
        assert isinstance(argv, proc.WindowsCommandLine), "one command line, quoted for cmd /s /c"
        seen.append(str(argv))
        return Done()

    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    monkeypatch.setattr(tasks, "resolve_command", lambda *a, **k: "C:\\tools\\build.bat")
    monkeypatch.setattr(tasks.proc, "start", fake_start)
    task = gocd.ExecTask("build.bat", ("a b", 'say "hi"'), None, frozenset({"passed"}), 1)
    assert tasks.run_exec(task, workdir=tmp_path, env={}, echo=lambda s: None) == "passed"
    assert seen == ['cmd /s /c "C:\\tools\\build.bat "a b" "say \\"hi\\"""']


def test_batch_file_in_a_folder_with_spaces_keeps_its_quotes_through_cmd_s() -> None:
    line = tasks.windows_batch_command(["C:\\Users\\Jane Doe\\repo\\tools\\build.bat", "x"])
    assert isinstance(line, proc.WindowsCommandLine)
    assert line == 'cmd /s /c ""C:\\Users\\Jane Doe\\repo\\tools\\build.bat" x"'  # /s strips the outer pair only


def test_a_task_runs_in_its_workingdir_and_reports_its_outcome(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    env = {"PATH": str(TOOLKIT_PYTHON.parent)}
    lines: list[str] = []
    ok = gocd.ExecTask("python", ("-c", "import os; print(os.path.basename(os.getcwd()))"), "sub",
                       frozenset({"passed"}), 1)
    assert tasks.run_exec(ok, workdir=tmp_path, env=env, echo=lines.append) == "passed"
    assert lines[-1].strip() == "sub"
    bad = gocd.ExecTask("python", ("-c", "raise SystemExit(4)"), None, frozenset({"passed"}), 1)
    assert tasks.run_exec(bad, workdir=tmp_path, env=env, echo=lines.append) == "failed"
    assert lines[-1].startswith("[go] task failed with exit code 4")
    missing = gocd.ExecTask("python", (), "nowhere", frozenset({"passed"}), 1)
    assert tasks.run_exec(missing, workdir=tmp_path, env=env, echo=lines.append) == "failed"
    assert "is not a directory!" in lines[-1]


def test_missing_command_fails_the_job_as_on_an_agent(tmp_path: Path) -> None:
    """Not a config rule (the server cannot know an agent's PATH): the task fails at run time, as on the agent."""
    done = rehearse(tmp_path, cruise_xml(stage_xml("a", '<exec command="no-such-tool-xyz"><arg>x</arg></exec>')))
    assert done.returncode == 7, done.stdout
    assert "Please make sure [no-such-tool-xyz] can be executed on this agent." in done.stdout
    assert "(exit code 127)" in done.stdout


@pytest.mark.skipif(sys.platform == "win32", reason="the execute bit is POSIX's")
def test_a_task_that_is_not_executable_fails_its_job_not_the_rehearsal(tmp_path: Path) -> None:
    """It used to abort the whole rehearsal with exit 1 (no runif="any" task, nothing published, no summary). Now:
    that task fails (126), the job fails, runif="any" still runs, artifacts are published, exit 7."""
    repo = tmp_path / "my repo"
    repo.mkdir()
    (repo / "tool.sh").write_text("#!/bin/sh\necho never\n", encoding="utf-8")
    (repo / "tool.sh").chmod(0o644)
    xml = cruise_xml(stage_xml("a", '<exec command="./tool.sh" />' + py_task("open('always', 'w')", "any"),
                               artifacts='<artifact type="build" src="always" />') + stage_xml("b", py_task("pass")))
    done = rehearse(tmp_path, xml)
    out, err = done.stdout, done.stderr
    assert done.returncode == 7, out + err
    assert "Please make sure [./tool.sh] can be executed on this agent." in out and "(exit code 126)" in out
    assert (repo / ".pipeline/artifacts/demo/1/a/1/a/always").is_file()
    assert re.search(r"^\s+a\s+FAILED", out, re.MULTILINE) and "total " in out
    assert err.startswith("error: pipeline demo #1: a/a failed at task 1") and err.count("\n") == 1
