"""Local rehearsal of a GoCD pipeline: the same tasks, in the same order, with the same variables and artifacts.

A rehearsal, not a scheduler, but it behaves like GoCD wherever a pipeline's author would notice:

* Stages run in order; a stage starts when the one before it passed (a failed or cancelled stage ends the run).
* The jobs of a stage run at the same time, as GoCD gives each to an agent: one thread drives each job's tasks, in
  the job's own fresh copy of the repository (as on different agents: a later stage sees only what the config
  publishes and fetches). Every line a job prints goes to the console prefixed ``[stage/job]`` and to the job's
  console log, where GoCD keeps it: ``<artifacts>/<stage>/1/<job>/cruise-output/console.log``. A failing job does
  not stop its siblings; the stage fails once all of them finished. With ``--shared-workdir`` (one folder, as on one
  agent) the jobs of a stage run one after the other, as jobs given to one agent do.
* Tasks follow GoCD's ``runif`` rules; artifacts are published after the tasks whatever their result, to a local
  store laid out like the server's (:mod:`mlops_kit.rehearsal.artifacts`). A task that cannot start fails as on an agent
  (not found: 127; not executable: 126), with the agent's message.
* Job timeout, as GoCD's server applies it: a job whose console has shown nothing for ``timeout`` minutes (the job's
  ``timeout`` attribute, else ``--job-timeout``, GoCD's server-wide default; 0 = never) is cancelled. GoCD looks
  every 30 s (so it cancels between N min and N min + 30 s after the last line); the rehearsal looks several times a
  second. Cancelling is what GoCD's agent does: the running task's whole process tree gets SIGTERM, kernels
  included (:meth:`mlops_kit.proc.Started.kill_tree`; ``taskkill /T /F`` on Windows), then no further task runs (not
  even ``runif="any"``) and nothing is published. Unlike GoCD, which leaves a hard kill to an operator, what is still
  alive after a grace period is killed: a rehearsal leaves nothing running. The job is "timed out" (GoCD's result:
  Cancelled); its stage is cancelled once its other jobs finished.
* Ctrl-C cancels the running jobs the same way, after giving them the grace period to end on their own (in a
  terminal they got the Ctrl-C too); SIGTERM to run_pipeline.py (``kill``, a CI or agent cancelling it) reaches it
  alone, so its running tasks are cancelled at once. The summary is printed; the exit code is 130 (Ctrl-C) or 143.

Everything lives under a state folder (default ``<repo>/.pipeline``, :mod:`mlops_kit.rehearsal.statedir`): counters, each
run's working copies (kept for inspection) and artifacts; ``--keep N`` prunes older runs.
"""

from __future__ import annotations

import concurrent.futures
import datetime as _dt
import os
import shutil
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Iterator, Mapping

from ..core import git, paths, proc
from ..core.console import Echo
from ..core.errors import BadInput, Terminated
from ..core.redact import redact
from ..run.runrecord import PIPELINE_ORIGIN_VAR
from . import artifacts, gocd, jobenv, statedir

# What a filtered copy leaves out when the source is not a git work tree (git would skip them via .gitignore).
_COPY_SKIP = {".git", ".venv", "venv", ".pipeline", ".cache", "__pycache__", ".pytest_cache", ".ipynb_checkpoints",
              "mlruns", "mlartifacts", "mlflow.db", "out", "node_modules", ".mypy_cache", ".ruff_cache", ".nox"}

FAILED_STATUSES = ("failed", "timed out", "cancelled")
_POLL_SECONDS = 0.5


@dataclass(frozen=True)
class LocalSettings:
    """How this machine differs from a GoCD agent: where things live and what overrides the XML's values."""

    source: Path  # the repository that stands in for the git material
    state_dir: Path
    shared_workdir: bool = False
    overrides: Mapping[str, str | None] = field(default_factory=dict)  # None = remove from the job environment
    toolkit_bin: Path = Path(sys.executable).parent
    job_timeout: float = 0.0  # minutes without output, for jobs without a timeout (GoCD's server default); 0 = never
    kill_grace: float = 10.0  # seconds between SIGTERM and SIGKILL when a job is cancelled
    keep: int | None = 5  # runs kept in the state folder per pipeline; None = keep all


@dataclass
class JobResult:
    stage: str
    job: str
    status: str = "not run"  # passed | failed | timed out | cancelled (Ctrl-C) | not run
    seconds: float = 0.0
    failed_task: str | None = None
    workdir: Path | None = None
    artifacts: Path | None = None
    log: Path | None = None


