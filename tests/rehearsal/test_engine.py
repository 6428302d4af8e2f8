"""mlops_kit.rehearsal.engine: the local rehearsal (working copies, tasks, runif, stages in order), run for real on small
XML files."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path, PurePosixPath, PureWindowsPath

import psutil
import pytest

from helpers import POSIX_SIGNALS, SCRIPTS, TOOLKIT_PYTHON, default_ctrl_c, run_script
from helpers_gocd import (
    PROCESS_TREE,
    TREE_ROLES,
    WRITE_ENV,
    cruise_xml,
    job_xml,
    py_task,
    stage_jobs_xml,
    stage_xml,
    write_tree,
)
from mlops_kit.core import paths
from mlops_kit.rehearsal import engine, gocd, statedir


@pytest.mark.parametrize("runif, status, expected", [
    ({"passed"}, "passed", True), ({"passed"}, "failed", False), ({"failed"}, "passed", False),
    ({"failed"}, "failed", True), ({"any"}, "failed", True), ({"any"}, "passed", True),
])
def test_runif_rules(runif: set[str], status: str, expected: bool) -> None:
    assert engine.should_run(frozenset(runif), status) is expected


def _counter(state: Path, name: str) -> int:
    slot = statedir.claim_run(state, name)
    slot.release()
    return slot.counter


def test_counter_goes_up_per_run_and_state_dir_is_marked(tmp_path: Path) -> None:
    state = tmp_path / ".pipeline"
    assert [_counter(state, "p") for _ in range(3)] == [1, 2, 3]
    assert _counter(state, "other") == 1
    (state / "counters.json").unlink()
    (state / "artifacts" / "p" / "7").mkdir(parents=True)
    assert _counter(state, "p") == 8, "existing run folders are never reused"
    assert (state / "CACHEDIR.TAG").is_file() and (state / ".gitignore").read_text() == "*\n"


def test_source_files_use_git_and_skip_ignored_and_state(tmp_path: Path) -> None:
    write_tree(tmp_path, ["a.txt", "ignored.log", "sub/b.txt", ".pipeline/work/x.txt"])
    (tmp_path / ".gitignore").write_text("*.log\n", encoding="utf-8")
    os.system(f"git -C '{tmp_path}' init -q")
    assert sorted(engine.source_files(tmp_path, skip=tmp_path / ".pipeline")) == [".gitignore", "a.txt",
                                                                                     "sub/b.txt"]


def test_source_files_without_git_is_a_filtered_copy(tmp_path: Path, git_missing: None) -> None:
    repo = tmp_path / "repo"
    write_tree(repo, ["a.txt", ".venv/bin/python", "x/__pycache__/m.pyc", "out/y", "mlflow.db", "keep/z.txt"])
    assert sorted(engine.source_files(repo)) == ["a.txt", "keep/z.txt"]


def test_python_command_resolves_through_the_job_path(tmp_path: Path) -> None:
    env = {"PATH": os.pathsep.join([str(TOOLKIT_PYTHON.parent), "/usr/bin"])}
    assert Path(engine.resolve_command("python", cwd=tmp_path, env=env)).parent == TOOLKIT_PYTHON.parent
    write_tree(tmp_path, ["tools/run.sh"])
    assert engine.resolve_command("tools/run.sh", cwd=tmp_path, env=env) == str(tmp_path / "tools/run.sh")
    assert engine.resolve_command("no-such-tool-xyz", cwd=tmp_path, env=env) is None


def test_batch_files_run_through_cmd_on_windows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    class Done:
        @staticmethod
        def wait(stop: object = None) -> int:
            return 0

    def fake_start(argv, **kwargs):  # type: ignore[no-untyped-def]
        assert isinstance(argv, engine.proc.WindowsCommandLine), "one command line, quoted for cmd /s /c"
        seen.append(str(argv))
        return Done()

    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    monkeypatch.setattr(engine, "resolve_command", lambda *a, **k: "C:\\tools\\build.bat")
    monkeypatch.setattr(engine.proc, "start", fake_start)
    task = gocd.ExecTask("build.bat", ("a b", 'say "hi"'), None, frozenset({"passed"}), 1)
    assert engine.run_exec(task, workdir=tmp_path, env={}, echo=lambda s: None)
    assert seen == ['cmd /s /c "C:\\tools\\build.bat "a b" "say \\"hi\\"""']


def test_batch_file_in_a_folder_with_spaces_keeps_its_quotes_through_cmd_s() -> None:
    line = engine.windows_batch_command(["C:\\Users\\Jane Doe\\repo\\tools\\build.bat", "x"])
    assert isinstance(line, engine.proc.WindowsCommandLine)
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


