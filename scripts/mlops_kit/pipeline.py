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
import getpass
import hashlib
import json
import os
import posixpath
import re
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping

from filelock import FileLock

from . import gocd, proc
from .errors import BadInput
from .tracking import PIPELINE_ORIGIN_VAR, hide_password

_PLATFORM = sys.platform  # seam: tests patch it to exercise the Windows branches
LOCAL_SERVER_URL = "https://localhost:8154/go"  # never contacted: GoCD tools only read it
# What a filtered copy leaves out when the source is not a git work tree (git would skip them via .gitignore).
_COPY_SKIP = {".git", ".venv", "venv", ".pipeline", ".cache", "__pycache__", ".pytest_cache", ".ipynb_checkpoints",
              "mlruns", "mlartifacts", "mlflow.db", "out", "node_modules", ".mypy_cache", ".ruff_cache", ".nox"}

Echo = Callable[[str], None]


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
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(counters, indent=2), encoding="utf-8")
        os.replace(tmp, path)
    return counters[pipeline]


def git_revision(source: Path) -> str:
    """The commit the local run stands for (uncommitted edits are copied too: see :func:`has_local_changes`)."""
    try:
        result = proc.run(["git", "-C", source, "rev-parse", "HEAD"], check=False, timeout=30)
    except proc.CommandError:
        return "unversioned"
    return result.stdout.strip() if result.returncode == 0 and result.stdout.strip() else "unversioned"


def has_local_changes(source: Path) -> bool:
    """True when the working tree differs from HEAD: the run then uses files GoCD would not see yet."""
    try:
        result = proc.run(["git", "-C", source, "status", "--porcelain"], check=False, timeout=60)
    except proc.CommandError:
        return False
    return result.returncode == 0 and bool(result.stdout.strip())


# ----------------------------------------------------------------------------------------------- working copies


def source_files(source: Path, skip: Path | None = None) -> list[str]:
    """Relative paths a fresh checkout would hold: git's tracked + untracked-not-ignored files, else a filtered walk."""
    try:
        result = proc.run(["git", "-C", source, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                          check=False, timeout=120)
    except proc.CommandError:
        result = None
    if result is not None and result.returncode == 0:
        names = [n for n in result.stdout.split("\0") if n]
    else:
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


# ----------------------------------------------------------------------------------------------- environment


def job_environment(pipeline: gocd.Pipeline, stage: gocd.Stage, job: gocd.Job, *, base: Mapping[str, str],
                    go_vars: Mapping[str, str], settings: LocalSettings, echo: Echo) -> dict[str, str]:
    """Agent env < environment < pipeline < stage < job variables < local overrides; then GO_* and PATH."""
    # the caller's own GO_* (a rehearsal inside a GoCD job) would pose as this run's: only go_vars below count
    env = {k: v for k, v in base.items() if not k.upper().startswith("GO_")}
    secure = {v.name.upper() for v in _all_variables(pipeline) if v.secure}
    for level in (pipeline.environment_variables, pipeline.variables, stage.variables, job.variables):
        for var in level:
            value = _variable_value(var, base, pipeline, settings.overrides)
            verb = "overriding" if _pop(env, var.name) is not None else "setting"
            echo(f"[go] {verb} environment variable '{var.name}' to value '{_shown(var.name, value, var.secure)}'\n")
            env[var.name] = value
    for name, value in settings.overrides.items():
        old = _pop(env, name)
        if value is None:
            if old is not None:
                echo(f"[local] removing environment variable '{name}' (the XML's value is for GoCD agents)\n")
        else:
            verb = "overriding" if old is not None else "setting"
            shown = _shown(name, value, name.upper() in secure)
            echo(f"[local] {verb} environment variable '{name}' to value '{shown}'\n")
            env[name] = value
    for name, value in go_vars.items():
        _pop(env, name)
        env[name] = value
    path = _pop(env, "PATH")
    env["Path" if _PLATFORM == "win32" else "PATH"] = os.pathsep.join(
        [str(settings.toolkit_bin), *([path] if path else [])])
    return env


def _pop(env: dict[str, str], name: str) -> str | None:
    """Remove ``name`` (any case on Windows, where variable names are case-insensitive); return its value."""
    keys = [k for k in env if (k.upper() == name.upper() if _PLATFORM == "win32" else k == name)]
    values = [env.pop(k) for k in keys]
    return values[0] if values else None


_SECRET_NAME = re.compile(r"PASSWORD|PASSWD|TOKEN|SECRET|API_?KEY|CREDENTIAL|PRIVATE", re.IGNORECASE)


def _shown(name: str, value: str, secure: bool) -> str:
    """What the log may show: secure or secret-looking variables masked, passwords in URLs hidden."""
    if secure or _SECRET_NAME.search(name):
        return "********"
    return hide_password(value)


def _variable_value(var: gocd.Variable, base: Mapping[str, str], pipeline: gocd.Pipeline,
                    overrides: Mapping[str, str | None]) -> str:
    """A secure variable's value comes from this machine: ``--env NAME=VALUE`` (which wins anyway), else the
    environment."""
    if not var.secure:
        return var.value or ""
    if overrides.get(var.name) is not None:
        return overrides[var.name] or ""
    if var.name in base:
        return base[var.name]
    raise BadInput(f"{pipeline.source}: secure variable '{var.name}' has no readable value in the XML: "
                   f"set {var.name} in your environment (or pass --env {var.name}=VALUE) for a local run")


def go_variables(pipeline: gocd.Pipeline, *, counter: int, label: str, revision: str, stage: str,
                 job: str) -> dict[str, str]:
    """The variables GoCD gives every task (docs: configuration reference, <tasks>)."""
    env = {
        "GO_SERVER_URL": LOCAL_SERVER_URL, "GO_PIPELINE_NAME": pipeline.name, "GO_PIPELINE_GROUP_NAME": pipeline.group,
        "GO_PIPELINE_COUNTER": str(counter), "GO_PIPELINE_LABEL": label, "GO_STAGE_NAME": stage,
        "GO_STAGE_COUNTER": "1", "GO_JOB_NAME": job, "GO_TRIGGER_USER": _user(), "GO_REVISION": revision,
    }
    if pipeline.material.name:
        suffix = re.sub(r"[^A-Za-z0-9]", "_", pipeline.material.name).upper()
        env.update({f"GO_REVISION_{suffix}": revision, f"GO_TO_REVISION_{suffix}": revision,
                    f"GO_FROM_REVISION_{suffix}": revision, f"GO_MATERIAL_BRANCH_{suffix}": pipeline.material.branch})
    return env


def rehearsal_origin(state_dir: Path) -> str:
    """Tells this machine's rehearsals (this state folder) apart from GoCD's and other clones' runs of the same
    counter when they log to one tracking server (see ``tracking.pipeline_key``)."""
    where = f"{socket.gethostname()}|{state_dir.resolve()}"
    return "local-" + hashlib.sha256(where.encode()).hexdigest()[:10]


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name (service account without USERNAME): GoCD's own default
        return "anonymous"


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
    if _PLATFORM == "win32" and executable.lower().endswith((".bat", ".cmd")):
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


def run_fetch(task: gocd.FetchTask, *, workdir: Path, store: Path, echo: Echo) -> bool:
    """Copy an earlier job's artifact into the working directory, as GoCD's fetch does."""
    source = store / task.stage / "1" / task.job / task.source
    target_dir = workdir / task.dest if task.dest else workdir
    if task.is_dir and not source.is_dir() or not task.is_dir and not source.is_file():
        echo(f"[go] artifact not found: {task.describe()} (looked for {source})\n")
        return False
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / posixpath.basename(task.source)
    if task.is_dir:
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)
    echo(f"[go] fetched {task.stage}/{task.job}/{task.source} -> {target.relative_to(workdir).as_posix()}\n")
    return True


