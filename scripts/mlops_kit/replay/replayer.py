"""Replay a recorded run and prove its result: the same notebook, parameters, inputs, interpreter and packages, run
again through run_notebook's own machinery, then compared with the record.

One stage run:

1. *Read* (:mod:`mlops_kit.replay.recorded`, in the tracking worker): ``environment/``, ``lineage/lineage.json``, the
   notebook as given (``source/``), the parameters copy, metrics.
2. *Check everything before anything is built or run*: the run finished; every masked parameter is given with
   ``-p`` (else exit 2 naming it), and each ``-p`` names a masked value or relocates an input; the notebook is at
   hand; the recorded interpreter version (the patch: ``3.10.13``) is found like create_venv finds one: installed,
   else uv-managed in the toolkit's folder of Pythons (the stage venv root's, so stage builds and replays share it),
   else downloaded through uv when the policy allows (the report says so), else exit 3 with the install hint
   (``--install-python``: the platform's installer). A pipeline's stages are all checked before its first stage is
   built.
3. *Inputs*: an input that an earlier run produced is taken from that run's ``outputs/`` (downloaded), or, in a
   pipeline replay, from the replayed upstream's output folder; a raw input from its recorded path (or where
   ``-p NAME PATH`` relocates it). Every file's sha256 must be the recorded one, else the stage is not run and the
   file is named (exit 8). The notebook's parameter is pointed at the verified copy (absolute path).
4. *Environment*: :func:`mlops_kit.envs.ensure_env` into the replay venv root (``--venv-root``, default
   ``<venv root>/replay``: stage venvs and registered kernels are never touched), from the recorded spec with the
   recorded lock (exact versions and hashes) when the venv had one, else the recorded freeze (``--from-freeze``'s
   machinery); never from today's spec. The venv is named ``<venv_name>-<8 hex>`` of what defines it (Python,
   installer, lock or freeze), so replays of different records coexist and a second replay reuses its venv.
5. *Execute* with :func:`mlops_kit.stage_run.run` (exactly what run_notebook.py does): the source notebook, the
   recorded parameters (``output_dir`` injected anew), the kernel's folder as recorded when it still exists (else
   ``--cwd``, else the stage's folder); logged as a new run tagged ``mlops_kit.replay_of=<RUN_ID>`` (role
   ``replay``) in the run's experiment (or ``--experiment``).
6. *Compare* (:mod:`mlops_kit.replay.verdict`): metrics, output files, environment; the table is printed and logged
   to the replay run (``replay/report.json``, ``replay/report.txt``, tag ``mlops_kit.replay_verdict``).

A pipeline (parent) run: the latest run of each of its stages, in the order they started, nested under a new
replay parent run that gets the whole report; inputs produced upstream come from the upstream's replay, checked
against the recorded hashes, so the report names the first stage that diverges. A stage whose inputs differ is not
run; later stages still are when their own inputs check out.

Runs recorded before lineage existed have no source notebook, input hashes or kernel folder: the notebook comes
from ``git show <git_commit>:<notebook>`` in ``--repo`` (default: the checkout holding the current folder), else
from the executed notebook with its injected-parameters cell removed (said in the report); parameters naming
files are passed as recorded, unverified (said too); masked values are the ``***`` ones. What cannot be had
(environment files, parameters copy) is listed in one exit-2 line.

Working folder (``--workdir``, default ``replay/<RUN_ID>`` in the current folder, emptied by the next replay of the
same run; a second replay into a folder in use is refused, exit 2): ``record/`` (downloads), ``downloads/``
(producers' files), ``<n>-<stage>/`` (the replay's spec and lock, params, inputs, executed notebook and output
folder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import os
import posixpath
import re
import shutil
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import filelock
import yaml

from ..core import console, git, paths
from ..core.errors import BadInput, NotebookFailed, NotReproduced, PythonNotFound, TrackingError
from ..envs import build, installers, interpreters, lockfile, managed, pyinstall
from ..envs.audit import FREEZE_TXT, LOCK_TXT, SPEC_YAML
from ..envs.interpreters import Interpreter
from ..envs.spec import parse_python_request, parse_spec
from ..run import lineage, notebook, params, reuse, stage_run, tracking_worker, upload
from ..run.runrecord import REPLAY_OF_TAG, ROLE_TAG, RunResult
from ..run.store import Target, resolve_target
from . import contents, recorded, verdict

MARKER = ".mlops_kit_replay"
WORKDIR_LOCK = ".mlops_kit_replay.lock"  # held for the whole replay: the next one must not empty a live folder
REPLAY_ROLE = "replay"
ENV_JSON = "env.json"


@dataclass(frozen=True)
class ReplayRequest:
    """What replay_run.py was asked to do."""

    run_id: str
    tracking_uri: str | None = None
    experiment: str | None = None
    venv_root: Path | None = None
    workdir: Path | None = None
    overrides: tuple[tuple[str, str], ...] = ()
    rtol: float = 0.0
    install_python: bool = False
    python_downloads: str | None = None  # auto / never; None: MLOPS_PYTHON_DOWNLOADS, else UV_PYTHON_DOWNLOADS, else auto
    python: Path | None = None
    repo: Path | None = None
    cwd: Path | None = None
    log_output: bool = False
    cell_timeout: float | None = None


@dataclass
class _Stage:
    """One stage run to replay, read and checked (step 2)."""

    run: recorded.RecordedRun
    index: int
    env: dict[str, Any]
    interpreter: Interpreter
    source: Path
    values: dict[str, Any]
    secrets: tuple[tuple[str, str], ...]  # the -p values of masked names: passed to the kernel, never written
    relocations: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.run.stage

    @property
    def folder_name(self) -> str:
        return f"{self.index + 1}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', self.name)}"


# ---------------------------------------------------------------------------------------------------- entry


def replay(request: ReplayRequest) -> int:
    """Replay ``request.run_id`` (a stage or a pipeline run); returns 0, or raises with the exit code's error."""
    if not math.isfinite(request.rtol) or request.rtol < 0:
        raise BadInput(f"--rtol {request.rtol:g}: must be a finite number, 0 or more")
    target = resolve_target(request.tracking_uri, request.experiment)
    tracker = tracking_worker.Tracker()  # imports mlflow while this process loads the rest
    threading.Thread(target=_warm_up, name="mlops_kit-replay-warm-up", daemon=True).start()
    try:
        with _workdir(request) as workdir:
            first = _executed(tracker.call(recorded.read_run, target.uri, request.run_id, str(workdir / "record")),
                              tracker, target, workdir)
            runs = [first]
            if first.role == "pipeline":
                ids = tracker.call(recorded.stage_runs, target.uri, first.run_id)
                if not ids:
                    raise BadInput(f"run {first.run_id} ({first.run_name}): a pipeline run without stage runs; "
                                   "nothing to replay")
                runs = [_executed(tracker.call(recorded.read_run, target.uri, run_id, str(workdir / "record")),
                                  tracker, target, workdir) for run_id in ids]
            stages = _checked(runs, request)  # exit 2 / 3 here: nothing built, nothing run
            target = resolve_target(target.uri, request.experiment or first.experiment)
            report = verdict.Report(first.run_id, "pipeline" if first.role == "pipeline" else "stage",
                               first.run_name or first.stage, request.rtol)
            return _run_all(stages, report, target, tracker, request, workdir)
    finally:
        tracker.close()