@dataclass
class StageResult:
    name: str
    status: str = "not run"  # passed | failed | cancelled | not run (GoCD: Cancelled wins over Failed)
    seconds: float = 0.0
    jobs: int = 1
    parallel: bool = False


@dataclass
class RunResult:
    pipeline: str
    counter: int
    label: str
    revision: str
    jobs: list[JobResult]
    artifacts_root: Path
    seconds: float = 0.0
    stages: list[StageResult] = field(default_factory=list)
    interrupted: bool = False
    terminated: bool = False  # by SIGTERM (exit 143) rather than Ctrl-C (exit 130)

    @property
    def passed(self) -> bool:
        return all(j.status == "passed" for j in self.jobs)

    def first_failure(self) -> JobResult | None:
        return next((j for j in self.jobs if j.status in FAILED_STATUSES), None)


# ----------------------------------------------------------------------------------------------- settings


def locate(source: Path | None, config: Path | None) -> tuple[Path, Path]:
    """(repository, config): explicit values first, then the git work tree, then the current folder."""
    if source is None:
        start = config.resolve().parent if config is not None else Path.cwd()
        source = git.toplevel(start) or Path.cwd()
    source = source.resolve()
    if not source.is_dir():
        raise BadInput(f"--source {source}: not a folder")
    config = (config or source / "gocd" / "pipeline_config.xml").resolve()
    return source, config


def local_overrides(source: Path, *, tracking_uri: str | None, venv_root: Path | None,
                    env: list[str]) -> dict[str, str | None]:
    """Local values replacing the XML's agent-side ones (None = drop, so the tools use their own default)."""
    tracking = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri(source)
    explicit_root = venv_root or os.environ.get("ML_VENV_ROOT", "").strip()
    overrides: dict[str, str | None] = {
        "MLFLOW_TRACKING_URI": tracking,
        "ML_VENV_ROOT": str(paths.venv_root(explicit_root)) if explicit_root else None,
    }
    for item in env:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise BadInput(f"--env {item!r}: expected NAME=VALUE")
        overrides[name.strip()] = value
    return overrides


def local_tracking_uri(source: Path) -> str:
    """The embedded default: a SQLite store in the repository (absolute, so every working copy shares it)."""
    return f"sqlite:///{(source / 'mlflow.db').as_posix()}"


# ----------------------------------------------------------------------------------------------- working copies


def source_files(source: Path, skip: Path | None = None) -> list[str]:
    """Relative paths a fresh checkout would hold: git's tracked + untracked-not-ignored files, else a filtered walk."""
    names = git.listed_files(source)
    if names is None:
        names = list(_walk(source))
    if skip is not None and skip.resolve().is_relative_to(source.resolve()):
        prefix = skip.resolve().relative_to(source.resolve()).as_posix() + "/"
        names = [n for n in names if not (n + "/").startswith(prefix)]
    return [n for n in names if (source / n).is_file()]


def _walk(source: Path) -> Iterator[str]:
    for root, dirs, files in os.walk(source):
        dirs[:] = [d for d in dirs if d not in _COPY_SKIP]
        rel = Path(root).relative_to(source)
        for name in files:
            if name not in _COPY_SKIP and not name.endswith((".pyc", ".pyo")):
                yield (rel / name).as_posix()


def make_workdir(workdir: Path, source: Path, files: list[str], material_dest: str) -> None:
    """A fresh working directory holding a copy of ``files`` (under the material's ``dest`` if it has one)."""
    if workdir.exists():
        raise BadInput(f"{workdir}: working directory already exists (state folder reused by another run?)")
    target = workdir / material_dest if material_dest else workdir
    workdir.mkdir(parents=True)
    for name in files:
        dest = target / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / name, dest)


# ----------------------------------------------------------------------------------------------- tasks