# ----------------------------------------------------------------------------------------------- artifacts


def ant_regex(pattern: str) -> re.Pattern[str]:
    """GoCD's ant-style wildcards: ``**`` any number of folders, ``*`` any name part, ``?`` one character."""
    parts = pattern.strip("/").split("/")
    out = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out += ".*" if last else "(?:[^/]+/)*"
            continue
        out += "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in part)
        out += "" if last else "/"
    return re.compile(out + r"\Z")


def artifact_targets(artifact: gocd.Artifact, workdir: Path) -> list[tuple[Path, str]]:
    """``(source path, destination inside the job's artifacts)`` pairs, following GoCD's ArtifactPlan rules.

    A plain ``src`` (file or folder) lands as ``dest/<its name>``. With wildcards every matching file keeps its
    folders below the pattern's fixed prefix: ``src="test/**/*.log" dest="logs"`` puts test/a/b/x.log at
    ``logs/a/b/x.log``.
    """
    if not artifact.has_wildcard:
        path = workdir / artifact.src
        return [(path, artifact.published_path() or path.name)] if path.exists() else []
    regex = ant_regex(posixpath.normpath(artifact.src))
    segments = posixpath.normpath(artifact.src).split("/")
    prefix = "/".join(s for s in segments[: next(i for i, s in enumerate(segments) if "*" in s or "?" in s)])
    found = []
    for file in sorted(p for p in workdir.rglob("*") if p.is_file()):
        rel = file.relative_to(workdir).as_posix()
        if regex.match(rel):
            parent = posixpath.dirname(rel)
            below = parent[len(prefix):].lstrip("/") if prefix and parent.startswith(prefix) else parent
            found.append((file, posixpath.join(artifact.dest, below, file.name) if artifact.dest or below
                          else file.name))
    return found