def _executed(run: recorded.RecordedRun, tracker: tracking_worker.Tracker, target: Target,
              workdir: Path) -> recorded.RecordedRun:
    """A reused run executed nothing: its origin (tag ``mlops_kit.reused_from``) is the run that computed its
    results, so that is what is replayed, and the console says so."""
    origin = run.tags.get(reuse.FROM_TAG)
    if not origin or run.role == "pipeline":
        return run
    print(f"run {run.run_id} ({run.stage}) reused run {origin}, which executed the notebook: replaying {origin}",
          flush=True)
    return tracker.call(recorded.read_run, target.uri, origin, str(workdir / "record"))


def _warm_up() -> None:
    """While the worker imports mlflow and reads the run: find the interpreters and import papermill (what the
    stage run needs next), so the replay costs about what the run cost."""
    with contextlib.suppress(Exception):
        interpreters.discover()
        import papermill  # noqa: F401


@contextlib.contextmanager
def _workdir(request: ReplayRequest) -> Iterator[Path]:
    """The replay's folder, held (a lock inside it) while the replay runs: ours (marker) or new; an earlier
    replay's content is removed, never a live one's."""
    folder = Path(os.path.abspath(request.workdir or Path("replay") / request.run_id))
    if folder.exists() and (not folder.is_dir() or (any(folder.iterdir()) and not (folder / MARKER).is_file())):
        raise BadInput(f"--workdir {folder}: exists and was not made by replay_run.py; choose another folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / MARKER).write_text("made by replay_run.py; emptied by the next replay into this folder\n",
                                     encoding="utf-8")
        lock = filelock.FileLock(str(folder / WORKDIR_LOCK))
        lock.acquire(blocking=False)
    except filelock.Timeout:
        raise BadInput(f"--workdir {folder}: another replay_run.py is using it right now (lock {WORKDIR_LOCK} in "
                       "it); wait for it or give another --workdir") from None
    except OSError as exc:
        raise BadInput(f"--workdir {folder}: cannot create it ({exc.strerror or exc})") from None
    try:
        for child in folder.iterdir():
            if child.name not in (MARKER, WORKDIR_LOCK):
                paths.rmtree(child) if child.is_dir() and not child.is_symlink() else child.unlink()
        yield folder
    finally:
        lock.release()  # the file stays: deleting it could let two later replays lock two different files


