"""Running one task as a GoCD agent does: GoCD's ``runif`` rule, then an ``<exec>`` started without a shell, its
arguments exactly as the ``<arg>`` elements give them (batch files through ``cmd /s /c`` on Windows, as GoCD's
Windows agent runs them), and the agent's words when a command cannot start (not found: 127; not executable: 126).
A cancelled task is ended with its whole process tree and what its job left running (:mod:`mlops_kit.core.proc`).
"""

from __future__ import annotations

import datetime as _dt
import shutil
import subprocess
from pathlib import Path
from typing import Callable, Literal, Mapping

from ..core import paths, proc
from ..core.console import Echo
from ..core.jobprocesses import JobProcesses
from . import gocd

TaskOutcome = Literal["passed", "failed", "cancelled"]


def should_run(runif: frozenset[gocd.RunIf], job_status: str) -> bool:
    """GoCD: a job starts 'passed', turns 'failed' on the first failing task; runif picks the tasks to run."""
    return "any" in runif or job_status in runif


def resolve_command(command: str, *, cwd: Path, env: Mapping[str, str]) -> str | None:
    """The executable GoCD would start: a path relative to the working directory, or a PATH lookup."""
    if "/" in command or "\\" in command:
        candidate = cwd / command
        return str(candidate) if candidate.is_file() else None
    path = next((v for k, v in env.items() if k.upper() == "PATH"), "")
    return shutil.which(command, path=path)


def run_exec(task: gocd.ExecTask, *, workdir: Path, env: dict[str, str], echo: Echo,
             stop: Callable[[], bool] | None = None, grace: float = 10.0,
             job: JobProcesses | None = None) -> TaskOutcome:
    """Run an <exec>: no shell, arguments exactly as the <arg> elements give them. "cancelled": ``stop()`` became
    true while it ran, and it was ended with its whole process tree (and the processes ``job`` left behind)."""
    cwd = workdir / task.workingdir if task.workingdir else workdir
    if not cwd.is_dir():
        echo(f"[go] Working directory \"{cwd}\" is not a directory!\n")
        return "failed"
    executable = resolve_command(task.command, cwd=cwd, env=env)
    command = [executable or task.command, *task.args]
    batch = executable is not None and paths.is_windows() and executable.lower().endswith((".bat", ".cmd"))
    argv = windows_batch_command(command) if batch else command
    started = proc.start(argv, env=env, cwd=cwd, echo=echo, job=job) if executable is not None else \
        proc.Result((task.command,), 127, "", "not found")
    if isinstance(started, proc.Result):  # what a GoCD agent prints when ProcessBuilder cannot start the command
        path = next((v for k, v in env.items() if k.upper() == "PATH"), "")
        echo(f"[go] Error happened while attempting to execute '{task.describe()}'. \n"
             f"[go] Please make sure [{task.command}] can be executed on this agent.\n"
             f"[go] [Debug Information] Environment variable PATH: {path}\n"
             f"[go] task failed: {'not found' if started.returncode == 127 else 'cannot be started'} "
             f"(exit code {started.returncode})\n")
        return "failed"
    code = started.wait(stop)
    if code is None:
        echo("[go] On Cancel Task: Kills child processes\n[go] Attempting to kill child processes.\n")
        code = started.kill_tree(grace, job)
        echo(f"[go] On Cancel Task completed\n[go] Task status: cancelled (exit code: {code})\n")
        return "cancelled"
    if code != 0:
        echo(f"[go] task failed with exit code {code}: {task.describe()}\n")
    return "passed" if code == 0 else "failed"


def windows_batch_command(argv: list[str]) -> proc.WindowsCommandLine:
    """Batch files need cmd.exe, run as a GoCD Windows agent does: ``cmd /s /c "<quoted command line>"``. ``/s``
    strips exactly the outer pair of quotes, so a path with spaces (``C:\\Users\\Jane Doe\\...\\x.bat``) stays
    quoted; a plain argument list would reach cmd as ``"C:\\a b\\x.bat" arg`` and lose those quotes."""
    return proc.WindowsCommandLine(f'cmd /s /c "{subprocess.list2cmdline(argv)}"')


def stamp() -> str:
    """The wall-clock time a log line shows."""
    return _dt.datetime.now().strftime("%H:%M:%S")
