"""Execute a stage notebook in its venv with papermill and record an auditable MLflow run.

Thin command-line edge over :mod:`mlops_kit.notebook` (execution), :mod:`mlops_kit.params` (parameters) and
:mod:`mlops_kit.tracking` (MLflow, manifest).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlops_kit import cli, envs, kernel, notebook, params, spec, tracking  # noqa: E402
from mlops_kit.errors import BadInput, NotebookFailed, TrackingError  # noqa: E402

DESCRIPTION = """\
Run a stage notebook with papermill on its venv's interpreter (built by create_venv.py) and log an MLflow run.

The kernel is started from a private kernelspec, so no Jupyter kernel needs to be registered for the user running
this (e.g. a GoCD agent's service account). Inside the notebook, sys.executable, !pip and subprocess "python" are
the venv's.

Parameters: the --params-file YAML mapping (nested values allowed), then each -p NAME VALUE (VALUE read as YAML:
-p lr 0.1 is a number, -p code "'007'" a string, -p train.lr 0.1 sets a nested key, -p data C:\\data\\raw stays
text). Declare them in a cell tagged "parameters"; names the notebook does not declare are passed anyway, with a
warning. The kernel runs in the current folder (or --cwd); relative paths in options are relative to the current
folder.

Output folder: the run's folder for data, models and plots is --output-dir, default
<folder of --output>/<stage>_outputs. It is created, passed to the notebook as the string parameter output_dir
(absolute path; declare output_dir = "..." in the parameters cell) and everything in it is logged to MLflow under
outputs/ (files already there from earlier runs too: use a fresh folder per run).

Metrics: a JSON object {"name": number, ...} that the notebook writes to <output_dir>/metrics.json during the run
is logged as MLflow metrics (nested objects become a.b names; non-numbers are skipped with a warning). A notebook
can also call mlflow.log_metric() itself: MLFLOW_RUN_ID, MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_ID point its
kernel at this run (needs mlflow or mlflow-skinny in the venv and a tracking server; a SQLite store needs the same
mlflow version in the venv as here).

Written next to --output: <name>.html (the executed notebook as HTML), <name>.params.yaml (the parameters used,
secret-looking values masked) and <name>.mlops_run.json (the run manifest). The executed notebook is written even
when a cell fails, the kernel dies or a cell times out (exit 5; the run is marked FAILED with the cell and error).

MLflow: tracking URI --tracking-uri, else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the current folder
(artifacts in mlruns/ next to it; view with: mlflow ui --backend-store-uri sqlite:///mlflow.db). Experiment
--experiment, else MLFLOW_EXPERIMENT_NAME, else GO_PIPELINE_NAME, else "mlops_kit". The run is named after the
stage; params: stage, python_version, venv_name, git_commit, git_branch, git_dirty, notebook and every notebook
parameter (nested keys as a.b; values of names containing password, token, secret, api_key, credential, ... are
logged as ***). Tags: mlflow.source.*, and GO_PIPELINE_NAME, GO_PIPELINE_COUNTER, GO_PIPELINE_LABEL, GO_STAGE_NAME,
GO_STAGE_COUNTER, GO_JOB_NAME, GO_TRIGGER_USER, GO_SERVER_URL, GO_REVISION* when set (no other variables).
Stages with the same GO_PIPELINE_NAME and GO_PIPELINE_COUNTER are nested under one parent run.
Artifacts: the executed notebook and its HTML, environment/ (spec.yaml, pip_freeze.txt, env.json of the venv),
params/ (the params file and the parameters used) and outputs/ (the output folder).

If the tracking store cannot be reached before the notebook starts, nothing is executed (exit 6). If it fails
after, the executed notebook and outputs stay on disk and the run can be uploaded later with
  python scripts/run_notebook.py --log-existing <name>.mlops_run.json
Ctrl-C ends the run as KILLED (exit 130), the notebook executed so far written.

examples (Windows cmd):
  python scripts\\run_notebook.py --venv C:\\ml_venvs\\ml_ingest_py310 --notebook notebooks\\ingest.ipynb ^
      --output out\\ingest_out.ipynb --params-file params\\ingest_params.yaml
  python scripts\\run_notebook.py --spec specs\\train.yaml --notebook notebooks\\train.ipynb ^
      --output "D:\\ML runs\\train_out.ipynb" -p model random_forest -p n_estimators 300 --log-output
  python scripts\\run_notebook.py --log-existing out\\ingest_out.mlops_run.json --tracking-uri http://mlflow:5000

examples (PowerShell):
  python scripts\\run_notebook.py --spec specs\\ingest.yaml --notebook notebooks\\ingest.ipynb `
      --output out\\ingest_out.ipynb --tracking-uri http://127.0.0.1:5000 --experiment churn
  $env:MLFLOW_TRACKING_URI = "http://127.0.0.1:5000"; python scripts\\run_notebook.py --venv $venv `
      --notebook notebooks\\train.ipynb --output out\\train_out.ipynb --cell-timeout 1800
"""


def build_parser() -> cli.ArgParser:
    p = cli.ArgParser(prog="run_notebook.py", description=DESCRIPTION)
    which = p.add_mutually_exclusive_group()
    which.add_argument("--venv", type=Path, metavar="DIR", help="the stage venv (built by create_venv.py)")
    which.add_argument("--spec", type=Path, metavar="FILE",
                       help="or: the stage spec; the venv is <venv root>/<venv_name>")
    which.add_argument("--log-existing", type=Path, metavar="MANIFEST",
                       help="upload an already executed run from its <name>.mlops_run.json, then exit")
    p.add_argument("--venv-root", type=Path, metavar="DIR",
                   help="with --spec: folder holding the venvs (default: $ML_VENV_ROOT, else the per-user folder)")
    p.add_argument("--notebook", type=Path, metavar="NB", help="the notebook to run (.ipynb)")
    p.add_argument("--output", type=Path, metavar="OUT", help="where to write the executed notebook (folders created)")
    p.add_argument("--params-file", type=Path, metavar="YAML", help="notebook parameters (a YAML mapping)")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="set a parameter (VALUE read as YAML); repeatable; wins over --params-file")
    p.add_argument("--output-dir", type=Path, metavar="DIR",
                   help="the run's output folder, injected as output_dir (default: <folder of OUT>/<stage>_outputs)")
    p.add_argument("--stage", help="stage name for the run (default: the venv's stage)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                                                          "else sqlite:///mlflow.db)")
    p.add_argument("--experiment", metavar="NAME", help="MLflow experiment (default: $MLFLOW_EXPERIMENT_NAME, "
                                                        "else $GO_PIPELINE_NAME, else mlops_kit)")
    p.add_argument("--log-output", action="store_true", help="stream cell output to the console (GoCD logs)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it only shows on a terminal)")
    p.add_argument("--cell-timeout", type=float, metavar="S", help="fail a cell running longer (default: no limit)")
    p.add_argument("--start-timeout", type=float, default=60, metavar="S",
                   help="seconds to wait for the kernel to start (default: 60)")
    p.add_argument("--cwd", type=Path, metavar="DIR", help="the kernel's working folder (default: the current one)")
    return p


def _venv_dir(args: Any) -> Path:
    if args.venv is not None:
        return Path(os.path.abspath(args.venv))
    if args.spec is None:
        raise BadInput("run_notebook.py: give --venv DIR or --spec FILE (see --help)")
    stage = spec.load_spec(args.spec)
    root = args.venv_root or (Path(os.environ["ML_VENV_ROOT"]) if os.environ.get("ML_VENV_ROOT", "").strip()
                              else envs.default_venv_root())
    venv = Path(os.path.abspath(root)) / stage.venv_name
    record = envs.read_env(venv) if (venv / envs.AUDIT / envs.ENV_JSON).is_file() else None
    if record is None:
        raise BadInput(f"{venv}: no venv for {args.spec} (build it: python scripts/create_venv.py --spec {args.spec})")
    if record.spec_hash != stage.content_hash():
        _warn(f"{venv}: built from a different version of {args.spec}; re-run create_venv.py to update it")
    return venv


def _check_inputs(args: Any) -> None:
    if args.notebook is None or args.output is None:
        raise BadInput("run_notebook.py: --notebook and --output are required (see --help)")
    if args.output.suffix.lower() != ".ipynb":
        raise BadInput(f"{args.output}: --output must be a .ipynb file")
    if os.path.abspath(args.output) == os.path.abspath(args.notebook):
        raise BadInput(f"{args.output}: --output must differ from --notebook (it would overwrite it)")
    for name, value in (("--cell-timeout", args.cell_timeout), ("--start-timeout", args.start_timeout)):
        if value is not None and not value > 0:
            raise BadInput(f"{name} {value:g}: must be a positive number of seconds")
    if args.cwd is not None and not args.cwd.is_dir():
        raise BadInput(f"{args.cwd}: --cwd is not an existing folder")
    if args.output_dir is not None and args.output_dir.exists() and not args.output_dir.is_dir():
        raise BadInput(f"{args.output_dir}: --output-dir exists and is not a folder")


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.log_existing is not None:
        return _log_existing(args)
    target = tracking.resolve_target(args.tracking_uri, args.experiment)
    try:
        tracking.preflight(target.uri)  # a server that is down: fail in a second, before anything runs
    except TrackingError as exc:
        raise TrackingError(f"{exc}; nothing was executed") from None
    tracker = tracking.Tracker()  # imports mlflow and opens the store while papermill loads and the kernel starts
    try:
        tracker.call("warm", target)
        venv = _venv_dir(args)
        _check_inputs(args)
        env = envs.read_env(venv)
        if not envs.venv_python(venv).exists():
            raise BadInput(f"{venv}: its interpreter {envs.venv_python(venv)} is missing; "
                           "rebuild with create_venv.py --force")
        values = params.load_params_file(args.params_file) if args.params_file else {}
        args.params_file_has_secrets = params.has_secrets(values)
        values = params.merge_overrides(values, [tuple(p) for p in args.param])
        nb = notebook.load_notebook(args.notebook)
        for message in params.undeclared_warnings(nb, list(values), notebook=args.notebook):
            _warn(message)
        return _execute_and_log(args, venv, env, nb, values, target, tracker)
    finally:
        tracker.close()


def _execute_and_log(args: Any, venv: Path, env: Any, nb: Any, values: dict[str, Any], target: tracking.Target,
                     tracker: tracking.Tracker) -> int:
    stage = args.stage or env.stage
    output = Path(os.path.abspath(args.output))
    output_dir = Path(os.path.abspath(args.output_dir or output.parent / f"{stage}_outputs"))
    values = {**values, "output_dir": str(output_dir)}
    masked = params.masked(values)
    record = _record(args, stage, env, output, output_dir, masked, target)
    started = tracker.start(record)
    ex = notebook.Execution(
        notebook=Path(os.path.abspath(args.notebook)), output=output, parameters=values,
        kernelspec=kernel.kernelspec(venv, env.kernel_display_name), kernel_name=env.kernel_name,
        cwd=Path(os.path.abspath(args.cwd or Path.cwd())),
        masked_parameters=masked if masked != values else None,
        before_cells=lambda: _run_ready(tracker, started, record, output_dir),
        log_output=args.log_output, progress_bar=sys.stderr.isatty() and not (args.no_progress or args.log_output),
        cell_timeout=args.cell_timeout, start_timeout=args.start_timeout,
    )
    begin = time.time()
    try:
        outcome = notebook.execute(ex, nb)
    except TrackingError as exc:
        raise TrackingError(f"{exc}; nothing was executed") from None
    except KeyboardInterrupt:
        _interrupted(tracker, record, output)
        raise
    return _finish(tracker, started, record, outcome, output, output_dir, begin, masked)


def _record(args: Any, stage: str, env: Any, output: Path, output_dir: Path, masked: dict[str, Any],
            target: tracking.Target) -> tracking.RunRecord:
    nb_path = Path(os.path.abspath(args.notebook))
    git = tracking.git_info(nb_path)
    source = nb_path.relative_to(git.root).as_posix() if git.root and _inside(nb_path, git.root) else str(nb_path)
    system = {"stage": stage, "python_version": env.python_version, "venv_name": env.venv_name,
              "git_commit": git.commit, "git_branch": git.branch, "git_dirty": git.dirty, "notebook": source}
    gocd = tracking.gocd_context()
    key = tracking.pipeline_key()
    tags = {"mlflow.runName": stage, "mlflow.source.name": source, "mlflow.source.type": "JOB" if gocd else "LOCAL",
            "mlflow.user": tracking.describe_user(), "mlops_kit.role": "stage", "mlops_kit.stage": stage,
            "mlops_kit.venv": str(env.venv_dir), "mlops_kit.kernel": env.kernel_name,
            **({"mlflow.source.git.commit": git.commit, "mlflow.source.git.branch": git.branch}
               if git.commit != "unknown" else {}),
            **({tracking.PIPELINE_KEY_TAG: key} if key else {}), **gocd}
    params_copy = output.with_name(output.stem + ".params.yaml")  # written with the outputs (_finish)
    files = [[str(output), ""], [str(output.with_suffix(".html")), ""], [str(params_copy), "params"],
             *[[str(p), "environment"] for p in (env.spec_file, env.freeze_file, env.env_file)]]
    if args.params_file and not args.params_file_has_secrets:  # else only the masked copy above
        files.append([str(Path(os.path.abspath(args.params_file))), "params"])
    return tracking.RunRecord(
        tracking_uri=target.uri, experiment=target.experiment, artifact_location=target.artifact_location,
        run_name=stage, params=tracking.loggable_params(system, masked, warn=_warn),
        tags=tracking.loggable_tags(tags), pipeline_key=key,
        pipeline_run_name=f"{gocd.get('GO_PIPELINE_NAME')} #{gocd.get('GO_PIPELINE_COUNTER')}" if key else None,
        files=files, folders=[[str(output_dir), "outputs"]], executed_notebook=str(output),
        html=str(output.with_suffix(".html")),
    )


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
        return True
    except ValueError:
        return False


def _run_ready(tracker: tracking.Tracker, started: Any, record: tracking.RunRecord,
               output_dir: Path) -> dict[str, str]:
    """Called once the kernel is up: wait for the MLflow run, create the output folder, give the kernel its env."""
    notebook.prewarm_html_in_background()  # uses the wait for the run (or runs beside the first cells)
    ids = started.result()
    tracking.apply_ids(record, ids)
    record.params_logged = True
    tracker.warm_finish(record)
    output_dir.mkdir(parents=True, exist_ok=True)
    return {"MLFLOW_RUN_ID": ids["run_id"], "MLFLOW_TRACKING_URI": record.tracking_uri,
            "MLFLOW_EXPERIMENT_ID": ids["experiment_id"]}


def _finish(tracker: tracking.Tracker, started: Any, record: tracking.RunRecord, outcome: notebook.Outcome,
            output: Path, output_dir: Path, begin: float, masked: dict[str, Any]) -> int:
    record.end_time = int(time.time() * 1000)
    record.status = "FINISHED" if outcome.ok else "FAILED"
    record.failure = outcome.as_tags() if not outcome.ok else {}
    record.metrics = tracking.read_metrics(output_dir, since=begin, warn=_warn)
    manifest = tracking.manifest_path(output)
    output.with_name(output.stem + ".params.yaml").write_text(params.yaml_text(masked), encoding="utf-8")
    tracking_error = None
    try:
        notebook.render_html(output, output.with_suffix(".html"))
    except Exception as exc:  # noqa: BLE001 - a rendering problem must not lose the run
        _warn(f"{output}: HTML rendering failed ({type(exc).__name__}: {exc}); not logged")
    try:
        if record.run_id is None:  # the kernel never started: the run may still be on its way
            tracking.apply_ids(record, started.result())
            record.params_logged = True
        tracking.save_manifest(record, manifest)
        tracker.finish(record)
        record.logged = True
    except TrackingError as exc:
        tracking_error = f"{exc}; the executed notebook is {output}; upload it later with: " \
                         f"python scripts/run_notebook.py --log-existing \"{manifest}\""
    tracking.save_manifest(record, manifest)
    print(f"executed notebook: {output}")
    if record.logged:
        print(f"MLflow run {record.run_id} ({record.status}) in experiment {record.experiment!r} "
              f"at {record.tracking_uri}")
    if not outcome.ok:
        extra = f" (also: {tracking_error})" if tracking_error else ""
        raise NotebookFailed(f"{output}: notebook failed: {outcome.summary()}{extra}")
    if tracking_error:
        raise TrackingError(tracking_error)
    print(output, flush=True)
    return 0


def _interrupted(tracker: tracking.Tracker, record: tracking.RunRecord, output: Path) -> None:
    """Ctrl-C (or a GoCD cancel that sends it): end the run as KILLED, keep the manifest; never hang here."""
    record.status, record.end_time = "KILLED", int(time.time() * 1000)
    record.failure = {"failure_kind": "interrupted"}
    if record.run_id is not None and output.is_file():
        try:
            tracker.finish(record)
            record.logged = True
        except Exception:  # noqa: BLE001 - the manifest below still allows --log-existing
            pass
    if output.is_file():
        tracking.save_manifest(record, tracking.manifest_path(output))


def _log_existing(args: Any) -> int:
    record = tracking.load_manifest(args.log_existing)
    if (args.tracking_uri or args.experiment) and not record.logged:  # log_existing refuses a logged one
        target = tracking.resolve_target(args.tracking_uri or record.tracking_uri, args.experiment or record.experiment)
        if (target.uri, target.experiment) != (record.tracking_uri, record.experiment):
            record.run_id, record.params_logged = None, False
        record.tracking_uri, record.experiment, record.artifact_location = target.uri, target.experiment, \
            target.artifact_location
        tracking.save_manifest(record, args.log_existing)
    record = tracking.log_existing(args.log_existing)
    print(f"MLflow run {record.run_id} ({record.status}) in experiment {record.experiment!r} "
          f"at {record.tracking_uri}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