def _run(tmp_path: Path, xml: str, *args: str, files: dict[str, str] | None = None) -> tuple[int, str, str]:
    repo = tmp_path / "my repo"
    repo.mkdir(exist_ok=True)
    (repo / "README.txt").write_text("material", encoding="utf-8")
    (repo / "cfg.xml").write_text(xml, encoding="utf-8")
    for name, text in (files or {}).items():
        (repo / name).write_text(text, encoding="utf-8")
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


def test_missing_command_fails_the_job_as_on_an_agent(tmp_path: Path) -> None:
    """Not a config rule (the server cannot know an agent's PATH): the task fails at run time, as on the agent."""
    code, out, _ = _run(tmp_path, cruise_xml(stage_xml("a", '<exec command="no-such-tool-xyz"><arg>x</arg></exec>')))
    assert code == 7, out
    assert "Please make sure [no-such-tool-xyz] can be executed on this agent." in out and "(exit code 127)" in out


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
    assert engine.local_tracking_uri(PureWindowsPath(r"C:\Users\Ana Lopez\ml repo")) == \
        "sqlite:///C:/Users/Ana Lopez/ml repo/mlflow.db"
    assert engine.local_tracking_uri(PurePosixPath("/home/ana/repo")) == "sqlite:////home/ana/repo/mlflow.db"


# ----------------------------------------------------------------------------------------------- parallel jobs


def _stamped_sleep(job: str, out: Path, seconds: float, exit_code: int = 0) -> str:
    """A task that prints, sleeps, and records when it slept (start, end) in ``out/<job>``."""
    return py_task(f"import time; from pathlib import Path; t0 = time.time(); print('{job} sleeps', flush=True); "
                   f"time.sleep({seconds}); Path(r'{out}', '{job}').write_text(f'{{t0}} {{time.time()}}'); "
                   f"raise SystemExit({exit_code})")


def _stage_row(out: str, stage: str) -> tuple[str, float, float]:
    """(status, wall seconds, sum of its jobs' seconds) from the summary's stage row."""
    found = re.search(rf"^{stage}\s+(\S+(?: \S+)?)\s+([\d.]+) \(jobs in parallel; sum of jobs ([\d.]+)\)$", out,
                      re.MULTILINE)
    assert found, out
    return found.group(1), float(found.group(2)), float(found.group(3))


