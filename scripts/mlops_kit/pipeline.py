"""Local rehearsal of a GoCD pipeline: the same tasks, in the same order, with the same variables and artifacts.

A rehearsal, not a scheduler: stages run in order and stop after a failed one; the jobs of a stage run one after
the other, each in its own fresh copy of the repository (as if on different agents, so the only data a later stage
sees is what the config publishes and fetches); tasks follow GoCD's ``runif`` rules; artifacts go to a local
artifact store laid out like the server's. Everything lives under a state folder (default ``<repo>/.pipeline``):

    .pipeline/counters.json                               GO_PIPELINE_COUNTER per pipeline (file-locked)
    .pipeline/work/<pipeline>/<counter>/<stage>/<job>/    each job's working copy (kept for inspection)
    .pipeline/artifacts/<pipeline>/<counter>/<stage>/1/<job>/   published artifacts
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Mapping

from filelock import FileLock

from . import artifacts, git, gocd, jobenv, paths, proc
from .console import Echo
from .errors import BadInput
from .runrecord import PIPELINE_ORIGIN_VAR

# What a filtered copy leaves out when the source is not a git work tree (git would skip them via .gitignore).
_COPY_SKIP = {".git", ".venv", "venv", ".pipeline", ".cache", "__pycache__", ".pytest_cache", ".ipynb_checkpoints",
              "mlruns", "mlartifacts", "mlflow.db", "out", "node_modules", ".mypy_cache", ".ruff_cache", ".nox"}

@dataclass(frozen=True)
class LocalSettings:
    """How this machine differs from a GoCD agent: where things live and what overrides the XML's values."""

    source: Path  # the repository that stands in for the git material
    state_dir: Path
    shared_workdir: bool = False
    overrides: Mapping[str, str | None] = field(default_factory=dict)  # None = remove from the job environment
    toolkit_bin: Path = Path(sys.executable).parent


@dataclass
class JobResult:
    stage: str
    job: str
    status: str = "not run"  # passed | failed | not run
    seconds: float = 0.0
    failed_task: str | None = None
    workdir: Path | None = None
    artifacts: Path | None = None


@dataclass
class RunResult:
    pipeline: str
    counter: int
    label: str
    revision: str
    jobs: list[JobResult]
    artifacts_root: Path
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return all(j.status == "passed" for j in self.jobs)

    def first_failure(self) -> JobResult | None:
        return next((j for j in self.jobs if j.status == "failed"), None)


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


# ----------------------------------------------------------------------------------------------- state


def _ensure_state_dir(state_dir: Path) -> None:
    """Create the state folder marked as a cache (CACHEDIR.TAG) and ignored by git."""
    state_dir.mkdir(parents=True, exist_ok=True)
    tag = state_dir / "CACHEDIR.TAG"
    if not tag.exists():
        tag.write_text("Signature: 8a477f597d28d172789f06886806bc55\n# run_pipeline.py state (local rehearsal)\n",
                       encoding="utf-8")
    ignore = state_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")


def next_counter(state_dir: Path, pipeline: str) -> int:
    """Increment and return GO_PIPELINE_COUNTER for ``pipeline`` (safe against concurrent local runs)."""
    _ensure_state_dir(state_dir)
    path = state_dir / "counters.json"
    with FileLock(str(state_dir / "counters.lock")):
        try:
            counters = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            counters = {}
        used = [int(p.name) for sub in ("work", "artifacts") for p in (state_dir / sub / pipeline).glob("*")
                if p.name.isdigit()]  # never reuse a run's folders, even if counters.json was lost
        counters[pipeline] = max([int(counters.get(pipeline, 0)), *used]) + 1
        paths.write_json_atomic(path, counters)
    return counters[pipeline]


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


def run_exec(task: gocd.ExecTask, *, workdir: Path, env: dict[str, str], echo: Echo) -> bool:
    """Run an <exec>: no shell, arguments exactly as the <arg> elements give them."""
    cwd = workdir / task.workingdir if task.workingdir else workdir
    if not cwd.is_dir():
        echo(f"[go] working directory does not exist: {cwd}\n")
        return False
    executable = resolve_command(task.command, cwd=cwd, env=env)
    if executable is None:
        echo(f"[go] command not found: {task.command!r} (looked on the job's PATH)\n")
        return False
    argv: list[str] | proc.WindowsCommandLine = [executable, *task.args]
    if paths.is_windows() and executable.lower().endswith((".bat", ".cmd")):
        argv = windows_batch_command(argv)
    result = proc.run(argv, env=env, cwd=cwd, check=False, stream=True, echo=echo)
    if result.returncode != 0:
        echo(f"[go] task failed with exit code {result.returncode}: {task.describe()}\n")
    return result.returncode == 0


def windows_batch_command(argv: list[str]) -> proc.WindowsCommandLine:
    """Batch files need cmd.exe, run as a GoCD Windows agent does: ``cmd /s /c "<quoted command line>"``. ``/s``
    strips exactly the outer pair of quotes, so a path with spaces (``C:\\Users\\Jane Doe\\...\\x.bat``) stays
    quoted; a plain argument list would reach cmd as ``"C:\\a b\\x.bat" arg`` and lose those quotes."""
    return proc.WindowsCommandLine(f'cmd /s /c "{subprocess.list2cmdline(argv)}"')


def _stamp() -> str:
    return _dt.datetime.now().strftime("%H:%M:%S")