def should_run(runif: frozenset[str], job_status: str) -> bool:
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
             stop: _Stop | None = None, grace: float = 10.0) -> bool | None:
    """Run an <exec>: no shell, arguments exactly as the <arg> elements give them. True/False: it passed/failed;
    None: ``stop()`` became true while it ran, and it was cancelled with its whole process tree."""
    cwd = workdir / task.workingdir if task.workingdir else workdir
    if not cwd.is_dir():
        echo(f"[go] Working directory \"{cwd}\" is not a directory!\n")
        return False
    executable = resolve_command(task.command, cwd=cwd, env=env)
    argv: list[str] | proc.WindowsCommandLine = [executable or task.command, *task.args]
    if executable is not None and paths.is_windows() and executable.lower().endswith((".bat", ".cmd")):
        argv = windows_batch_command(argv)
    started = proc.start(argv, env=env, cwd=cwd, echo=echo) if executable is not None else \
        proc.Result((task.command,), 127, "", "not found")
    if isinstance(started, proc.Result):  # what a GoCD agent prints when ProcessBuilder cannot start the command
        path = next((v for k, v in env.items() if k.upper() == "PATH"), "")
        echo(f"[go] Error happened while attempting to execute '{task.describe()}'. \n"
             f"[go] Please make sure [{task.command}] can be executed on this agent.\n"
             f"[go] [Debug Information] Environment variable PATH: {path}\n"
             f"[go] task failed: {'not found' if started.returncode == 127 else 'cannot be started'} "
             f"(exit code {started.returncode})\n")
        return False
    code = started.wait(stop)
    if code is None:
        echo("[go] On Cancel Task: Kills child processes\n[go] Attempting to kill child processes.\n")
        code = started.kill_tree(grace)
        echo(f"[go] On Cancel Task completed\n[go] Task status: cancelled (exit code: {code})\n")
        return None
    if code != 0:
        echo(f"[go] task failed with exit code {code}: {task.describe()}\n")
    return code == 0


def windows_batch_command(argv: list[str]) -> proc.WindowsCommandLine:
    """Batch files need cmd.exe, run as a GoCD Windows agent does: ``cmd /s /c "<quoted command line>"``. ``/s``
    strips exactly the outer pair of quotes, so a path with spaces (``C:\\Users\\Jane Doe\\...\\x.bat``) stays
    quoted; a plain argument list would reach cmd as ``"C:\\a b\\x.bat" arg`` and lose those quotes."""
    return proc.WindowsCommandLine(f'cmd /s /c "{subprocess.list2cmdline(argv)}"')


def _stamp() -> str:
    return _dt.datetime.now().strftime("%H:%M:%S")


# ----------------------------------------------------------------------------------------------- a job's console


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
        text = text if text.endswith("\n") else text + "\n"
        shown = "".join(f"{self.prefix} {line}" if line.strip() else line for line in text.splitlines(keepends=True))
        with _CONSOLE:
            self.sink(shown)
            if self._file is not None:
                self._file.write(redact(text))
                self._file.flush()

    def silent_for(self) -> float:
        return time.monotonic() - self.last

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


class _Interrupt:
    """Set once by the run loop on Ctrl-C / SIGTERM; the jobs read it."""

    def __init__(self) -> None:
        self.at: float | None = None
        self.terminated = False

    def set(self, cause: BaseException | None = None) -> None:
        self.at = self.at or time.monotonic()
        self.terminated = self.terminated or isinstance(cause, Terminated)


@dataclass
class _Stop:
    """When a job stops early: its console silent for longer than its timeout (minutes; 0 = never), or the run
    interrupted. Polled while a task runs (after Ctrl-C a task first gets ``grace`` seconds to end on its own: in a
    terminal it got the Ctrl-C too; after SIGTERM, which only the rehearsal got, none) and before each task (no
    task starts after a cancel)."""

    console: JobConsole
    minutes: float
    interrupt: _Interrupt
    grace: float
    reason: str | None = None  # "timed out" | "cancelled"

    def __call__(self) -> bool:
        return self._check(running=True)

    def before_task(self) -> bool:
        return self._check(running=False)

    def _check(self, *, running: bool) -> bool:
        if self.reason is None and self.minutes and self.console.silent_for() > self.minutes * 60:
            self.reason = "timed out"
            self.console(f"[go] Go cancelled this job as it has not generated any console output for more than "
                         f"{self.minutes:g} minute(s)\n")
        if self.reason is None and self.interrupt.at is not None and (
                not running or self.interrupt.terminated or time.monotonic() - self.interrupt.at > self.grace):
            self.reason = "cancelled"
            self.console("[local] interrupted: cancelling the job\n")
        return self.reason is not None


# ----------------------------------------------------------------------------------------------- jobs