@pytest.mark.slow
def test_jobs_of_a_stage_run_in_parallel_each_with_its_own_copy_and_log(tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    xml = cruise_xml(stage_jobs_xml(
        "s", job_xml("a", py_task("open('mine_a', 'w')") + _stamped_sleep("a", stamps, 4)),
        job_xml("b", py_task("import os; assert not os.path.exists('mine_a'); open('mine_b', 'w')")
                + _stamped_sleep("b", stamps, 4))) + stage_xml("after", py_task("pass")))
    code, out, err = _run(tmp_path, xml)
    assert code == 0, out + err
    (a0, a1), (b0, b1) = ([float(x) for x in (stamps / job).read_text().split()] for job in ("a", "b"))
    assert max(a0, b0) < min(a1, b1), "the two jobs' sleeps overlap"
    status, wall, total = _stage_row(out, "s")
    assert status == "passed" and wall / total < 0.8, (wall, total)  # about the time of one job, not of two
    assert "==== " in out and "stage s: 2 jobs in parallel" in out and "[s/a] a sleeps" in out
    store = tmp_path / "my repo/.pipeline/artifacts/demo/1/s/1"
    for mine, other in (("a", "b"), ("b", "a")):
        log = (store / mine / "cruise-output" / "console.log").read_text()
        assert f"{mine} sleeps" in log and f"{other} sleeps" not in log and "[s/" not in log
        assert not (tmp_path / f"my repo/.pipeline/work/demo/1/s/{mine}/mine_{other}").exists()


def test_a_failing_job_fails_the_stage_after_its_sibling_completed(tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    xml = cruise_xml(stage_jobs_xml(
        "s", job_xml("fails", py_task("raise SystemExit(3)")),
        job_xml("slow", _stamped_sleep("slow", stamps, 2) + py_task("open('done', 'w')"),
                artifacts='<artifact type="build" src="done" />')) + stage_xml("after", py_task("pass")))
    code, out, err = _run(tmp_path, xml)
    assert code == 7, out + err
    assert out.index("[s/fails] [go] job failed") < out.index("[s/slow] [go] job passed") \
        < out.index("[local] stage s failed")
    assert (tmp_path / "my repo/.pipeline/artifacts/demo/1/s/1/slow/done").is_file(), "the sibling ran to its end"
    assert re.search(r"^after\s+not run", out, re.MULTILINE) and "s/fails failed at task 1" in err


def _pids_gone(folder: Path) -> dict[str, bool]:
    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    return {role: gone(int((folder / f"{role}.pid").read_text())) for role in TREE_ROLES}


@pytest.mark.slow
def test_a_silent_job_times_out_with_its_tree_and_nothing_after_it(tmp_path: Path) -> None:
    """GoCD's timeout is minutes WITHOUT CONSOLE OUTPUT: the silent job is cancelled (its whole tree, the
    new-session 'kernel' too; no runif="any" task after it; nothing published); a job printing all along outlives
    the same limit; timeout="0" (never) overrides --job-timeout."""
    pids = tmp_path / "pids"
    talk = py_task("import time; [(print('still working', i, flush=True), time.sleep(0.5)) for i in range(12)]")
    tree = f'<exec command="python"><arg>tree.py</arg><arg>{pids}</arg><arg>task</arg></exec>'
    xml = cruise_xml(stage_jobs_xml(
        "s", job_xml("silent", tree + py_task("open('after', 'w')", "any"),
                     artifacts='<artifact type="build" src="tree.py" />'),
        job_xml("talks", talk), job_xml("never", py_task("import time; time.sleep(4)"), attrs=' timeout="0"'),
    ) + stage_xml("after", py_task("pass")))
    code, out, err = _run(tmp_path, xml, "--job-timeout", "0.04", "--cancel-grace", "3",
                          files={"tree.py": PROCESS_TREE})
    assert code == 7, out + err
    assert all(_pids_gone(pids).values()), _pids_gone(pids)
    assert "[s/silent] [go] Go cancelled this job as it has not generated any console output for more than 0.04 " \
           "minute(s)" in out
    assert re.search(r"^\s+silent\s+TIMED OUT", out, re.MULTILINE) and re.search(r"^s\s+CANCELLED", out, re.MULTILINE)
    assert re.search(r"^\s+talks\s+passed", out, re.MULTILINE) and re.search(r"^\s+never\s+passed", out, re.MULTILINE)
    assert not (tmp_path / "my repo/.pipeline/work/demo/1/s/silent/after").exists(), "no task runs after a cancel"
    job_store = tmp_path / "my repo/.pipeline/artifacts/demo/1/s/1/silent"
    assert [p.name for p in job_store.iterdir()] == ["cruise-output"], "nothing published after a cancel"
    assert "s/silent timed out at task 1" in err


@POSIX_SIGNALS
def test_sigterm_cancels_the_running_jobs_and_prints_the_summary(tmp_path: Path) -> None:
    """SIGINT (or SIGTERM) sent to the rehearsal alone: its jobs' trees do not get it, the rehearsal ends them."""
    pids = tmp_path / "pids"
    repo = tmp_path / "my repo"
    repo.mkdir()
    (repo / "tree.py").write_text(PROCESS_TREE, encoding="utf-8")
    xml = cruise_xml(stage_xml("s", '<exec command="python"><arg>tree.py</arg><arg>' + str(pids) + '</arg>'
                                    '<arg>task</arg></exec>'))
    (repo / "cfg.xml").write_text(xml, encoding="utf-8")
    rehearsal = subprocess.Popen([str(TOOLKIT_PYTHON), str(SCRIPTS / "run_pipeline.py"), "--config",
                                  str(repo / "cfg.xml"), "--cancel-grace", "1"], cwd=repo, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (pids / "grandchild.pid").is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        rehearsal.send_signal(signal.SIGTERM)
        out, err = rehearsal.communicate(timeout=60)
    finally:
        rehearsal.kill()
    assert rehearsal.returncode == 143, out + err  # SIGTERM: exit 143, the same handling as Ctrl-C (130)
    assert all(_pids_gone(pids).values()), _pids_gone(pids)
    assert "[local] interrupted: cancelling the running jobs" in out and re.search(r"^\s+s\s+CANCELLED", out,
                                                                                   re.MULTILINE)
    assert err.strip() == "error: terminated (SIGTERM)"


@POSIX_SIGNALS
@pytest.mark.slow
def test_sigterm_cancels_a_running_task_at_once_ctrl_c_gives_it_the_grace(tmp_path: Path) -> None:
    """A task that would end on its own 8 s later, with a 60 s grace: Ctrl-C in a terminal reaches the task too,
    so the rehearsal lets it end (it finishes); SIGTERM reaches the rehearsal alone, so the task is cancelled at
    once (it never finishes)."""
    task = py_task("import time, pathlib; pathlib.Path('started').touch(); time.sleep(8); "
                   "pathlib.Path('finished').touch()")
    for signum, code in ((signal.SIGINT, 130), (signal.SIGTERM, 143)):
        root = tmp_path / signum.name
        repo = root / "my repo"
        repo.mkdir(parents=True)
        (repo / "cfg.xml").write_text(cruise_xml(stage_xml("s", task)), encoding="utf-8")
        rehearsal = subprocess.Popen([str(TOOLKIT_PYTHON), str(SCRIPTS / "run_pipeline.py"), "--config",
                                      str(repo / "cfg.xml"), "--cancel-grace", "60"], cwd=repo,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     preexec_fn=default_ctrl_c)
        work = repo / ".pipeline/work/demo/1/s/s"
        try:
            deadline = time.monotonic() + 60
            while not (work / "started").is_file() and time.monotonic() < deadline:
                time.sleep(0.1)
            rehearsal.send_signal(signum)  # to the rehearsal alone (Ctrl-C's task would end on its own)
            out, err = rehearsal.communicate(timeout=120)
        finally:
            rehearsal.kill()
        assert rehearsal.returncode == code, out + err
        assert (work / "finished").exists() == (signum == signal.SIGINT), out


# ----------------------------------------------------------------------------------------------- --keep


def test_keep_prunes_only_old_marked_runs_not_in_progress(tmp_path: Path) -> None:
    state = tmp_path / ".pipeline"
    slots = [statedir.claim_run(state, "p") for _ in range(5)]
    for slot in slots:
        for sub in ("work", "artifacts"):
            (state / sub / "p" / str(slot.counter) / "x").mkdir(parents=True)
    for slot in slots[1:4]:
        slot.release()  # runs 2-4 ended; run 1 (a long concurrent rehearsal) and run 5 are still in progress
    (state / "work" / "p" / "0").mkdir()  # not made by a run with a marker (older tool, or by hand): left alone
    (state / "work" / "p" / "notes.txt").write_text("mine")
    current = statedir.claim_run(state, "p")
    lines: list[str] = []
    assert statedir.prune(state, 2, lines.append) == [("p", 2), ("p", 3), ("p", 4)]
    assert sorted(p.name for p in (state / "work" / "p").iterdir()) == ["0", "1", "5", "notes.txt"]
    assert sorted(p.name for p in (state / "artifacts" / "p").iterdir()) == ["1", "5"]
    assert "--keep 2: removed the working copies and artifacts of p #2, p #3, p #4" in lines[0]
    for slot in (slots[0], slots[4], current):
        slot.release()
    assert statedir.prune(state, 1, lines.append) == [("p", 1), ("p", 5)], "once ended, they go too"
    assert statedir.claim_run(state, "p").counter == 7, "counters never go back"


@pytest.mark.slow
def test_concurrent_rehearsals_with_keep_1_leave_each_other_running(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    xml = cruise_xml(stage_xml("s", py_task("import time; time.sleep(3); open('done', 'w')"),
                               artifacts='<artifact type="build" src="done" />'))
    (repo / "cfg.xml").write_text(xml, encoding="utf-8")
    cmd = [str(TOOLKIT_PYTHON), str(SCRIPTS / "run_pipeline.py"), "--config", str(repo / "cfg.xml"), "--keep", "1"]
    runs = [subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)]
    results = [(r.wait(timeout=120), *r.communicate()) for r in runs]
    assert [code for code, _, _ in results] == [0, 0, 0], results
    counters = sorted(int(re.search(r"counter (\d+)", out).group(1)) for _, out, _ in results)
    assert counters == [1, 2, 3]


@pytest.mark.skipif(sys.platform == "win32", reason="the execute bit is POSIX's")
def test_a_task_that_is_not_executable_fails_its_job_not_the_rehearsal(tmp_path: Path) -> None:
    """Issue 10, point 1: it aborted the whole rehearsal with exit 1 (no runif="any" task, nothing published, no
    summary). Now: that task fails (126), the job fails, runif="any" still runs, artifacts are published, exit 7."""
    repo = tmp_path / "my repo"
    repo.mkdir()
    (repo / "tool.sh").write_text("#!/bin/sh\necho never\n", encoding="utf-8")
    (repo / "tool.sh").chmod(0o644)
    xml = cruise_xml(stage_xml("a", '<exec command="./tool.sh" />' + py_task("open('always', 'w')", "any"),
                               artifacts='<artifact type="build" src="always" />') + stage_xml("b", py_task("pass")))
    code, out, err = _run(tmp_path, xml)
    assert code == 7, out + err
    assert "Please make sure [./tool.sh] can be executed on this agent." in out and "(exit code 126)" in out
    assert (repo / ".pipeline/artifacts/demo/1/a/1/a/always").is_file()
    assert re.search(r"^\s+a\s+FAILED", out, re.MULTILINE) and "total " in out
    assert err.startswith("error: pipeline demo #1: a/a failed at task 1") and err.count("\n") == 1


_SLEEPY_CELLS = (
    "import os, time\nfrom pathlib import Path\nrunner = os.getppid()\n"
    "Path('kernel.pid').write_text(str(os.getpid()))\n"
    "children = Path(f'/proc/{runner}/task/{runner}/children')\n"
    "Path('runner.pids').write_text(' '.join([str(runner), *(children.read_text().split() if children.exists() "
    "else [])]))\nprint('kernel up', flush=True)",
    "time.sleep(600)",
)


@pytest.mark.slow
def test_a_timed_out_notebook_job_leaves_no_kernel_behind(tmp_path: Path, venv_small: Path) -> None:
    """A real run_notebook.py job (its kernel started in a session of its own by jupyter_client) goes silent in a
    cell: the job is cancelled and the kernel, run_notebook.py and its MLflow helper are all gone."""
    import nbformat

    repo = tmp_path / "my repo"
    repo.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(code) for code in _SLEEPY_CELLS]
    nbformat.write(nb, repo / "sleepy.ipynb")
    args = "".join(f"<arg>{a}</arg>" for a in (SCRIPTS / "run_notebook.py", "--venv", venv_small, "--notebook",
                                               "sleepy.ipynb", "--output", "out/sleepy_out.ipynb", "--log-output"))
    xml = cruise_xml(stage_xml("s", f'<exec command="python">{args}</exec>',
                               artifacts='<artifact type="build" src="out" />'))
    code, out, err = _run(tmp_path, xml, "--job-timeout", "0.2", "--cancel-grace", "5")
    assert code == 7, out + err
    work = repo / ".pipeline/work/demo/1/s/s"
    assert (work / "kernel.pid").is_file(), "cancelled before the kernel started: raise --job-timeout\n" + out
    pids = [int(work.joinpath("kernel.pid").read_text()), *map(int, work.joinpath("runner.pids").read_text().split())]
    assert len(pids) >= 3, "kernel, run_notebook.py, its children (the kernel and the MLflow helper at least)"
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, [psutil.Process(pid).cmdline() for pid in alive]
    assert "[s/s] kernel up" in out and "Go cancelled this job" in out and re.search(r"^\s+s\s+TIMED OUT", out,
                                                                                      re.MULTILINE)


@pytest.mark.parametrize("args, expected", [
    (("--job-timeout", "inf"), "--job-timeout 'inf': expected a finite number of minutes >= 0, or 'never'"),
    (("--job-timeout", "-1"), "--job-timeout '-1'"),
    (("--job-timeout", "soon"), "--job-timeout 'soon': expected a number of minutes, or 'never'"),
    (("--keep", "0"), "--keep '0': expected a number of runs >= 1, or 'all'"),
    (("--cancel-grace", "nan"), "--cancel-grace 'nan'"),
])
def test_bad_rehearsal_options_are_one_line_exit_2(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    code, _, err = _run(tmp_path, cruise_xml(stage_xml("a", py_task("pass"))), *args)
    assert code == 2 and expected in err and err.count("\n") == 1, err


def test_token_only_urls_never_reach_the_log_the_console_log_or_the_closing_note(tmp_path: Path) -> None:
    """A token alone in a URL's user part is a secret: masked in the 'overriding' lines, the job's console log and
    the closing note (issue 10)."""
    xml = cruise_xml(stage_xml("s", py_task("print('ok')")), pipeline_extra=(
        '<environmentvariables><variable name="MIRROR"><value>https://gh0token@git.example/x</value></variable>'
        '</environmentvariables>'))
    code, out, err = _run(tmp_path, xml, "--tracking-uri", "https://tr4cktoken@mlflow.example:5000",
                          "--env", "MIRROR=https://0verride@git.example/y")
    assert code == 0, out + err
    logs = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "my repo" / ".pipeline").rglob("console.log"))
    for secret in ("gh0token", "tr4cktoken", "0verride"):
        assert secret not in out + err + logs, secret
    assert "https://***@mlflow.example:5000" in out and "https://***@git.example/y" in out