def publish_artifacts(job: gocd.Job, *, workdir: Path, target: Path, job_passed: bool, echo: Echo) -> bool:
    """Upload (copy) a job's artifacts; GoCD does this after the tasks whatever their result."""
    ok = True
    for artifact in job.artifacts:
        pairs = artifact_targets(artifact, workdir)
        if not pairs:
            echo(f"[go] The rule [{artifact.src}] cannot match any resource under [{workdir}]\n")
            ok = False
            continue
        for path, dest in pairs:
            out = (target / dest).resolve()
            out.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, out, dirs_exist_ok=True)
            else:
                shutil.copy2(path, out)
        echo(f"[go] published artifact [{artifact.src}] -> [{artifact.dest or '.'}]\n")
    return ok or not job_passed  # a missing artifact fails a passing job; a failed job stays failed


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
            ok = run_fetch(task, workdir=workdir, store=store, echo=echo)
        echo(f"[go] task {number} {'passed' if ok else 'failed'} in {time.monotonic() - task_started:.1f}s\n")
        if not ok and status == "passed":
            status, result.failed_task = "failed", f"task {number} ({task.describe(72)})"
    assert result.artifacts is not None
    if not publish_artifacts(job, workdir=workdir, target=result.artifacts, job_passed=status == "passed",
                             echo=echo):
        status, result.failed_task = "failed", "publishing artifacts"
    result.status, result.seconds = status, time.monotonic() - started
    return result


# ----------------------------------------------------------------------------------------------- the run


def run_pipeline(pipeline: gocd.Pipeline, settings: LocalSettings, *, echo: Echo,
                 base_env: Mapping[str, str] | None = None) -> RunResult:
    """Run every stage in order (stop after a failed one); each job in a fresh working copy unless shared."""
    base = dict(os.environ if base_env is None else base_env)
    _check_secure_variables(pipeline, base, settings.overrides)
    counter = next_counter(settings.state_dir, pipeline.name)
    revision = git_revision(settings.source)
    label = gocd.label_for(pipeline, counter, revision, {**base, **_plain(pipeline.variables)})
    store = settings.state_dir / "artifacts" / pipeline.name / str(counter)
    work = settings.state_dir / "work" / pipeline.name / str(counter)
    files = source_files(settings.source, skip=settings.state_dir)
    origin = {PIPELINE_ORIGIN_VAR: rehearsal_origin(settings.state_dir)}
    result = RunResult(pipeline.name, counter, label, revision,
                       [JobResult(s.name, j.name) for s in pipeline.stages for j in s.jobs], store)
    echo(f"[local] pipeline {pipeline.name} counter {counter} label {label} revision {revision}\n")
    if revision != "unversioned" and has_local_changes(settings.source):
        echo("[local] note: uncommitted changes in the repository are part of this run; GoCD only sees commits\n")
    for note in pipeline.notes:
        echo(f"[local] {note}\n")
    started = time.monotonic()
    for stage in pipeline.stages:
        for job in stage.jobs:
            done = _run_one(pipeline, stage, job, settings=settings, work=work, store=store, files=files, base=base,
                            go_vars={**go_variables(pipeline, counter=counter, label=label, revision=revision,
                                                    stage=stage.name, job=job.name), **origin}, echo=echo)
            index = next(i for i, j in enumerate(result.jobs) if (j.stage, j.job) == (stage.name, job.name))
            result.jobs[index] = done
        if any(j.status == "failed" for j in result.jobs if j.stage == stage.name):
            echo(f"[local] stage {stage.name} failed: later stages are not run\n")
            break
    result.seconds = time.monotonic() - started
    return result


def _plain(variables: tuple[gocd.Variable, ...]) -> dict[str, str]:
    return {v.name: v.value or "" for v in variables if not v.secure}


def _all_variables(pipeline: gocd.Pipeline) -> list[gocd.Variable]:
    levels = [pipeline.environment_variables, pipeline.variables]
    levels += [s.variables for s in pipeline.stages] + [j.variables for s in pipeline.stages for j in s.jobs]
    return [var for level in levels for var in level]


def _check_secure_variables(pipeline: gocd.Pipeline, base: Mapping[str, str],
                            overrides: Mapping[str, str | None]) -> None:
    """Refuse before anything runs if a secure variable has no value on this machine (environment or --env)."""
    for var in _all_variables(pipeline):
        _variable_value(var, base, pipeline, overrides)


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
    env = job_environment(pipeline, stage, job, base=base, go_vars=go_vars, settings=settings, echo=say)
    done = run_job(pipeline, stage, job, workdir=workdir, store=store, env=env, echo=say)
    say(f"[go] job {done.status} in {done.seconds:.1f}s\n")
    return done


def summary(result: RunResult) -> str:
    """The table printed at the end: stage/job, status, duration, and the failing task if any."""
    rows = [("stage", "job", "status", "seconds")]
    rows += [(j.stage, j.job, j.status.upper() if j.status == "failed" else j.status,
              f"{j.seconds:.1f}" if j.status != "not run" else "-") for j in result.jobs]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = result.first_failure()
    if failed is not None:
        lines.append(f"failed: {failed.stage}/{failed.job} at {failed.failed_task}")
    lines.append(f"total {result.seconds:.1f}s, pipeline {result.pipeline} counter {result.counter} "
                 f"(label {result.label})")
    return "\n".join(lines)