def run_job(stage: str, job: gocd.Job, *, workdir: Path, store: Path, env: dict[str, str], echo: JobConsole,
            stop: _Stop, grace: float) -> JobResult:
    """Run the tasks of one job in order with runif rules, then publish its artifacts (not after a cancel)."""
    target = store / stage / "1" / job.name
    result = JobResult(stage, job.name, workdir=workdir, artifacts=target, log=console_log(target))
    status = "passed"
    for number, task in enumerate(job.tasks, start=1):
        if stop.before_task():
            result.failed_task = f"the start of task {number} ({task.describe(72)})"
            break
        if not should_run(task.runif, status):
            echo(f"[go] skipping task {number} ({task.describe()}): runif {sorted(task.runif)}, job is {status}\n")
            continue
        echo(f"[go] {_stamp()} task {number}/{len(job.tasks)}: {task.describe()}\n")
        task_started = time.monotonic()
        if isinstance(task, gocd.ExecTask):
            ok = run_exec(task, workdir=workdir, env=env, echo=echo, stop=stop, grace=grace)
        else:
            ok = artifacts.run_fetch(task, workdir=workdir, store=store, echo=echo)
        if ok is None:
            result.failed_task = f"task {number} ({task.describe(72)})"
            break
        echo(f"[go] task {number} {'passed' if ok else 'failed'} in {time.monotonic() - task_started:.1f}s\n")
        if not ok and status == "passed":
            status, result.failed_task = "failed", f"task {number} ({task.describe(72)})"
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


@dataclass(frozen=True)
class _RunContext:
    """What every job of one run shares."""

    pipeline: gocd.Pipeline
    settings: LocalSettings
    counter: int
    label: str
    revision: str
    work: Path
    store: Path
    files: list[str]
    base: Mapping[str, str]
    interrupt: _Interrupt

    def go_variables(self, stage: str, job: str) -> dict[str, str]:
        """GoCD's GO_* variables, and which rehearsal this is (see ``runrecord.pipeline_key``)."""
        found = jobenv.go_variables(self.pipeline, counter=self.counter, label=self.label, revision=self.revision,
                                    stage=stage, job=job)
        return {**found, PIPELINE_ORIGIN_VAR: jobenv.rehearsal_origin(self.settings.state_dir)}


def _run_one(ctx: _RunContext, stage: gocd.Stage, job: gocd.Job, echo: Echo) -> JobResult:
    """One job from the start: its working copy, its environment, its console and timeout, its tasks."""
    started = time.monotonic()
    settings = ctx.settings
    if ctx.interrupt.at is not None:
        return JobResult(stage.name, job.name)
    console = JobConsole(f"[{stage.name}/{job.name}]", echo, console_log(ctx.store / stage.name / "1" / job.name))
    try:
        if job.resources:
            console(f"[local] agent resources: {', '.join(job.resources)}\n")
        workdir = ctx.work / "shared" if settings.shared_workdir else ctx.work / stage.name / job.name
        if workdir.exists() and stage.clean_working_dir:
            console("[go] cleaning working directory (cleanWorkingDir)\n")
            shutil.rmtree(workdir)  # only ever our own folder under the state dir
        if not workdir.exists():
            make_workdir(workdir, settings.source, ctx.files if stage.fetch_materials else [],
                         ctx.pipeline.material.dest)
        console(f"[go] working directory {workdir}\n")
        env = jobenv.job_environment(ctx.pipeline, stage, job, base=ctx.base,
                                     go_vars=ctx.go_variables(stage.name, job.name),
                                     overrides=settings.overrides, toolkit_bin=settings.toolkit_bin, echo=console)
        minutes = job.timeout if job.timeout is not None else settings.job_timeout
        stop = _Stop(console, minutes, ctx.interrupt, settings.kill_grace)
        done = run_job(stage.name, job, workdir=workdir, store=ctx.store, env=env, echo=console, stop=stop,
                       grace=settings.kill_grace)
        done.seconds = time.monotonic() - started
        console(f"[go] job {done.status} in {done.seconds:.1f}s\n")
        return done
    finally:
        console.close()


def console_log(target: Path) -> Path:
    """Where GoCD keeps a job's console log: in the job's artifacts."""
    return target / "cruise-output" / "console.log"


# ----------------------------------------------------------------------------------------------- stages


