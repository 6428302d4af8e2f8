"""Local rehearsal of a GoCD pipeline: the same tasks, in the same order, with the same variables and artifacts.

A rehearsal, not a scheduler, but it schedules like GoCD wherever a pipeline's author would notice:

* Stages run in order; a stage starts when the one before it passed (a failed or cancelled stage ends the run).
* The jobs of a stage run at the same time, as GoCD gives each to an agent: one thread drives each job
  (:mod:`~mlops_kit.rehearsal.job`), in the job's own fresh copy of the repository
  (:mod:`~mlops_kit.rehearsal.workspace`: a later stage sees only what the config publishes and fetches). A failing
  job does not stop its siblings; the stage fails once all of them finished, and is cancelled if one was (GoCD's
  order). With ``--shared-workdir`` (one folder, as on one agent) the jobs of a stage run one after the other.
* Ctrl-C / SIGTERM reach the main thread here; the jobs are asked to stop and waited for, so each ends its
  process tree before the run returns.
* On Linux the rehearsal is a child subreaper while it runs, so what a job's tasks daemonize comes back to it and
  ends with the job (:mod:`mlops_kit.core.jobprocesses`).

Everything lives under a state folder (default ``<repo>/.pipeline``, :mod:`mlops_kit.rehearsal.statedir`):
counters, each run's working copies (kept for inspection) and artifacts; ``--keep N`` prunes older runs.
"""

from __future__ import annotations

import concurrent.futures
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Mapping

from ..core import git, jobprocesses
from ..core.console import Echo
from ..core.redact import is_secret_name, register_secret
from ..run.runrecord import PIPELINE_ORIGIN_VAR
from . import gocd, jobenv, statedir, workspace
from .job import FAILED_STATUSES, Interruption, JobConsole, JobResult, JobStop, console_log, job_store, run_job
from .settings import LocalSettings
from .tasks import stamp

StageStatus = Literal["passed", "failed", "cancelled", "not run"]
_POLL_SECONDS = 0.5


@dataclass
class StageResult:
    name: str
    status: StageStatus = "not run"  # GoCD: Cancelled wins over Failed
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
    interruption: Interruption

    def go_variables(self, stage: str, job: str) -> dict[str, str]:
        """GoCD's GO_* variables, and which rehearsal this is (see ``runrecord.pipeline_key``)."""
        found = jobenv.go_variables(self.pipeline, counter=self.counter, label=self.label, revision=self.revision,
                                    stage=stage, job=job)
        return {**found, PIPELINE_ORIGIN_VAR: jobenv.rehearsal_origin(self.settings.state_dir)}


def run_pipeline(pipeline: gocd.Pipeline, settings: LocalSettings, *, echo: Echo,
                 base_env: Mapping[str, str] | None = None) -> RunResult:
    """Run every stage in order (stop after a failed or cancelled one), the jobs of a stage in parallel."""
    base = dict(os.environ if base_env is None else base_env)
    jobenv.check_secure_variables(pipeline, base, settings.overrides)
    _register_secret_values(pipeline, base, settings.overrides)
    slot = statedir.claim_run(settings.state_dir, pipeline.name)
    try:
        if settings.keep is not None:
            statedir.prune(settings.state_dir, settings.keep, echo)
        with jobprocesses.subreaper():
            return _run_claimed(pipeline, settings, slot.counter, base, echo)
    finally:
        slot.release()


def _register_secret_values(pipeline: gocd.Pipeline, base: Mapping[str, str],
                            overrides: Mapping[str, str | None]) -> None:
    """GoCD masks secure variables' values in the console; so does the rehearsal, and values of secret-looking
    names too: registered before any job runs, every line of every console and console log is masked."""
    for value in jobenv.secret_values(pipeline, base, overrides):
        register_secret(value)
    for name, override in overrides.items():
        if override is not None and is_secret_name(name):
            register_secret(override)


