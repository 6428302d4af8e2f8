"""Run one stage notebook end to end: check the inputs, execute it in its venv, log an auditable MLflow run.

The order is what keeps a run safe and fast: the MLflow helper process starts first (it imports mlflow while the
inputs are checked and papermill loads), then every input is checked, output folders included (bad input: exit 2
even with the store down, and no store created), then the output is claimed (a second run of the same output is
refused), then the tracking store, then the store is opened and the run created while the kernel starts.

No run stays RUNNING for ever: the manifest is written as soon as the run exists, Ctrl-C and SIGTERM end the run
KILLED with the notebook executed so far, and a manifest still RUNNING whose runner vanished (``kill -9``) is closed
as KILLED by ``--log-existing`` or by the next run of the same output (:mod:`mlops_kit.run.upload`). Execution is
:mod:`mlops_kit.run.notebook`'s, parameters :mod:`mlops_kit.run.params`'s, the output rules
:mod:`mlops_kit.run.outputs`'s, the record and manifest :mod:`mlops_kit.run.runrecord`'s, the store
:mod:`mlops_kit.run.store`'s, the MLflow calls :mod:`mlops_kit.run.tracking`'s (run in
:mod:`mlops_kit.run.tracking_worker`). A notebook that mentions mlflow, on a local store, gets that store served
over HTTP by the worker (:mod:`mlops_kit.run.served_store`) from the run's creation until its kernel has exited.
:func:`run` returns the run's :class:`~mlops_kit.run.runrecord.RunResult`; a failed notebook raises
:class:`NotebookRunFailed`, which carries it too.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import time
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core import console, git, paths, redact
from ..core.errors import BadInput, NotebookFailed, TrackingError
from ..envs import audit, kernel, spec
from . import (
    html,
    kernel_mlflow,
    lineage,
    notebook,
    outputs,
    params,
    reuse,
    reuse_origin,
    runrecord,
    served_store,
    store,
    tracking,
    tracking_worker,
    upload,
)
from .runrecord import RunFile, RunResult

if TYPE_CHECKING:  # nbformat is imported by papermill when needed, not at start-up
    from nbformat import NotebookNode


NO_VENV = "run_notebook.py: give --venv DIR or --spec FILE (see --help)"


@dataclass(frozen=True)
class NotebookRunRequest:
    """``run_notebook.py`` asked to run a notebook, as given (relative paths are relative to the current folder);
    ``--log-existing`` is :class:`mlops_kit.run.upload.UploadRequest`."""

    notebook: Path
    output: Path
    venv: Path | None = None
    spec: Path | None = None
    venv_root: Path | None = None
    params_file: Path | None = None
    param_overrides: tuple[tuple[str, str], ...] = ()
    output_dir: Path | None = None
    stage: str | None = None
    tracking_uri: str | None = None
    experiment: str | None = None
    log_output: bool = False
    no_progress: bool = False
    cell_timeout: float | None = None
    start_timeout: float = 60
    cwd: Path | None = None
    tags: tuple[tuple[str, str], ...] = ()  # extra run tags (a replay's mlops_kit.replay_of)
    parent_run_id: str | None = None  # nest under this run, not under a pipeline instance's parent (a replay)
    ended_by_caller: bool = False  # a replay: a finished run stays RUNNING until the replay logs its verdict
    reuse: bool = False  # --reuse: an earlier run with the same reuse key is copied instead of executing


_MAX_TIMEOUT = 7 * 24 * 3600.0


@dataclass
class _Run:
    """One stage run in flight: what the kernel-ready hook, the finish and a Ctrl-C need."""

    tracker: tracking_worker.Tracker
    started: Future[Any]
    record: runrecord.RunRecord
    files: outputs.RunFiles
    masked: dict[str, Any]
    served: Future[Any] | None = None  # the local store served to the kernel (its URL), when the notebook uses mlflow
    uses_mlflow: bool = False  # the notebook mentions mlflow: the stage run becomes the kernel's active run


class NotebookRunFailed(NotebookFailed):
    """The notebook failed (exit 5); ``result`` is its run as logged (a replay reports on it)."""

    def __init__(self, message: str, result: RunResult) -> None:
        super().__init__(message)
        self.result = result


def run(request: NotebookRunRequest, tracker: tracking_worker.Tracker | None = None) -> RunResult:
    """Run the stage notebook and log it; returns the run's result (a failed notebook raises
    :class:`NotebookRunFailed`). ``tracker``: a tracking worker the caller started (a replay's, mlflow already
    imported) and closes itself."""
    target = store.resolve_target(request.tracking_uri, request.experiment)
    own = tracker is None
    tracker = tracker or tracking_worker.Tracker()  # imports mlflow while the inputs are checked and papermill loads
    try:
        checked = check_request(request, target)  # bad input: exit 2, whatever the state of the store
        try:
            store.preflight(target.uri)  # a server that is down: fail in a second, before anything runs
        except TrackingError as exc:
            raise TrackingError(f"{exc}; nothing was executed") from None
        tracker.submit(store.warm, target)  # only now: valid input, so opening (creating) the store is wanted
        outputs.make_folders(checked.files)
        with outputs.claimed(checked.files):
            upload.close_vanished_run(checked.files, tracker)
            return _execute_and_log(request, checked, target, tracker)
    finally:
        if own:
            tracker.close()


@dataclass
class CheckedInputs:
    """Everything the request names, read and checked before anything runs."""

    env: audit.EnvRecord
    nb: NotebookNode
    values: dict[str, Any]
    params_file_has_secrets: bool
    files: outputs.RunFiles
    stage: str
    reuse: bool = False  # asked for (--reuse, the spec's reuse: true) and not turned off (MLOPS_REUSE=never)


def check_request(request: NotebookRunRequest, target: store.Target) -> CheckedInputs:
    """Read and check every user input before the kernel starts: bad input is exit 2 with nothing executed."""
    stage_spec = spec.load_spec(request.spec) if request.venv is None and request.spec is not None else None
    venv = _venv_dir(request, stage_spec)
    _refuse_bad_options(request)
    env = audit.read_env(venv)
    if not paths.venv_python(venv).exists():
        raise BadInput(f"{venv}: its interpreter {paths.venv_python(venv)} is missing; "
                       "rebuild with create_venv.py --force")
    from_file = params.load_params_file(request.params_file) if request.params_file else {}
    values = params.merge_overrides(from_file, request.param_overrides)
    learn_secrets(values)
    params.check_count(values, source=str(request.params_file or "-p"))
    nb = notebook.load_notebook(request.notebook)
    redact.register_secrets_in(params.declared_defaults(nb))  # api_key = "sk-dev…" in its parameters cell
    params_file_has_secrets = redact.has_secrets(from_file)  # also a value given as a secret with -p
    for message in params.undeclared_warnings(nb, list(values), notebook=request.notebook):
        console.warn(message)
    stage = request.stage or env.stage
    files = outputs.run_files(request.output, request.output_dir, stage)
    outputs.check(files, target=target, venv=env.venv_dir)
    return CheckedInputs(env, nb, values, params_file_has_secrets, files, stage, _reuse_wanted(request, stage_spec))


def _reuse_wanted(request: NotebookRunRequest, stage_spec: spec.StageSpec | None) -> bool:
    """``--reuse`` or the spec's ``reuse: true`` (``--spec``; with ``--venv`` only ``--reuse`` asks), unless
    ``MLOPS_REUSE=never`` forces execution. A replay never reuses."""
    off = reuse.disabled_by_environment()  # a value it does not take is bad input, whoever asked for reuse
    wanted = request.reuse or (stage_spec is not None and stage_spec.reuse)
    if wanted and off:
        print(f"reuse off: {reuse.MODE_VAR}=never; executing the notebook", flush=True)
        return False
    return wanted and request.parent_run_id is None


def learn_secrets(values: dict[str, Any]) -> None:
    """Register every secret this run knows before anything is printed or written: the values of secret-named
    parameters, credentials inside any parameter, the secret variables of the environment the kernel inherits
    (GoCD's secure variables arrive so). From then on every text the run writes is masked by exact value: console,
    executed notebook (outputs, errors, tracebacks), HTML, manifest, MLflow params and tags."""
    redact.register_secrets_in(values)
    redact.register_environment(os.environ)


def _venv_dir(request: NotebookRunRequest, stage: spec.StageSpec | None) -> Path:
    """--venv as given, or the venv create_venv.py builds for --spec, ``stage`` (a stale one only warns: it still
    runs)."""
    if request.venv is not None:
        return Path(os.path.abspath(request.venv))
    if stage is None:
        raise BadInput(NO_VENV)
    venv = paths.venv_root(request.venv_root) / stage.venv_name
    record = audit.read_env(venv) if (venv / audit.AUDIT / audit.ENV_JSON).is_file() else None
    if record is None:
        raise BadInput(f"{venv}: no venv for {request.spec} (build it: python scripts/create_venv.py "
                       f"--spec {request.spec})")
    if record.spec_hash != stage.content_hash():
        console.warn(f"{venv}: built from a different version of {request.spec}; re-run create_venv.py to update it")
    return venv


def _refuse_bad_options(request: NotebookRunRequest) -> None:
    """Refuse options that would fail late or overwrite the user's notebook."""
    if request.output.suffix.lower() != ".ipynb":
        raise BadInput(f"{request.output}: --output must be a .ipynb file")
    if os.path.abspath(request.output) == os.path.abspath(request.notebook):
        raise BadInput(f"{request.output}: --output must differ from --notebook (it would overwrite it)")
    for name, value in (("--cell-timeout", request.cell_timeout), ("--start-timeout", request.start_timeout)):
        if value is not None and not (value > 0 and math.isfinite(value) and value <= _MAX_TIMEOUT):
            raise BadInput(f"{name} {value:g}: must be a number of seconds above 0 and at most {_MAX_TIMEOUT:g} "
                           "(a week; leave --cell-timeout out for no limit)")
    if request.cwd is not None and not request.cwd.is_dir():
        raise BadInput(f"{request.cwd}: --cwd is not an existing folder")
    if request.output_dir is not None and request.output_dir.exists() and not request.output_dir.is_dir():
        raise BadInput(f"{request.output_dir}: --output-dir exists and is not a folder")


def _execute_and_log(request: NotebookRunRequest, checked: CheckedInputs, target: store.Target,
                     tracker: tracking_worker.Tracker) -> RunResult:
    """Start the MLflow run before executing, so the kernel gets its run id; Ctrl-C still leaves a manifest."""
    env, nb, files = checked.env, checked.nb, checked.files
    values = {**checked.values, "output_dir": str(files.output_dir)}
    masked = redact.masked(values)
    record = _record(request, checked.stage, env, files, masked, target,
                     params_file_has_secrets=checked.params_file_has_secrets)
    if request.parent_run_id is None and record.lineage is not None:  # a replay's run is never an origin
        record.reuse_key = reuse.new_key(nb, masked, env, [item.param for item in record.lineage.inputs])
    if checked.reuse:
        origin = _find_origin(record, files, checked.stage, tracker)
        if origin is not None:
            return _log_reused(record, files, masked, tracker, origin, checked.stage)
    uses_mlflow = served_store.notebook_uses_mlflow(nb)
    served_log = _served_log(record, files, uses_mlflow)  # before start_run: the manifest written at the start lists it
    started = tracker.submit(tracking.start_run, record, str(files.manifest))  # the manifest exists from the start
    live = _Run(tracker, started, record, files, masked, uses_mlflow=uses_mlflow)
    if served_log is not None:  # queued right after start_run: the worker serves the store while the kernel runs
        live.served = tracker.submit(served_store.serve, record.tracking_uri, str(served_log), request.start_timeout)
    ex = notebook.Execution(
        notebook=Path(os.path.abspath(request.notebook)), output=files.output, parameters=values,
        kernelspec=kernel.kernelspec(env.venv_dir, env.kernel_display_name), kernel_name=env.kernel_name,
        cwd=Path(os.path.abspath(request.cwd or Path.cwd())),
        masked_parameters=masked if masked != values or redact.knows_secrets() else None,  # no unmasked saves
        before_cells=lambda: _run_ready(live),
        log_output=request.log_output,
        progress_bar=sys.stderr.isatty() and not (request.no_progress or request.log_output),
        cell_timeout=request.cell_timeout, start_timeout=request.start_timeout,
    )
    begin = time.time()
    try:
        outcome = notebook.execute(ex, nb)
    except served_store.ServedStoreError as exc:  # the run exists: end it FAILED with a manifest (exit 6)
        _not_served(live, exc)
        raise TrackingError(f"{exc}; nothing was executed, run {live.record.run_id} ended FAILED") from None
    except TrackingError as exc:
        raise TrackingError(f"{exc}; nothing was executed") from None
    except KeyboardInterrupt:
        _interrupted(live)
        raise
    except Exception as exc:  # noqa: BLE001 - the run exists: end it FAILED with a manifest, never leave it RUNNING
        outcome = notebook.Outcome(kind="runner-error", ename=type(exc).__name__, evalue=" ".join(str(exc).split()))
    return _finish(live, outcome, begin)


def _find_origin(record: runrecord.RunRecord, files: outputs.RunFiles, stage: str,
                 tracker: tracking_worker.Tracker) -> reuse_origin.Origin | None:
    """The earlier run this one may copy (:mod:`mlops_kit.run.reuse_origin`), its results already in place (the
    executed notebook, its HTML, the output folder); None after saying why not (one line)."""
    assert record.lineage is not None and record.reuse_key is not None
    lineage.hash_inputs(record.lineage, warn=console.warn)  # now, in the runner: the key needs them
    why = reuse.with_inputs(record.reuse_key, record.lineage)
    if why:
        print(f"no reuse: {why}; executing the notebook", flush=True)
        return None
    outputs.remove_stale_staging(files)
    staging = outputs.reuse_staging(files)
    try:
        try:
            found = tracker.call(reuse_origin.find, record.tracking_uri, record.target, record.reuse_key, stage,
                                 str(staging))
        except TrackingError as exc:
            raise TrackingError(f"{exc}; nothing was executed") from None
        if found.origin is None:
            print(redact.redact(f"no reuse: {found.why_not}; executing the notebook"), flush=True)
            return None
        _place(found.origin, staging, files)
        return found.origin
    finally:
        with contextlib.suppress(OSError):  # Ctrl-C mid-download: the worker may still be writing into it
            paths.rmtree(staging)


def _place(origin: reuse_origin.Origin, staging: Path, files: outputs.RunFiles) -> None:
    """The origin's checked results where an execution would have written them (same-named files replaced, as an
    execution replaces them; nothing else in the output folder is touched)."""
    _move(Path(origin.executed), files.output)
    if origin.html:
        _move(Path(origin.html), files.html)
    for entry in origin.outputs:
        target = files.output_dir / entry.path
        target.parent.mkdir(parents=True, exist_ok=True)
        _move(staging / "outputs" / entry.path, target)


def _move(source: Path, target: Path) -> None:
    """Rename when on one volume, else copy (the output folder may be on another drive than the notebook)."""
    try:
        os.replace(source, target)
    except OSError:
        shutil.copy2(source, target)


def _log_reused(record: runrecord.RunRecord, files: outputs.RunFiles, masked: dict[str, Any],
                tracker: tracking_worker.Tracker, origin: reuse_origin.Origin, stage: str) -> RunResult:
    """The reused run: its own MLflow run (this pipeline instance's tags and parent), tagged with its origin, with
    the origin's metrics and model tags, and the origin's results as its files."""
    record.tags[reuse.FROM_TAG] = origin.run_id
    record.tags.update(origin.tags)
    begin = time.time()
    started = tracker.submit(tracking.start_run, record, str(files.manifest))
    live = _Run(tracker, started, record, files, masked)
    try:
        tracking.apply_ids(record, tracker.result(started))
        record.params_logged = True
    except KeyboardInterrupt:
        _interrupted(live)
        raise
    print(f"reused run {origin.run_id} ({stage}, {origin.date}): same notebook, parameters, inputs, environment",
          flush=True)
    return _finish(live, notebook.Outcome(), begin, metrics=origin.metrics, render=origin.html is None)


def _record(request: NotebookRunRequest, stage: str, env: audit.EnvRecord, run: outputs.RunFiles,
            masked: dict[str, Any], target: store.Target, *, params_file_has_secrets: bool) -> runrecord.RunRecord:
    """Everything the run logs, decided up front so the manifest can replay it (--log-existing)."""
    nb_path = Path(os.path.abspath(request.notebook))
    code = git.source_info(nb_path)
    source = _source_name(nb_path, code.root)
    system = {"stage": stage, "python_version": env.python.version, "venv_name": env.venv_name,
              "git_commit": code.commit, "git_branch": code.branch, "git_dirty": code.dirty, "notebook": source}
    gocd = runrecord.gocd_context()
    key = None if request.parent_run_id else runrecord.pipeline_key()
    tags = {"mlflow.runName": stage, "mlflow.source.name": source, "mlflow.source.type": "JOB" if gocd else "LOCAL",
            "mlflow.user": runrecord.current_user(), "mlops_kit.role": "stage", "mlops_kit.stage": stage,
            "mlops_kit.venv": str(env.venv_dir), "mlops_kit.envs.kernel": env.kernel_name,
            "mlops_kit.python_source": env.python.source or "unknown",
            **({"mlops_kit.python_build": env.python.managed.key} if env.python.managed else {}),
            **({"mlflow.source.git.commit": code.commit, "mlflow.source.git.branch": code.branch}
               if code.commit != "unknown" else {}),
            **({runrecord.PIPELINE_KEY_TAG: key} if key else {}), **gocd, **_nesting(request)}
    files = [RunFile(str(run.output)), RunFile(str(run.html)), RunFile(str(run.params_copy), "params"),
             *[RunFile(str(p), "environment") for p in env.bundle]]  # spec, freeze, the lock's copy if any, env.json
    if request.params_file and not params_file_has_secrets:  # else only the masked copy above
        files.append(RunFile(str(Path(os.path.abspath(request.params_file))), "params"))
    record = runrecord.RunRecord(
        tracking_uri=target.uri, experiment=target.experiment, artifact_location=target.artifact_location,
        run_name=stage, params=runrecord.loggable_params(system, masked, warn=console.warn),
        tags=runrecord.loggable_tags(tags), pipeline_key=key,
        pipeline_run_name=f"{gocd.get('GO_PIPELINE_NAME')} #{gocd.get('GO_PIPELINE_COUNTER')}" if key else None,
        files=files, folders=[RunFile(str(run.output_dir), "outputs")], executed_notebook=str(run.output),
        html=str(run.html), ended_by_caller=request.ended_by_caller,
    )
    _plan_lineage(record, request, env, run, masked, target, source)
    return record


def _nesting(request: NotebookRunRequest) -> dict[str, str]:
    """A replay's own tags and the run it is nested under (it never joins a pipeline instance's family)."""
    return {**({"mlflow.parentRunId": request.parent_run_id} if request.parent_run_id else {}), **dict(request.tags)}


def _plan_lineage(record: runrecord.RunRecord, request: NotebookRunRequest, env: audit.EnvRecord,
                  run: outputs.RunFiles, masked: dict[str, Any], target: store.Target, source: str) -> None:
    """What a replay needs besides the environment (:mod:`mlops_kit.run.lineage`): the notebook as given, copied now
    (the user may edit it while the run goes on), the masked names, the inputs its parameters name (hashed by the
    tracking worker once the run exists)."""
    nb_path = Path(os.path.abspath(request.notebook))
    try:
        masked_defaults = _copy_source(nb_path, run.source_copy, passed=masked)
    except OSError as exc:
        raise BadInput(f"{run.source_copy}: cannot copy the notebook there ({exc.strerror or exc})") from None
    record.files.append(RunFile(str(run.source_copy), "source"))
    excluded = [run.output_dir, env.venv_dir, *store.store_paths(target),
                run.output.with_name(run.output.stem + ".*"), run.lock]
    record.lineage = lineage.new_record(
        masked, cwd=Path(os.path.abspath(request.cwd or Path.cwd())), output_dir=run.output_dir, excluded=excluded,
        python=env.python.version, notebook=source, source_notebook=f"source/{run.source_copy.name}",
        parameters=f"params/{run.params_copy.name}", masked=masked)
    record.lineage.masked = sorted({*record.lineage.masked, *masked_defaults})  # a replay asks for them with -p


def _copy_source(nb_path: Path, copy: Path, *, passed: dict[str, Any]) -> list[str]:
    """The notebook as given, for a replay: byte for byte, unless it holds a secret the run knows (a default of its
    parameters cell such as ``api_key = "sk-dev…"``, an output saved with it), which is masked in the copy. Returns
    the parameters whose default was masked and that the run did not pass (a replay must be given them)."""
    import nbformat

    nb = nbformat.read(str(nb_path), as_version=4)
    before = nbformat.writes(nb)
    defaults = params.declared_defaults(nb)
    notebook.mask_outputs(nb)
    if nbformat.writes(nb) == before:
        shutil.copyfile(nb_path, copy)
        return []
    nbformat.write(nb, str(copy))
    return sorted(name for name, value in defaults.items() if name not in passed and redact.redacted(value) != value)


def _source_name(nb_path: Path, git_root: Path | None) -> str:
    """The notebook as the repository names it (``notebooks/train.ipynb``): relative to the git checkout, else to
    the job's working folder (a GoCD agent's or a rehearsal's copy), else its absolute path."""
    for root in (git_root, Path.cwd()):
        if root is not None and nb_path.is_relative_to(root):
            return nb_path.relative_to(root).as_posix()
    return str(nb_path)


def _served_log(record: runrecord.RunRecord, files: outputs.RunFiles, uses_mlflow: bool) -> Path | None:
    """A notebook that mentions mlflow, on a local store, gets that store over HTTP from MLflow's own server code in
    the tracking worker: any mlflow or mlflow-skinny in its venv can then log to it. Returns the server's log,
    ``<output stem>.mlflow_server.log``, made one of the run's files; None when no server is needed."""
    if not (uses_mlflow and store.is_local_store(record.tracking_uri)):
        return None
    log = files.output.with_name(files.output.stem + ".mlflow_server.log")
    record.files.append(RunFile(str(log)))
    return log


def _run_ready(live: _Run) -> dict[str, str]:
    """Called once the kernel is up: wait for the MLflow run, create the output folder, give the kernel its env."""
    html.prewarm_in_background()  # uses the wait for the run (or runs beside the first cells)
    started: tracking.Started = live.tracker.result(live.started)
    tracking.apply_ids(live.record, started)
    live.record.params_logged = True
    live.tracker.submit(tracking.warm_finish, live.record.tracking_uri, started.run_id)
    live.files.output_dir.mkdir(parents=True, exist_ok=True)
    env = {"MLFLOW_RUN_ID": started.run_id, "MLFLOW_TRACKING_URI": live.record.tracking_uri,
           "MLFLOW_EXPERIMENT_ID": started.experiment_id}
    if redact.strip_credentials(live.record.tracking_uri) != live.record.tracking_uri:
        # a notebook ending the run itself makes MLflow print "View run at <URI>", login and all, into its output
        env["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    if live.uses_mlflow:
        env[kernel_mlflow.CHILD_TAGS_VAR] = kernel_mlflow.child_tags(live.record.tags, started.run_id)
    if live.served is not None:  # a ServedStoreError here: exit 6, the run ended FAILED (_not_served)
        env.update(served_store.client_env(live.tracker.result(live.served)))
    return env


def _stop_serving(live: _Run) -> None:
    """The kernel has exited (its mlflow may have ended the run FINISHED at exit): stop the served store before
    the runner writes the final status, so nothing writes to the run after it. Never fails the run."""
    if live.served is not None:
        with contextlib.suppress(TrackingError):
            live.tracker.call(served_store.stop_serving)


def _not_served(live: _Run, exc: TrackingError) -> None:
    """The local server did not start (the kernel was up, no cell ran): end the existing run FAILED, keep a
    manifest (the server's log is one of the run's files)."""
    record = live.record
    record.status, record.end_time = "FAILED", int(time.time() * 1000)
    record.failure = {"failure_kind": "tracking-server", "error_name": type(exc).__name__,
                      "error_value": redact.redact(str(exc))}
    if record.run_id is not None:
        with contextlib.suppress(TrackingError):
            live.tracker.call(tracking.finish_run, record)
            record.logged = True
    runrecord.save_manifest(record, live.files.manifest)


def _finish(live: _Run, outcome: notebook.Outcome, begin: float, *, metrics: dict[str, float] | None = None,
            render: bool = True) -> RunResult:
    """Write and log the results; a tracking failure keeps everything on disk with the command to upload it later.
    A reused run brings its origin's ``metrics`` and HTML (``render`` False)."""
    record, files = live.record, live.files
    output, manifest = files.output, files.manifest
    _stop_serving(live)
    record.end_time = int(time.time() * 1000)
    record.status = "FINISHED" if outcome.ok else "FAILED"
    record.failure = redact.redacted(outcome.as_tags()) if not outcome.ok else {}
    record.metrics = metrics if metrics is not None else \
        runrecord.read_metrics(files.output_dir, since=begin, warn=console.warn)
    files.params_copy.write_text(params.yaml_text(live.masked), encoding="utf-8")
    tracking_error = None
    if output.is_file() and render:
        html.render_or_warn(output, files.html)
    try:
        if record.run_id is None:  # the kernel never started: the run may still be on its way
            tracking.apply_ids(record, live.tracker.result(live.started))
            record.params_logged = True
        runrecord.save_manifest(record, manifest)
        live.tracker.call(tracking.finish_run, record)
        record.logged = True
    except TrackingError as exc:
        tracking_error = f"{exc}; the executed notebook is {output}; upload it later with: " + \
            _upload_later_command(manifest, record.tracking_uri)
    runrecord.save_manifest(record, manifest)
    result = RunResult.of(record, manifest)
    origin = record.tags.get(reuse.FROM_TAG)
    print(f"executed notebook: {output}" + (f" (run {origin}'s, reused)" if origin else ""))
    if record.logged:
        print(result.summary())
    if not outcome.ok:
        extra = f" (also: {tracking_error})" if tracking_error else ""
        message = f"{output}: notebook failed: {outcome.summary()}{_not_served_hint(live, outcome)}{extra}"
        raise NotebookRunFailed(redact.redact(message), result)
    if tracking_error:
        raise TrackingError(tracking_error)
    print(output, flush=True)
    return result


def _not_served_hint(live: _Run, outcome: notebook.Outcome) -> str:
    """The local store is served to the kernel only when a cell mentions mlflow: a notebook logging from a module
    it imports meets the store's URI itself, which an older mlflow or mlflow-skinny cannot open (MLflow's "Model
    registry functionality is unavailable; got unsupported URI 'sqlite:///…'"). Say what the README says."""
    if live.served is not None or not store.is_local_store(live.record.tracking_uri):
        return ""
    if not any(word in f"{outcome.ename} {outcome.evalue}".lower() for word in ("mlflow", "registry")):
        return ""
    return ("; if the notebook logs with mlflow from a module it imports, mention mlflow in a code cell (a comment "
            "'# logs with mlflow' is enough): the local store is then served to the kernel, which any mlflow can "
            "log to")


def _upload_later_command(manifest: Path, uri: str) -> str:
    """The manifest keeps the URI without its password: say how to give the credentials back."""
    command = f"python scripts/run_notebook.py --log-existing \"{manifest}\""
    if redact.strip_credentials(uri) == uri:
        return command
    return (f"{command} --tracking-uri \"{redact.redact(uri)}\" (with the real credentials; or set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD: the manifest keeps no credentials)")


def _interrupted(live: _Run) -> None:
    """Ctrl-C (or a GoCD cancel that sends it): end the run as KILLED, keep the manifest; never hang here."""
    record, files = live.record, live.files
    record.status, record.end_time = "KILLED", int(time.time() * 1000)
    record.failure = {"failure_kind": "interrupted"}
    if record.run_id is None and live.started.done() and live.started.exception() is None:
        tracking.apply_ids(record, live.started.result())
        record.params_logged = True
    if record.run_id is not None:
        try:
            _stop_serving(live)  # before KILLED is written: nothing from the kernel can reach the run after it
            live.tracker.call(tracking.finish_run, record)
            record.logged = True
        except Exception:  # noqa: BLE001 - the manifest below still allows --log-existing
            pass
    if record.run_id is not None or files.output.is_file():
        runrecord.save_manifest(record, files.manifest)