def _run_stage(ctx: _RunContext, stage: gocd.Stage, echo: Echo) -> tuple[list[JobResult], StageResult]:
    """All jobs of the stage at once (one at a time with a shared working folder); the stage's result once every
    job finished: cancelled if one was, else failed if one failed (GoCD's order)."""
    parallel = len(stage.jobs) > 1 and not ctx.settings.shared_workdir
    summary = StageResult(stage.name, jobs=len(stage.jobs), parallel=parallel)
    how = f"{len(stage.jobs)} jobs in parallel" if parallel else \
        f"{len(stage.jobs)} jobs one after the other (--shared-workdir)" if len(stage.jobs) > 1 else "1 job"
    echo(f"\n==== {_stamp()} stage {stage.name}: {how} ====\n")
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(stage.jobs) if parallel else 1,
                                               thread_name_prefix=f"job-{stage.name}") as pool:
        futures = [pool.submit(_run_one, ctx, stage, job, echo) for job in stage.jobs]
        _wait_all(futures, ctx.interrupt, echo)
    jobs = [f.result() for f in futures]  # a job's unexpected error is raised here, after its siblings ended
    summary.seconds = time.monotonic() - started
    statuses = {j.status for j in jobs}
    summary.status = ("cancelled" if statuses & {"timed out", "cancelled"} else "failed" if "failed" in statuses
                      else "not run" if statuses == {"not run"} else "passed")
    echo(f"[local] stage {stage.name} {summary.status} in {summary.seconds:.1f}s\n")
    return jobs, summary


def _wait_all(futures: list[concurrent.futures.Future[JobResult]], interrupt: _Interrupt, echo: Echo) -> None:
    """Wait for every job; Ctrl-C (KeyboardInterrupt here, in the main thread) asks them to stop, then still waits:
    a job thread ends its process tree before it returns, so nothing is left running."""
    pending = set(futures)
    while pending:
        try:
            _, pending = concurrent.futures.wait(pending, timeout=_POLL_SECONDS)
        except KeyboardInterrupt as exc:  # errors.Terminated too (SIGTERM)
            if interrupt.at is None:
                echo("\n[local] interrupted: cancelling the running jobs\n")
            interrupt.set(exc)


# ----------------------------------------------------------------------------------------------- the run


def run_pipeline(pipeline: gocd.Pipeline, settings: LocalSettings, *, echo: Echo,
                 base_env: Mapping[str, str] | None = None) -> RunResult:
    """Run every stage in order (stop after a failed or cancelled one), the jobs of a stage in parallel."""
    base = dict(os.environ if base_env is None else base_env)
    jobenv.check_secure_variables(pipeline, base, settings.overrides)
    slot = statedir.claim_run(settings.state_dir, pipeline.name)
    try:
        if settings.keep is not None:
            statedir.prune(settings.state_dir, settings.keep, echo)
        return _run_claimed(pipeline, settings, slot.counter, base, echo)
    finally:
        slot.release()


def _run_claimed(pipeline: gocd.Pipeline, settings: LocalSettings, counter: int, base: dict[str, str],
                 echo: Echo) -> RunResult:
    revision = git.head(settings.source) or "unversioned"
    label = gocd.label_for(pipeline, counter, revision, {**base, **jobenv.plain_values(pipeline.variables)})
    store = settings.state_dir / "artifacts" / pipeline.name / str(counter)
    work = settings.state_dir / "work" / pipeline.name / str(counter)
    ctx = _RunContext(pipeline, settings, counter, label, revision, work, store,
                      source_files(settings.source, skip=settings.state_dir), base, _Interrupt())
    result = RunResult(pipeline.name, counter, label, revision,
                       [JobResult(s.name, j.name) for s in pipeline.stages for j in s.jobs], store,
                       stages=[StageResult(s.name, jobs=len(s.jobs)) for s in pipeline.stages])
    echo(f"[local] pipeline {pipeline.name} counter {counter} label {label} revision {revision}\n")
    if revision != "unversioned" and git.has_local_changes(settings.source):
        echo("[local] note: uncommitted changes in the repository are part of this run; GoCD only sees commits\n")
    for note in pipeline.notes:
        echo(f"[local] note: {note}\n")
    started = time.monotonic()
    for index, stage in enumerate(pipeline.stages):
        jobs, result.stages[index] = _run_stage(ctx, stage, echo)
        for done in jobs:
            slot = next(i for i, j in enumerate(result.jobs) if (j.stage, j.job) == (stage.name, done.job))
            result.jobs[slot] = done
        if ctx.interrupt.at is not None:
            result.interrupted, result.terminated = True, ctx.interrupt.terminated
            break
        if result.stages[index].status != "passed":
            if index + 1 < len(pipeline.stages):
                echo("[local] later stages are not run\n")
            break
    result.seconds = time.monotonic() - started
    return result
