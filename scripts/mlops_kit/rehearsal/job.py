"""One job, as a GoCD agent runs it: its tasks in order with ``runif``, its console (shown live and kept as GoCD
keeps it), its timeout, its cancel, and what it publishes.

* **Console**: every line a job prints goes to the shared console prefixed ``[stage/job]`` and to the job's console
  log, where GoCD keeps it (``<artifacts>/<stage>/1/<job>/cruise-output/console.log``), secrets masked in both.
* **Timeout**, as GoCD's server applies it: a job whose console has shown nothing for ``timeout`` minutes (the job's
  ``timeout`` attribute, else ``--job-timeout``, GoCD's server-wide default; 0 = never) is cancelled. GoCD looks
  every 30 s (so it cancels between N min and N min + 30 s after the last line); the rehearsal several times a
  second.
* **Cancel** is what GoCD's agent does: the running task's whole process tree gets SIGTERM, kernels included
  (``taskkill /T /F`` on Windows), then no further task runs (not even ``runif="any"``) and nothing is published.
  Unlike GoCD, which leaves a hard kill to an operator, what is still alive after a grace period is killed, and the
  processes the job left behind (daemons re-parented away from its tree) end with it: a rehearsal leaves nothing
  running (:mod:`mlops_kit.core.jobprocesses`). The job is "timed out" (GoCD's result: Cancelled).
* **Ctrl-C** cancels the running jobs the same way, after giving them the grace period to end on their own (in a
  terminal they got the Ctrl-C too); SIGTERM reaches the rehearsal alone, so their tasks are cancelled at once.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from ..core import proc
from ..core.console import Echo
from ..core.errors import Terminated
from ..core.jobprocesses import JobProcesses
from ..core.redact import redact
from . import artifacts, gocd, tasks

JobStatus = Literal["passed", "failed", "timed out", "cancelled", "not run"]
StopReason = Literal["timed out", "cancelled"]
FAILED_STATUSES: tuple[JobStatus, ...] = ("failed", "timed out", "cancelled")


@dataclass
class JobResult:
    stage: str
    job: str
    status: JobStatus = "not run"  # "cancelled": by Ctrl-C / SIGTERM
    seconds: float = 0.0
    failed_task: str | None = None
    workdir: Path | None = None
    artifacts: Path | None = None
    log: Path | None = None


def job_store(store: Path, stage: str, job: str) -> Path:
    """Where GoCD keeps a job's artifacts: ``<pipeline run>/<stage>/<stage counter>/<job>`` (one stage run here)."""
    return store / stage / "1" / job


def console_log(target: Path) -> Path:
    """Where GoCD keeps a job's console log: in the job's artifacts."""
    return target / "cruise-output" / "console.log"


_CONSOLE = threading.Lock()  # one line at a time on the shared console, whichever job prints it