# ---------------------------------------------------------------------------------------------------- step 2


def _checked(runs: list[recorded.RecordedRun], request: ReplayRequest) -> list[_Stage]:
    """Every stage read and checked; the masked names and ``-p`` checked over all stages; Pythons found last."""
    policy = managed.download_policy(request.python_downloads)
    stages = [_read_stage(run, index, request) for index, run in enumerate(runs)]
    _check_overrides(stages, request.overrides)
    for stage in stages:
        stage.interpreter = _interpreter(stage.env["python"]["version"], request, policy)
        stage.notes.extend(_interpreter_notes(stage.interpreter))
    return stages


def _read_stage(run: recorded.RecordedRun, index: int, request: ReplayRequest) -> _Stage:
    if run.status != "FINISHED":
        raise BadInput(f"run {run.run_id} ({run.stage}) ended {run.status}: only a finished run has results to "
                       "reproduce")
    missing: list[str] = []
    notes: list[str] = []
    env_dir = Path(run.environment) if run.environment else None
    for name in (ENV_JSON, SPEC_YAML, FREEZE_TXT):
        if env_dir is None or not (env_dir / name).is_file():
            missing.append(f"environment/{name}")
    source = _source(run, request, notes, missing)
    values = _recorded_values(run, missing)
    if missing:
        raise BadInput(recorded.missing_artifacts_message(run, missing))
    assert env_dir is not None and source is not None
    try:
        env = json.loads((env_dir / ENV_JSON).read_text(encoding="utf-8"))
        if not (isinstance(env["python"]["version"], str) and isinstance(env["venv_name"], str)):
            raise TypeError("python.version and venv_name must be text")
    except (ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"run {run.run_id}: environment/{ENV_JSON} is not a venv record ({exc})") from None
    if run.lineage is None:
        notes.append("inputs were not recorded (the run predates lineage): parameters naming files are passed as "
                     "recorded, unverified")
    return _Stage(run, index, env, None, source, values, (), {}, notes)  # type: ignore[arg-type]


