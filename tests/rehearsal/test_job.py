"""mlops_kit.rehearsal.job: one job as an agent runs it: its console and console log (secrets masked), its timeout,
its cancel (the whole tree, and on Linux what it daemonized), what it leaves running; run for real through
run_pipeline.py."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from helpers import POSIX_SIGNALS, SCRIPTS, TOOLKIT_PYTHON, default_ctrl_c
from helpers_gocd import (
    PROCESS_TREE,
    TREE_ROLES,
    cruise_xml,
    daemonizing_exec,
    job_xml,
    nothing_left_running,
    py_task,
    rehearse,
    stage_jobs_xml,
    stage_xml,
    tagged_processes,
)
from mlops_kit.rehearsal import job

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="orphans come back to a child subreaper, "
                           "which only Linux has (Windows: Job Objects)")


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
    done = rehearse(tmp_path, xml, "--job-timeout", "0.04", "--cancel-grace", "3", files={"tree.py": PROCESS_TREE})
    out, err = done.stdout, done.stderr
    assert done.returncode == 7, out + err
    assert all(_pids_gone(pids).values()), _pids_gone(pids)
    assert "[s/silent] [go] Go cancelled this job as it has not generated any console output for more than 0.04 " \
           "minute(s)" in out
    assert re.search(r"^\s+silent\s+TIMED OUT", out, re.MULTILINE) and re.search(r"^s\s+CANCELLED", out, re.MULTILINE)
    assert re.search(r"^\s+talks\s+passed", out, re.MULTILINE) and re.search(r"^\s+never\s+passed", out, re.MULTILINE)
    assert not (tmp_path / "my repo/.pipeline/work/demo/1/s/silent/after").exists(), "no task runs after a cancel"
    job_store = tmp_path / "my repo/.pipeline/artifacts/demo/1/s/1/silent"
    assert [p.name for p in job_store.iterdir()] == ["cruise-output"], "nothing published after a cancel"
    assert "s/silent timed out at task 1" in err


@LINUX
def test_a_daemonized_grandchild_ends_with_its_timed_out_job(tmp_path: Path) -> None:
    """The case as reported: ``sh -c 'echo s; (setsid sh -c "sleep 1005 &"); sleep 1000'`` with a short job
    timeout. Exit 7 was right, but ``sleep 1005`` lived on (re-parented to PID 1), and it held the task's output
    open, so the cancel also waited 5 s for that output to end."""
    with nothing_left_running() as env:
        done = rehearse(tmp_path, cruise_xml(stage_xml("s", daemonizing_exec())), "--job-timeout", "0.03",
                        "--cancel-grace", "5", env=env)
        survivors = tagged_processes(env["MLOPS_KIT_TEST_TAG"], ["sleep", "1005"])
    assert done.returncode == 7, done.stdout + done.stderr
    assert not survivors, [p.info for p in survivors]
    assert "[s/s] s\n" in done.stdout and "Go cancelled this job" in done.stdout
    assert "On Cancel Task completed" in done.stdout


@LINUX
def test_a_cancel_ends_its_own_jobs_orphans_only_and_a_job_ends_what_it_left_running(tmp_path: Path) -> None:
    """Two jobs at once, each with an orphan re-parented to the rehearsal: the silent one times out and its
    ``sleep 1005`` ends with it; the other job's ``sleep 1006`` is still alive after that cancel (the other job saw
    it), and ends when its own job ends, which says so in its log."""
    silent_log = tmp_path / "my repo/.pipeline/artifacts/demo/1/s/1/silent/cruise-output/console.log"
    busy = (
        "import subprocess, sys, time, pathlib, psutil\n"
        "subprocess.run(['sh', '-c', '(setsid sh -c \"sleep 1006 &\")'], check=True)\n"
        "log, deadline = pathlib.Path(sys.argv[1]), time.time() + 120\n"
        "def cancelled(): return 'On Cancel Task completed' in (log.read_text() if log.exists() else '')\n"
        "while not cancelled() and time.time() < deadline:\n"
        "    print('waiting for the other job to be cancelled', flush=True)\n"
        "    time.sleep(0.3)\n"
        "alive = [p for p in psutil.process_iter(['cmdline']) if p.info['cmdline'] == ['sleep', '1006']]\n"
        "print('my orphan after the other job was cancelled:', 'alive' if alive else 'gone', flush=True)\n")
    busy_task = f'<exec command="python"><arg>busy.py</arg><arg>{silent_log}</arg></exec>'
    xml = cruise_xml(stage_jobs_xml("s", job_xml("silent", daemonizing_exec()),
                                    job_xml("busy", busy_task, attrs=' timeout="0"')))
    with nothing_left_running() as env:
        done = rehearse(tmp_path, xml, "--job-timeout", "0.03", "--cancel-grace", "3", env=env,
                        files={"busy.py": busy})
        survivors = [p for n in ("1005", "1006") for p in tagged_processes(env["MLOPS_KIT_TEST_TAG"], ["sleep", n])]
    out = done.stdout
    assert done.returncode == 7, out + done.stderr
    assert not survivors, [p.info for p in survivors]
    assert "[s/busy] my orphan after the other job was cancelled: alive" in out
    assert re.search(r"\[s/busy\] \[local\] the job left 1 process\(es\) running; ended with it: \d+ sleep 1006", out)
    assert re.search(r"^\s+silent\s+TIMED OUT", out, re.MULTILINE) and re.search(r"^\s+busy\s+passed", out,
                                                                                 re.MULTILINE)


@POSIX_SIGNALS
def test_sigterm_cancels_the_running_jobs_and_prints_the_summary(tmp_path: Path) -> None:
    """SIGTERM sent to the rehearsal alone: its jobs' trees do not get it, the rehearsal ends them, what a job
    daemonized included."""
    pids = tmp_path / "pids"
    repo = tmp_path / "my repo"
    repo.mkdir()
    (repo / "tree.py").write_text(PROCESS_TREE, encoding="utf-8")
    tree = f'<exec command="python"><arg>tree.py</arg><arg>{pids}</arg><arg>task</arg></exec>'
    xml = cruise_xml(stage_jobs_xml("s", job_xml("s", tree), job_xml("daemon", daemonizing_exec())))
    (repo / "cfg.xml").write_text(xml, encoding="utf-8")
    with nothing_left_running() as env:
        rehearsal = subprocess.Popen([str(TOOLKIT_PYTHON), str(SCRIPTS / "run_pipeline.py"), "--config",
                                      str(repo / "cfg.xml"), "--cancel-grace", "1"], cwd=repo, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env)
        try:
            deadline = time.monotonic() + 60
            while not (pids / "grandchild.pid").is_file() and time.monotonic() < deadline:
                time.sleep(0.1)
            while not tagged_processes(env["MLOPS_KIT_TEST_TAG"], ["sleep", "1005"]) and time.monotonic() < deadline:
                time.sleep(0.1)
            rehearsal.send_signal(signal.SIGTERM)
            out, err = rehearsal.communicate(timeout=60)
        finally:
            rehearsal.kill()
        survivors = tagged_processes(env["MLOPS_KIT_TEST_TAG"], ["sleep", "1005"])
    # SIGTERM: exit 143, the same handling as Ctrl-C (130). POSIX only: Windows has no SIGTERM; a GoCD cancel there is
    # TerminateProcess (taskkill /F), exit code 1, and the rehearsal's Job Object takes its jobs' processes with it
    assert rehearsal.returncode == 143, out + err
    assert all(_pids_gone(pids).values()), _pids_gone(pids)
    assert not survivors or not sys.platform.startswith("linux"), [p.info for p in survivors]
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
    done = rehearse(tmp_path, xml, "--job-timeout", "0.2", "--cancel-grace", "5")
    out = done.stdout
    assert done.returncode == 7, out + done.stderr
    work = repo / ".pipeline/work/demo/1/s/s"
    assert (work / "kernel.pid").is_file(), "cancelled before the kernel started: raise --job-timeout\n" + out
    pids = [int(work.joinpath("kernel.pid").read_text()), *map(int, work.joinpath("runner.pids").read_text().split())]
    assert len(pids) >= 3, "kernel, run_notebook.py, its children (the kernel and the MLflow helper at least)"
    alive = [pid for pid in pids if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert not alive, [psutil.Process(pid).cmdline() for pid in alive]
    assert "[s/s] kernel up" in out and "Go cancelled this job" in out and re.search(r"^\s+s\s+TIMED OUT", out,
                                                                                      re.MULTILINE)


def _rehearsal_files(repo: Path) -> dict[Path, str]:
    """Every file the rehearsal wrote itself (the jobs' working copies are the jobs' own files)."""
    state = repo / ".pipeline"
    return {p: p.read_text(encoding="utf-8", errors="replace") for p in state.rglob("*")
            if p.is_file() and not p.is_relative_to(state / "work")}


def test_a_secure_variables_value_never_reaches_a_console_or_a_console_log(tmp_path: Path) -> None:
    """The case as reported: ``<variable name="MY_SECRET" secure="true">`` and a task echoing ``$MY_SECRET``
    showed the value in the job's console and its cruise-output/console.log. GoCD masks it; so does the
    rehearsal, and the values of secret-named variables (in the XML or from --env) too."""
    variables = ('<environmentvariables><variable name="MY_SECRET" secure="true"><encryptedValue>AES:x</encryptedValue>'
                 '</variable><variable name="DB_PASSWORD"><value>pl41n-Passw0rd</value></variable>'
                 "</environmentvariables>")
    tasks = (daemonizing_exec("echo $MY_SECRET") + daemonizing_exec("echo connecting with $DB_PASSWORD")
             + py_task("import os; print('token is', os.environ['API_TOKEN'], flush=True)"))
    with nothing_left_running() as env:
        done = rehearse(tmp_path, cruise_xml(stage_xml("s", tasks), pipeline_extra=variables),
                        "--env", "API_TOKEN=t0k3n-from-cli", env={**env, "MY_SECRET": "s3cr3t-V4lue-77"})
    assert done.returncode == 0, done.stdout + done.stderr
    files = _rehearsal_files(tmp_path / "my repo")
    log = next(text for path, text in files.items() if path.name == "console.log")
    assert "[go] task 1 passed" in log and "\n***\n" in log and "connecting with ***" in log and "token is ***" in log
    for secret in ("s3cr3t-V4lue-77", "pl41n-Passw0rd", "t0k3n-from-cli"):
        assert secret not in done.stdout + done.stderr, secret
        assert not [path for path, text in files.items() if secret in text], secret


def test_token_only_urls_never_reach_the_log_the_console_log_or_the_closing_note(tmp_path: Path) -> None:
    """A token alone in a URL's user part is a secret: masked in the 'overriding' lines, the job's console log and
    the closing note."""
    xml = cruise_xml(stage_xml("s", py_task("print('ok')")), pipeline_extra=(
        '<environmentvariables><variable name="MIRROR"><value>https://gh0token@git.example/x</value></variable>'
        '</environmentvariables>'))
    done = rehearse(tmp_path, xml, "--tracking-uri", "https://tr4cktoken@mlflow.example:5000",
                    "--env", "MIRROR=https://0verride@git.example/y")
    out, err = done.stdout, done.stderr
    assert done.returncode == 0, out + err
    logs = "".join(_rehearsal_files(tmp_path / "my repo").values())
    for secret in ("gh0token", "tr4cktoken", "0verride"):
        assert secret not in out + err + logs, secret
    assert "https://***@mlflow.example:5000" in out and "https://***@git.example/y" in out


def test_a_job_console_masks_before_it_shows_and_keeps(tmp_path: Path) -> None:
    from mlops_kit.core import redact

    shown: list[str] = []
    console = job.JobConsole("[s/j]", shown.append, tmp_path / "cruise-output" / "console.log")
    redact.register_secret("Zq9-unit-secret")
    try:
        console("a Zq9-unit-secret b\n\nsecond line")
    finally:
        console.close()
        redact.forget_secrets()
    assert shown == ["[s/j] a *** b\n\n[s/j] second line\n"]
    assert (tmp_path / "cruise-output" / "console.log").read_text() == "a *** b\n\nsecond line\n"