class JobConsole:
    """One job's console output: every line to the shared console prefixed ``[stage/job]``, to the job's console
    log (as GoCD keeps it, secrets masked), and the time of the last line (what GoCD's job timeout measures)."""

    def __init__(self, prefix: str, sink: Echo, log: Path | None) -> None:
        self.prefix, self.sink = prefix, sink
        self.last = time.monotonic()
        self._file: IO[str] | None = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(log, "a", encoding="utf-8")  # closed by close()

    def __call__(self, text: str) -> None:
        self.last = time.monotonic()
        text = redact(text if text.endswith("\n") else text + "\n")
        shown = "".join(f"{self.prefix} {line}" if line.strip() else line for line in text.splitlines(keepends=True))
        with _CONSOLE:
            self.sink(shown)
            if self._file is not None:
                self._file.write(text)
                self._file.flush()

    def silent_for(self) -> float:
        return time.monotonic() - self.last

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class Interruption:
    """Set once by the run loop on Ctrl-C / SIGTERM; the jobs read it."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.terminated = False

    def set(self, cause: BaseException | None = None) -> None:
        self.at = self.at or time.monotonic()
        self.terminated = self.terminated or isinstance(cause, Terminated)


@dataclass
class JobStop:
    """When a job stops early: its console silent for longer than its timeout (minutes; 0 = never), or the run
    interrupted. Polled while a task runs (after Ctrl-C a task first gets ``grace`` seconds to end on its own: in a
    terminal it got the Ctrl-C too; after SIGTERM, which only the rehearsal got, none) and before each task (no
    task starts after a cancel)."""

    console: JobConsole
    minutes: float
    interruption: Interruption
    grace: float
    reason: StopReason | None = None

    def __call__(self) -> bool:
        return self._check(running=True)

    def before_task(self) -> bool:
        return self._check(running=False)

    def _check(self, *, running: bool) -> bool:
        if self.reason is None and self.minutes and self.console.silent_for() > self.minutes * 60:
            self.reason = "timed out"
            self.console(f"[go] Go cancelled this job as it has not generated any console output for more than "
                         f"{self.minutes:g} minute(s)\n")
        interrupted = self.interruption.at
        if self.reason is None and interrupted is not None and (
                not running or self.interruption.terminated or time.monotonic() - interrupted > self.grace):
            self.reason = "cancelled"
            self.console("[local] interrupted: cancelling the job\n")
        return self.reason is not None


def run_job(stage: str, job: gocd.Job, *, workdir: Path, store: Path, env: dict[str, str], echo: JobConsole,
            stop: JobStop, grace: float) -> JobResult:
    """Run the tasks of one job in order with runif rules, end what they left running, then publish its artifacts
    (not after a cancel)."""
    target = job_store(store, stage, job.name)
    result = JobResult(stage, job.name, workdir=workdir, artifacts=target, log=console_log(target))
    processes = JobProcesses()
    status: Literal["passed", "failed"] = "passed"
    try:
        for number, task in enumerate(job.tasks, start=1):
            named = f"task {number} ({task.describe(72)})"
            if stop.before_task():
                result.failed_task = f"the start of {named}"
                break
            if not tasks.should_run(task.runif, status):
                echo(f"[go] skipping task {number} ({task.describe()}): runif {sorted(task.runif)}, job is {status}\n")
                continue
            echo(f"[go] {tasks.stamp()} task {number}/{len(job.tasks)}: {task.describe()}\n")
            task_started = time.monotonic()
            outcome = _run_task(task, workdir=workdir, store=store, env=env, echo=echo, stop=stop, grace=grace,
                                processes=processes)
            if outcome == "cancelled":
                result.failed_task = named
                break
            echo(f"[go] task {number} {outcome} in {time.monotonic() - task_started:.1f}s\n")
            if outcome == "failed" and status == "passed":
                status, result.failed_task = "failed", named
    finally:
        _end_leftovers(processes, grace, echo)
    if stop.reason is not None:
        echo(f"[go] job {stop.reason}: no further task runs and nothing is published (GoCD: job Cancelled)\n")
        result.status = stop.reason
        result.failed_task = result.failed_task or "the end of its tasks"
        return result
    if not artifacts.publish_artifacts(job, workdir=workdir, target=target, job_passed=status == "passed",
                                       echo=echo):
        status, result.failed_task = "failed", "publishing artifacts"
    result.status = status
    return result


def _run_task(task: gocd.Task, *, workdir: Path, store: Path, env: dict[str, str], echo: JobConsole, stop: JobStop,
              grace: float, processes: JobProcesses) -> tasks.TaskOutcome:
    if isinstance(task, gocd.ExecTask):
        return tasks.run_exec(task, workdir=workdir, env=env, echo=echo, stop=stop, grace=grace, job=processes)
    return "passed" if artifacts.run_fetch(task, workdir=workdir, store=store, echo=echo) else "failed"


def _end_leftovers(processes: JobProcesses, grace: float, echo: Echo) -> None:
    """What the job's tasks left running (a daemon, a server started in the background) ends with the job."""
    ended = proc.end_strays(processes, grace)
    if ended:
        echo(f"[local] the job left {len(ended)} process(es) running; ended with it: {'; '.join(ended)}\n")