def prefixed(prefix: str, sink: Echo) -> Echo:
    """Echo that starts every line with ``prefix`` (one log for several jobs stays readable)."""
    return lambda line: sink(f"{prefix} {line}" if line.strip() else line)


def run_job(pipeline: gocd.Pipeline, stage: gocd.Stage, job: gocd.Job, *, workdir: Path, store: Path,
            env: dict[str, str], echo: Echo) -> JobResult:
    """Run the tasks of one job in order with runif rules, then publish its artifacts."""
    result = JobResult(stage.name, job.name, workdir=workdir, artifacts=store / stage.name / "1" / job.name)
    status = "passed"
    started = time.monotonic()
    for number, task in enumerate(job.tasks, start=1):
        if not should_run(task.runif, status):
            echo(f"[go] skipping task {number} ({task.describe()}): runif {sorted(task.runif)}, job is {status}\n")
            continue
        echo(f"[go] {_stamp()} task {number}/{len(job.tasks)}: {task.describe()}\n")
        task_started = time.monotonic()
        if isinstance(task, gocd.ExecTask):
            ok = run_exec(task, workdir=workdir, env=env, echo=echo)
        else:
            ok = artifacts.run_fetch(task, workdir=workdir, store=store, echo=echo)
        echo(f"[go] task {number} {'passed' if ok else 'failed'} in {time.monotonic() - task_started:.1f}s\n")
        if not ok and status == "passed":
            status, result.failed_task = "failed", f"task {number} ({task.describe(72)})"
    assert result.artifacts is not None
    if not artifacts.publish_artifacts(job, workdir=workdir, target=result.artifacts, job_passed=status == "passed",
                             echo=echo):
        status, result.failed_task = "failed", "publishing artifacts"
    result.status, result.seconds = status, time.monotonic() - started
    return result


# ----------------------------------------------------------------------------------------------- the run


def run_pipeline(pipeline: gocd.Pipeline, settings: LocalSettings, *, echo: Echo,
                 base_env: Mapping[str, str] | None = None) -> RunResult:
    """Run every stage in order (stop after a failed one); each job in a fresh working copy unless shared."""
    base = dict(os.environ if base_env is None else base_env)
    jobenv.check_secure_variables(pipeline, base, settings.overrides)
    counter = next_counter(settings.state_dir, pipeline.name)
    revision = git.head(settings.source) or "unversioned"
    label = gocd.label_for(pipeline, counter, revision, {**base, **jobenv.plain_values(pipeline.variables)})
    store = settings.state_dir / "artifacts" / pipeline.name / str(counter)
    work = settings.state_dir / "work" / pipeline.name / str(counter)
    files = source_files(settings.source, skip=settings.state_dir)
    origin = {PIPELINE_ORIGIN_VAR: jobenv.rehearsal_origin(settings.state_dir)}
    result = RunResult(pipeline.name, counter, label, revision,
                       [JobResult(s.name, j.name) for s in pipeline.stages for j in s.jobs], store)
    echo(f"[local] pipeline {pipeline.name} counter {counter} label {label} revision {revision}\n")
    if revision != "unversioned" and git.has_local_changes(settings.source):
        echo("[local] note: uncommitted changes in the repository are part of this run; GoCD only sees commits\n")
    for note in pipeline.notes:
        echo(f"[local] {note}\n")
    started = time.monotonic()
    for stage in pipeline.stages:
        for job in stage.jobs:
            go_vars = {**jobenv.go_variables(pipeline, counter=counter, label=label, revision=revision,
                                             stage=stage.name, job=job.name), **origin}
            done = _run_one(pipeline, stage, job, settings=settings, work=work, store=store, files=files, base=base,
                            go_vars=go_vars, echo=echo)
            index = next(i for i, j in enumerate(result.jobs) if (j.stage, j.job) == (stage.name, job.name))
            result.jobs[index] = done
        if any(j.status == "failed" for j in result.jobs if j.stage == stage.name):
            echo(f"[local] stage {stage.name} failed: later stages are not run\n")
            break
    result.seconds = time.monotonic() - started
    return result


def _run_one(pipeline: gocd.Pipeline, stage: gocd.Stage, job: gocd.Job, *, settings: LocalSettings, work: Path,
             store: Path, files: list[str], base: Mapping[str, str], go_vars: Mapping[str, str],
             echo: Echo) -> JobResult:
    say = prefixed(f"[{stage.name}/{job.name}]", echo)
    echo(f"\n==== {_stamp()} stage {stage.name} / job {job.name}"
         f"{' (agent resources: ' + ', '.join(job.resources) + ')' if job.resources else ''} ====\n")
    workdir = work / "shared" if settings.shared_workdir else work / stage.name / job.name
    if workdir.exists() and stage.clean_working_dir:
        say("[go] cleaning working directory (cleanWorkingDir)\n")
        shutil.rmtree(workdir)  # only ever our own folder under the state dir
    if not workdir.exists():
        make_workdir(workdir, settings.source, files if stage.fetch_materials else [], pipeline.material.dest)
    say(f"[go] working directory {workdir}\n")
    env = jobenv.job_environment(pipeline, stage, job, base=base, go_vars=go_vars, overrides=settings.overrides,
                                 toolkit_bin=settings.toolkit_bin, echo=say)
    done = run_job(pipeline, stage, job, workdir=workdir, store=store, env=env, echo=say)
    say(f"[go] job {done.status} in {done.seconds:.1f}s\n")
    return done

