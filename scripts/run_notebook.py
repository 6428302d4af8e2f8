"""Execute a stage notebook in its venv with papermill and record an auditable MLflow run.

Thin command-line edge over :mod:`mlops_kit.run.stage_run` (which checks the inputs, executes via
:mod:`mlops_kit.run.notebook` and logs via :mod:`mlops_kit.run.tracking`) and, for ``--log-existing``,
:mod:`mlops_kit.run.upload`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlops_kit.core import cli  # noqa: E402

if TYPE_CHECKING:
    from mlops_kit.run import stage_run, upload

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
can also call mlflow itself (log_metric, log_param, set_tag, log_artifact, log_model, ...) with any mlflow or
mlflow-skinny in its venv: MLFLOW_RUN_ID, MLFLOW_TRACKING_URI and MLFLOW_EXPERIMENT_ID point its kernel at this
run. A tracking server is used directly; a local store (SQLite, file store) is served to the kernel over HTTP on
127.0.0.1 while the notebook runs (MLflow's own server code, started only when a code cell mentions mlflow; a
notebook that logs only from a module it imports needs the word in a cell, a comment is enough).

Written next to --output: <name>.html (the executed notebook as HTML), <name>.params.yaml (the parameters used,
secret-looking values masked), <name>.mlops_run.json (the run manifest) and, when a local store was served,
<name>.mlflow_server.log. The executed notebook is written even
when a cell fails, the kernel dies or a cell times out (exit 5; the run is marked FAILED with the cell and error).

MLflow: tracking URI --tracking-uri, else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the current folder
(artifacts in mlruns/ next to it; view with: mlflow ui --backend-store-uri sqlite:///mlflow.db). Experiment
--experiment, else MLFLOW_EXPERIMENT_NAME, else GO_PIPELINE_NAME, else "mlops_kit". The run is named after the
stage; params: stage, python_version, venv_name, git_commit, git_branch, git_dirty, notebook and every notebook
parameter (nested keys as a.b; values of names containing password, token, secret, api_key, credential, ... are
logged as ***). Tags: mlflow.source.*, and GO_PIPELINE_NAME, GO_PIPELINE_COUNTER, GO_PIPELINE_LABEL, GO_STAGE_NAME,
GO_STAGE_COUNTER, GO_JOB_NAME, GO_TRIGGER_USER, GO_SERVER_URL, GO_REVISION* when set (no other variables).
Stages with the same GO_PIPELINE_NAME and GO_PIPELINE_COUNTER are nested under one parent run.
Artifacts: the executed notebook and its HTML, source/ (the notebook as given), environment/ (spec.yaml,
pip_freeze.txt, env.json of the venv, its lock if any), params/ (the params file and the parameters used), outputs/
(the output folder) and lineage/lineage.json: the inputs (every parameter naming an existing file or folder outside
the output folder, e.g. input_dir) with size and sha256 and the earlier stage run of the same pipeline instance
that produced them, the outputs' sha256, the masked names (also the run's MLflow dataset inputs). Such a run can be
replayed and checked with scripts/replay_run.py RUN_ID.

Reuse (--reuse, or reuse: true in the --spec file; MLOPS_REUSE=never turns it off): when an earlier FINISHED run
of the experiment had the same reuse key (the notebook's code cells, the parameters without output_dir and secrets,
the inputs' contents, the venv's lock or freeze, the Python version, the OS and architecture) and still has all its
artifacts, its executed notebook, HTML and outputs are copied into place and logged as a new run tagged
mlops_kit.reused_from; otherwise one line says what differs and the notebook runs. Do not use it for a notebook
that reads data no parameter names (a database, a URL, the clock).

If the tracking store cannot be reached before the notebook starts, nothing is executed (exit 6). If it fails
after, the executed notebook and outputs stay on disk and the run can be uploaded later with
  python scripts/run_notebook.py --log-existing <name>.mlops_run.json
Ctrl-C (exit 130) and SIGTERM (exit 143, a GoCD cancel) end the run as KILLED, the notebook executed so far
written. The manifest is written as soon as the run exists: if the runner is killed outright, --log-existing (or
the next run of the same --output) closes that run as KILLED. Two runs of one --output at once: the second is
refused. --output-dir may not contain the tracking store, its mlruns/ folder, the venv or the executed notebook.

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
                       help="upload an already executed run from its <name>.mlops_run.json, then exit (the "
                            "manifest keeps no password: give --tracking-uri with it again, or set "
                            "MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD)")
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
    p.add_argument("--cell-timeout", type=float, metavar="S",
                   help="fail a cell running longer (whole seconds, rounded up; default: no limit)")
    p.add_argument("--start-timeout", type=float, default=60, metavar="S",
                   help="seconds to wait for the kernel (and a served local MLflow store) to start "
                        "(default: 60)")
    p.add_argument("--cwd", type=Path, metavar="DIR", help="the kernel's working folder (default: the current one)")
    p.add_argument("--reuse", action="store_true",
                   help="copy an earlier FINISHED run with the same notebook code, parameters, input contents, locked "
                        "environment and Python instead of executing (also: reuse: true in the --spec file; "
                        "MLOPS_REUSE=never turns it off everywhere)")
    return p


def request_from(args: argparse.Namespace) -> stage_run.NotebookRunRequest | upload.UploadRequest:
    """The parsed options as a typed request, one type per mode: the modules never see argparse."""
    from mlops_kit.core.errors import BadInput  # here, not at the top: the tracking worker re-imports this script
    from mlops_kit.run import stage_run, upload

    if args.log_existing is not None:
        return upload.UploadRequest(args.log_existing, tracking_uri=args.tracking_uri, experiment=args.experiment)
    if args.venv is None and args.spec is None:
        raise BadInput(stage_run.NO_VENV)
    if args.notebook is None or args.output is None:
        raise BadInput("run_notebook.py: --notebook and --output are required (see --help)")
    return stage_run.NotebookRunRequest(
        venv=args.venv, spec=args.spec, venv_root=args.venv_root, notebook=args.notebook, output=args.output,
        params_file=args.params_file, param_overrides=tuple((name, value) for name, value in args.param),
        output_dir=args.output_dir, stage=args.stage, tracking_uri=args.tracking_uri, experiment=args.experiment,
        log_output=args.log_output, no_progress=args.no_progress, cell_timeout=args.cell_timeout,
        start_timeout=args.start_timeout, cwd=args.cwd, reuse=args.reuse,
    )


def _main(argv: list[str]) -> int:
    from mlops_kit.run import stage_run, upload

    request = request_from(build_parser().parse_args(argv))
    if isinstance(request, upload.UploadRequest):
        upload.log_existing(request)
    else:
        stage_run.run(request)
    return 0  # a failure raised its own error (one line and its exit code, at cli.run)


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