def _run_claimed(pipeline: gocd.Pipeline, settings: LocalSettings, counter: int, base: dict[str, str],
                 echo: Echo) -> RunResult:
    head = git.head(settings.source)
    label = gocd.label_for(pipeline, counter, head, {**base, **jobenv.plain_values(pipeline.variables)})
    revision = head or gocd.UNVERSIONED
    store = settings.state_dir / "artifacts" / pipeline.name / str(counter)
    work = settings.state_dir / "work" / pipeline.name / str(counter)
    ctx = _RunContext(pipeline, settings, counter, label, revision, work, store,
                      workspace.source_files(settings.source, skip=settings.state_dir), base, Interruption())
    result = RunResult(pipeline.name, counter, label, revision,
                       [JobResult(s.name, j.name) for s in pipeline.stages for j in s.jobs], store,
                       stages=[StageResult(s.name, jobs=len(s.jobs)) for s in pipeline.stages])
    echo(f"[local] pipeline {pipeline.name} counter {counter} label {label} revision {revision}\n")
    if revision != gocd.UNVERSIONED and git.has_local_changes(settings.source):
        echo("[local] note: uncommitted changes in the repository are part of this run; GoCD only sees commits\n")
    for note in pipeline.notes:
        echo(f"[local] note: {note}\n")
    started = time.monotonic()
    for index, stage in enumerate(pipeline.stages):
        jobs, result.stages[index] = _run_stage(ctx, stage, echo)
        for done in jobs:
            slot = next(i for i, j in enumerate(result.jobs) if (j.stage, j.job) == (stage.name, done.job))
            result.jobs[slot] = done
        if ctx.interruption.at is not None:
            result.interrupted, result.terminated = True, ctx.interruption.terminated
            break
        if result.stages[index].status != "passed":
            if index + 1 < len(pipeline.stages):
                echo("[local] later stages are not run\n")
            break
    result.seconds = time.monotonic() - started
    return result


def _run_stage(ctx: _RunContext, stage: gocd.Stage, echo: Echo) -> tuple[list[JobResult], StageResult]:
    """All jobs of the stage at once (one at a time with a shared working folder); the stage's result once every
    job finished: cancelled if one was, else failed if one failed (GoCD's order)."""
    parallel = len(stage.jobs) > 1 and not ctx.settings.shared_workdir
    summary = StageResult(stage.name, jobs=len(stage.jobs), parallel=parallel)
    how = f"{len(stage.jobs)} jobs in parallel" if parallel else \
        f"{len(stage.jobs)} jobs one after the other (--shared-workdir)" if len(stage.jobs) > 1 else "1 job"
    echo(f"\n==== {stamp()} stage {stage.name}: {how} ====\n")
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=len(stage.jobs) if parallel else 1,
                                               thread_name_prefix=f"job-{stage.name}") as pool:
        futures = [pool.submit(_run_one_job, ctx, stage, job, echo) for job in stage.jobs]
        _wait_all(futures, ctx.interruption, echo)
    jobs = [f.result() for f in futures]  # a job's unexpected error is raised here, after its siblings ended
    summary.seconds = time.monotonic() - started
    summary.status = _stage_status({j.status for j in jobs})
    echo(f"[local] stage {stage.name} {summary.status} in {summary.seconds:.1f}s\n")
    return jobs, summary


def _stage_status(statuses: set[str]) -> StageStatus:
    if statuses & {"timed out", "cancelled"}:
        return "cancelled"
    if "failed" in statuses:
        return "failed"
    return "not run" if statuses == {"not run"} else "passed"


def _run_one_job(ctx: _RunContext, stage: gocd.Stage, job: gocd.Job, echo: Echo) -> JobResult:
    """One job from the start: its working copy, its environment, its console and timeout, its tasks."""
    started = time.monotonic()
    settings = ctx.settings
    if ctx.interruption.at is not None:
        return JobResult(stage.name, job.name)
    console = JobConsole(f"[{stage.name}/{job.name}]", echo, console_log(job_store(ctx.store, stage.name, job.name)))
    try:
        if job.resources:
            console(f"[local] agent resources: {', '.join(job.resources)}\n")
        workdir = ctx.work / "shared" if settings.shared_workdir else ctx.work / stage.name / job.name
        workspace.prepare_workdir(workdir, stage, source=settings.source, files=ctx.files,
                                  material_dest=ctx.pipeline.material.dest, echo=console)
        env = jobenv.job_environment(ctx.pipeline, stage, job, base=ctx.base,
                                     go_vars=ctx.go_variables(stage.name, job.name),
                                     overrides=settings.overrides, toolkit_bin=settings.toolkit_bin, echo=console)
        minutes = job.timeout if job.timeout is not None else settings.job_timeout
        stop = JobStop(console, minutes, ctx.interruption, settings.kill_grace)
        done = run_job(stage.name, job, workdir=workdir, store=ctx.store, env=env, echo=console, stop=stop,
                       grace=settings.kill_grace)
        done.seconds = time.monotonic() - started
        console(f"[go] job {done.status} in {done.seconds:.1f}s\n")
        return done
    finally:
        console.close()


def _wait_all(futures: list[concurrent.futures.Future[JobResult]], interruption: Interruption, echo: Echo) -> None:
    """Wait for every job; Ctrl-C (KeyboardInterrupt here, in the main thread) asks them to stop, then still waits:
    a job thread ends its process tree before it returns, so nothing is left running."""
    pending = set(futures)
    while pending:
        try:
            _, pending = concurrent.futures.wait(pending, timeout=_POLL_SECONDS)
        except KeyboardInterrupt as exc:  # errors.Terminated too (SIGTERM)
            if interruption.at is None:
                echo("\n[local] interrupted: cancelling the running jobs\n")
            interruption.set(exc)