def _recorded_values(run: recorded.RecordedRun, missing: list[str]) -> dict[str, Any]:
    """The recorded parameters (typed, as the params copy has them), ``output_dir`` left out (injected anew)."""
    if not run.params_file or not Path(run.params_file).is_file():
        missing.append("the parameters copy (params/<name>.params.yaml)")
        return {}
    try:
        values = yaml.safe_load(Path(run.params_file).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise BadInput(f"run {run.run_id}: its parameters copy is not YAML ({exc})") from None
    values.pop("output_dir", None)
    return values


def _source(run: recorded.RecordedRun, request: ReplayRequest, notes: list[str], missing: list[str]) -> Path | None:
    """The notebook as given: recorded; else (an older run) from git; else from the executed notebook."""
    if run.lineage is not None:
        if run.source and Path(run.source).is_file():
            return Path(run.source)
        missing.append(f"the source notebook ({run.lineage.source_notebook})")
        return None
    folder = Path(run.folder)
    commit, path = run.params.get("git_commit", "unknown"), run.params.get("notebook", "")
    repo = request.repo or git.toplevel(Path.cwd()) or git.TOOLKIT_ROOT
    text = git.show(repo, commit, path)
    if text is not None:
        target = folder / "source.ipynb"
        target.write_text(text, encoding="utf-8")
        dirty = " (its checkout had local changes: it may differ)" if run.params.get("git_dirty") == "True" else ""
        notes.append(f"notebook from git show {commit[:12]}:{path} in {repo}{dirty}")
        return target
    if run.executed and Path(run.executed).is_file():
        target = folder / "source.ipynb"
        _strip_executed(Path(run.executed), target)
        notes.append(f"notebook taken from the executed notebook (injected parameters cell and outputs removed): "
                     f"git show {commit[:12]}:{path} was not possible in {repo}")
        return target
    missing.append(f"the source notebook (not recorded; git show {commit[:12]}:{path} failed in {repo}; give "
                   "--repo DIR; no executed notebook either)")
    return None


def _strip_executed(executed: Path, target: Path) -> None:
    """The notebook as given, from an executed one: papermill's injected cell, outputs and run metadata removed."""
    import nbformat

    nb = nbformat.read(str(executed), as_version=4)
    nb.cells = [c for c in nb.cells if notebook.INJECTED_TAG not in c.metadata.get("tags", [])]
    for cell in nb.cells:
        cell.metadata.pop("papermill", None)
        cell.metadata.pop("execution", None)
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nb.metadata.pop("papermill", None)
    nbformat.write(nb, str(target))


def _check_overrides(stages: list[_Stage], overrides: tuple[tuple[str, str], ...]) -> None:
    """Masked values must be given; ``-p`` only gives masked values or relocates inputs (a replay runs the
    recorded parameters). Masked values stay in memory (passed to the kernel like run_notebook's ``-p``)."""
    given = {name for name, _ in overrides}
    allowed: set[str] = set()
    for stage in stages:
        masked = _masked(stage)
        recorded_inputs = stage.run.lineage.inputs if stage.run.lineage is not None else []
        inputs = {i.name for i in recorded_inputs if i.name == lineage.overridable_name(i.param)}
        allowed |= set(masked) | inputs
        absent = [name for name in masked if name not in given]
        if absent:
            raise BadInput(f"run {stage.run.run_id} ({stage.name}): the record masks {', '.join(absent)}: give "
                           + " ".join(f"-p {name} VALUE" for name in absent) + "; nothing was run")
        stage.secrets = tuple((n, v) for n, v in overrides if n in masked)
        for name, value in overrides:
            if name in inputs:
                stage.relocations[name] = params.parse_override(name, value)[1]
    unknown = sorted(given - allowed)
    if unknown:
        raise BadInput(f"-p {unknown[0]}: a replay runs the recorded parameters; -p only gives a masked value or a "
                       "new place for an input (masked: " + (", ".join(sorted(
                           {n for s in stages for n in _masked(s)})) or "none") + ")")


def _masked(stage: _Stage) -> list[str]:
    if stage.run.lineage is not None:
        return list(stage.run.lineage.masked)
    return lineage.masked_names(stage.values)


def _interpreter(version: str, request: ReplayRequest, policy: managed.DownloadPolicy) -> Interpreter:
    """Exactly the recorded version: installed, uv-managed, or downloaded (exit 3 with the install hint when none
    of those can be had). Managed Pythons live beside the stage venv root, whatever the replay's --venv-root."""
    wanted = parse_python_request(version)
    if request.python is not None:
        return interpreters.find_python(wanted, explicit=request.python)
    folder = managed.pythons_dir(paths.venv_root())
    if request.install_python:
        return pyinstall.install_python(wanted, echo=console.progress, managed=folder)
    try:
        return managed.find_or_download(wanted, folder=folder, policy=policy, echo=console.progress)
    except PythonNotFound as exc:
        raise PythonNotFound(f"the record needs Python {version}: {exc}; or let replay_run.py install it: "
                             "--install-python") from None


def _interpreter_notes(interp: Interpreter) -> list[str]:
    """What the report says of a uv-managed interpreter: its build, and whether this replay downloaded it."""
    build = interp.managed
    if build is None:
        return []
    sha = f", sha256 {build.sha256}" if build.sha256 else ""
    how = "downloaded through uv for this replay" if interp.downloaded else "uv-managed, downloaded earlier"
    return [f"interpreter: Python {interp.version_text} {how} ({build.key}{sha})"]


# ---------------------------------------------------------------------------------------------------- steps 3-6


def _run_all(stages: list[_Stage], report: verdict.Report, target: Target, tracker: tracking_worker.Tracker,
             request: ReplayRequest, workdir: Path) -> int:
    parent = None
    if report.kind == "pipeline":
        parent = tracker.call(recorded.start_parent, target, report.run_id, f"replay of {report.name}")
        report.replay_run_id = parent
    upstream: dict[str, Path | None] = {}  # recorded stage run id -> its replay's output folder (None: not replayed)
    done = False
    try:
        for stage in stages:
            result = _replay_stage(stage, upstream, target, tracker, request, workdir, parent)
            report.stages.append(result)
        done = True
    finally:
        if parent is not None:
            status = "FINISHED" if done and report.verdict != verdict.FAILED else "FAILED"
            tracker.call(recorded.log_report, target.uri, parent, report.verdict if done else "interrupted",
                         report.as_dict(), verdict.text(report), status)
    console.write(verdict.text(report))
    return _exit(report)


def _exit(report: verdict.Report) -> int:
    """0 when reproduced; a failed notebook is exit 5, anything else not as recorded exit 8 (its first stage)."""
    first = report.first_divergence
    if first is None:
        return 0
    if report.verdict == verdict.FAILED:
        failed = next(s for s in report.stages if s.verdict == verdict.FAILED)
        raise NotebookFailed(f"replay of run {failed.run_id} ({failed.stage}): {failed.notes[-1]}")
    where = f"stage {first.stage}: " if report.kind == "pipeline" else ""
    raise NotReproduced(f"not reproduced: {where}{'; '.join(first.differences()) or first.verdict}")


def _replay_stage(stage: _Stage, upstream: dict[str, Path | None], target: Target, tracker: tracking_worker.Tracker,
                  request: ReplayRequest, workdir: Path, parent: str | None) -> verdict.StageReport:
    run = stage.run
    result = verdict.StageReport(run.run_id, stage.name, notes=list(stage.notes))
    folder = workdir / stage.folder_name
    folder.mkdir(parents=True, exist_ok=True)
    upstream[run.run_id] = None
    result.inputs = _inputs(stage, upstream, tracker, target.uri, workdir, folder)
    if not all(row.ok for row in result.inputs):
        result.verdict = verdict.NOT_RUN
        result.notes.append("not run: its inputs are not the recorded ones")
        return result
    built = _environment(stage, request, folder, result.notes)
    output_dir = folder / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', stage.name)}_outputs"
    executed = _execute(stage, built, folder, output_dir, target, request, parent, result, tracker)
    replay_id = result.replay_run_id = executed.run_id if executed is not None else None
    with _verdict_or_failed(executed, tracker, target.uri):
        if result.verdict != verdict.FAILED:
            upstream[run.run_id] = output_dir
            result.metrics = verdict.compare_metrics(run.metrics, tracker.call(recorded.metrics, target.uri,
                                                                               replay_id), request.rtol)
            result.outputs = verdict.compare_files(run.outputs.hashed.files if run.outputs is not None else [],
                                                   lineage.hash_outputs(output_dir).hashed.files)
            assert replay_id is not None
            _compare_contents(stage, replay_id, built, folder, tracker, target.uri, request.rtol, result)
        result.environment = _compare_env(stage, built)
        result.decide()
        if replay_id:
            tracker.call(recorded.log_report, target.uri, replay_id, result.verdict, dataclasses.asdict(result),
                         verdict.stage_text(result, request.rtol), "FINISHED" if result.verdict != verdict.FAILED
                         else None)
    return result


def _compare_contents(stage: _Stage, replay_id: str, built: build.EnvResult, folder: Path,
                      tracker: tracking_worker.Tracker, uri: str, rtol: float, result: verdict.StageReport) -> None:
    """Everything both runs hold (:mod:`mlops_kit.replay.contents`): params, tags, metric histories, artifacts."""
    run = stage.run
    held = folder / "held"
    if held.exists():
        paths.rmtree(held)
    old = tracker.call(recorded.contents, uri, run.run_id, str(held / "recorded"))
    new = tracker.call(recorded.contents, uri, replay_id, str(held / "replayed"))
    record = run.lineage
    inputs = [lineage.overridable_name(item.param) for item in record.inputs] if record is not None else []
    rows, skipped = result.held, result.skipped
    contents.compare_values("param", old.params, new.params, lambda name: contents.skip_param(name, inputs), rows,
                            skipped)
    contents.compare_values("tag", old.tags, new.tags, contents.skip_tag, rows, skipped)
    contents.compare_histories(old.metrics, new.metrics, rtol, rows, skipped)
    known = {f"outputs/{f.path}": f.sha256 for f in run.outputs.hashed.files} if run.outputs is not None else {}
    plan = contents.ArtifactPlan((_recorded_stem(run), Path(_executed_name(stage)).stem), record is not None, known)
    context = contents.CompareContext(paths.venv_python(built.venv_dir), rtol, held / "scratch")
    contents.compare_artifacts(old, new, plan, context, rows, skipped)
    verdict.judge_outputs_by_units(result.outputs, rows)


def _recorded_stem(run: recorded.RecordedRun) -> str:
    """The recorded executed notebook's name without ``.ipynb``."""
    if run.lineage is not None and run.lineage.source_notebook:
        return posixpath.basename(run.lineage.source_notebook).removesuffix(".source.ipynb")
    return Path(run.executed).stem if run.executed else ""


@contextlib.contextmanager
def _verdict_or_failed(executed: RunResult | None, tracker: tracking_worker.Tracker, uri: str) -> Iterator[None]:
    """A replay's finished run is left RUNNING until its verdict is logged, which ends it. Whatever stops that
    (the store gone, Ctrl-C) must not leave it looking like a replay that passed: it is ended FAILED (KILLED on
    Ctrl-C) if the store answers, else its manifest is made to do so with ``--log-existing``."""
    try:
        yield
    except BaseException as exc:
        if executed is None or executed.run_id is None or executed.status != "FINISHED":
            raise
        status = "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED"
        why = f"the replay stopped before its verdict ({type(exc).__name__}: {' '.join(str(exc).split())[:300]})"
        try:
            tracker.call(recorded.end_without_verdict, uri, executed.run_id, status, why)
        except Exception:  # noqa: BLE001 - the store is gone: the manifest ends it later (--log-existing)
            upload.mark_replay_unfinished(executed.manifest, status, why)
            if isinstance(exc, TrackingError):
                raise TrackingError(f"{exc}; the replay run {executed.run_id} has no verdict: end it with python "
                                    f"scripts/run_notebook.py --log-existing \"{executed.manifest}\" (it ends "
                                    f"{status}), then replay again") from None
        raise


# ---------------------------------------------------------------------------------------------------- inputs


def _inputs(stage: _Stage, upstream: dict[str, Path | None], tracker: tracking_worker.Tracker, uri: str, workdir: Path,
            folder: Path) -> list[verdict.InputRow]:
    """Each recorded input placed (step 3), checked against its record; the parameters pointed at it."""
    record = stage.run.lineage
    if record is None:
        return []
    rows = []
    for number, item in enumerate(record.inputs):
        recorded_tree = item.hashed
        if recorded_tree is None or not recorded_tree.sha256:
            why = recorded_tree.error if recorded_tree is not None and recorded_tree.error else "not hashed"
            rows.append(verdict.InputRow(item.name, item.path, False, f"not verifiable: {why}"))
            continue
        location, source, in_place = _place(stage, item, recorded_tree, number, upstream, tracker, uri, workdir,
                                            folder)
        ok, status = _verify(recorded_tree, location, record.excluded if in_place else ())
        rows.append(verdict.InputRow(item.name, str(location), ok, status, source))
        try:
            lineage.set_value(stage.values, item.param, str(location))
        except (KeyError, IndexError, TypeError):
            rows[-1] = verdict.InputRow(item.name, str(location), False,
                                        "its parameter is not in the recorded parameters")
    return rows


def _place(stage: _Stage, item: lineage.Input, tree: lineage.Tree, number: int, upstream: dict[str, Path | None],
           tracker: tracking_worker.Tracker, uri: str, workdir: Path, folder: Path) -> tuple[Path, str, bool]:
    """Where the replay takes an input from: (path, said how, checked in place?)."""
    if item.name in stage.relocations:
        return Path(os.path.abspath(str(stage.relocations[item.name]))), "-p (a new place)", True
    if not any(f.producer for f in tree.files):
        return Path(item.path), "its recorded path", True
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", paths.base_name(item.path)) or "input"
    target = folder / "inputs" / f"{number + 1}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', item.name)}" / base
    sources = set()
    for f in tree.files:
        dest = target if tree.kind == "file" else target / f.path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if f.producer is not None:
            src, said = _produced(f.producer, upstream, tracker, uri, workdir)
        else:
            src, said = (Path(item.path) if tree.kind == "file" else Path(item.path) / f.path), "its recorded path"
        sources.add(said)
        if src is not None and src.is_file():
            shutil.copyfile(src, dest)
    return target, ", ".join(sorted(sources)), False


def _produced(producer: lineage.Producer, upstream: dict[str, Path | None], tracker: tracking_worker.Tracker,
              uri: str, workdir: Path) -> tuple[Path | None, str]:
    """A produced file: from the upstream's replay (a pipeline), else downloaded from the producing run."""
    run_id, artifact = producer.run_id, producer.artifact
    relative = artifact.removeprefix("outputs/")
    if run_id in upstream:
        folder = upstream[run_id]
        return (folder / relative if folder else None), f"the replay of run {run_id[:12]}"
    local = workdir / "downloads" / run_id / artifact  # MLflow downloads a file into the folder given
    if not local.is_file():
        try:
            tracker.call(recorded.download, uri, run_id, artifact, str(local.parent))
        except BadInput:
            return None, f"run {run_id[:12]} (its {artifact} is gone)"
    return local, f"run {run_id[:12]} {posixpath.dirname(artifact)}/"


def _verify(recorded_tree: lineage.Tree, location: Path, excluded: Sequence[str]) -> tuple[bool, str]:
    """(ok, what was found): the recorded sha256, else each missing, changed or new file named."""
    tree = lineage.hash_tree(location, excluded=list(excluded))
    if tree.sha256 == recorded_tree.sha256:
        count = f"{len(tree.files)} file(s), " if recorded_tree.kind == "folder" else ""
        return True, f"sha256 as recorded ({count}{tree.size} bytes)"
    if tree.kind == "missing":
        return False, f"missing: {location}"
    prefix = location.parent if recorded_tree.kind == "file" else location
    problems = []
    for row in verdict.compare_files(recorded_tree.files, tree.files):
        full = prefix / row.path
        if row.replayed is None:
            problems.append(f"missing {full}")
        elif row.recorded is None:
            problems.append(f"new file {full}")
        elif not row.same:
            problems.append(f"changed {full} (sha256 {row.replayed[:12]}, recorded {row.recorded[:12]})")
    if tree.error:
        problems.append(tree.error)
    return False, "; ".join(problems[:5]) + (" ..." if len(problems) > 5 else "")


# ---------------------------------------------------------------------------------------------------- environment


def _environment(stage: _Stage, request: ReplayRequest, folder: Path, notes: list[str]) -> build.EnvResult:
    """The replay venv (step 4): recorded spec + lock, else freeze; exactly the recorded interpreter."""
    env_dir = Path(stage.run.environment or "")
    spec_text = (env_dir / SPEC_YAML).read_text(encoding="utf-8")
    name = stage.env["venv_name"]
    spec_file = folder / "env" / f"{name}.yaml"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(spec_text, encoding="utf-8")
    lock = env_dir / LOCK_TXT
    installer = (stage.env.get("installer") or {}).get("name", "uv")
    defining = lock if lock.is_file() else env_dir / FREEZE_TXT
    if lock.is_file():
        _place_recorded_lock(lock, spec_file.with_name(f"{name}.lock.txt"), stage.env, notes)
    digest = hashlib.sha256(f"{stage.env['python']['version']}\n{installer}\n".encode() + defining.read_bytes())
    spec = dataclasses.replace(parse_spec(spec_text, source=spec_file), venv_name=f"{name}-{digest.hexdigest()[:8]}")
    root = Path(os.path.abspath(request.venv_root)) if request.venv_root else paths.venv_root() / "replay"
    return build.ensure_env(spec, venv_root=root, interpreter=stage.interpreter, installer=installer,
                           from_freeze=None if lock.is_file() else defining, kernel_scope="none",
                           echo=console.progress)


def _place_recorded_lock(recorded: Path, target: Path, env: dict[str, Any], notes: list[str]) -> None:
    """The recorded lock next to the replay's spec. One written before locks were sealed is sealed for the replay
    (pins and body unchanged) when its bytes are the ones the run's env.json names; anything else is copied as
    it is and read, strictly, like any lock."""
    data = recorded.read_bytes()
    upgraded = lockfile.upgrade_recorded(data, (env.get("lock") or {}).get("sha256"))
    if upgraded is not None:
        notes.append("the recorded lock predates sealed locks: its sha256 is the one env.json recorded, so it was "
                     "sealed for this replay (pins unchanged)")
    target.write_bytes(upgraded if upgraded is not None else data)


def _compare_env(stage: _Stage, built: build.EnvResult) -> verdict.EnvRow:
    env_dir = Path(stage.run.environment or "")
    recorded_freeze = (env_dir / FREEZE_TXT).read_text(encoding="utf-8")
    replayed_freeze = built.record.freeze_file.read_text(encoding="utf-8")
    built_from = "the recorded lock" if (env_dir / LOCK_TXT).is_file() else "the recorded freeze"
    return verdict.EnvRow(stage.env["python"]["version"], built.record.python.version,
                     len(installers.parse_freeze(replayed_freeze)),
                     verdict.compare_freezes(recorded_freeze, replayed_freeze), built_from)


# ---------------------------------------------------------------------------------------------------- execute


def _executed_name(stage: _Stage) -> str:
    """The replay's executed notebook: the recorded one's name (older runs: named after the stage's folder)."""
    source_notebook = stage.run.lineage.source_notebook if stage.run.lineage is not None else None
    return Path(source_notebook).name.replace(".source.ipynb", ".ipynb") if source_notebook \
        else f"{stage.folder_name}_out.ipynb"


def _execute(stage: _Stage, built: build.EnvResult, folder: Path, output_dir: Path, target: Target,
             request: ReplayRequest, parent: str | None, result: verdict.StageReport,
             tracker: tracking_worker.Tracker) -> RunResult | None:
    """Step 5: run_notebook's machinery on the recorded notebook and parameters; returns the replay run."""
    params_file = folder / "params.yaml"
    params_file.write_text(params.yaml_text(stage.values), encoding="utf-8")
    output = folder / _executed_name(stage)
    run_request = stage_run.NotebookRunRequest(
        venv=built.venv_dir, notebook=stage.source, output=output, params_file=params_file,
        param_overrides=stage.secrets, output_dir=output_dir, stage=stage.name, tracking_uri=target.uri,
        experiment=target.experiment, log_output=request.log_output, no_progress=True,
        cell_timeout=request.cell_timeout, cwd=_kernel_folder(stage, request, folder, result.notes),
        tags=((REPLAY_OF_TAG, stage.run.run_id), (ROLE_TAG, REPLAY_ROLE)), parent_run_id=parent,
        ended_by_caller=True)
    try:
        return stage_run.run(run_request, tracker)  # the replay's worker: mlflow is imported there already
    except stage_run.NotebookRunFailed as exc:
        result.verdict = verdict.FAILED
        result.notes.append(str(exc))
        return exc.result


def _kernel_folder(stage: _Stage, request: ReplayRequest, folder: Path, notes: list[str]) -> Path:
    """--cwd, else the recorded kernel folder when it still exists (notebooks may import code next to them), else
    the stage's replay folder."""
    if request.cwd is not None:
        return Path(os.path.abspath(request.cwd))
    recorded_cwd = stage.run.lineage.cwd if stage.run.lineage is not None else None
    if recorded_cwd and Path(recorded_cwd).is_dir():
        return Path(recorded_cwd)
    notes.append("kernel folder: the stage's replay folder (the recorded one is not here)")
    return folder
