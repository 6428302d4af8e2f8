"""Replay a recorded run (a stage, or a whole pipeline) and prove its result: same notebook, parameters, inputs,
Python patch and packages, compared with the record.

Thin command-line edge over :mod:`mlops_kit.replay.replayer` (plan, rebuild, fetch, execute, compare), which reads the run
with :mod:`mlops_kit.replay.recorded` and reports with :mod:`mlops_kit.replay.verdict`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlops_kit.core import cli  # noqa: E402
from mlops_kit.replay import replayer  # noqa: E402

DESCRIPTION = """\
Replay a run that run_notebook.py recorded in MLflow, and say whether it reproduces: "can you produce this number
again?" answered from the run id alone.

RUN_ID is a stage run (one notebook) or a pipeline run (the parent of a GoCD pipeline instance's stage runs: they
are replayed in the order they ran, each stage's inputs taken from its upstream's replay). For each stage:
  1. everything is checked before anything is built or run: masked (secret) parameters need -p NAME VALUE (exit 2
     naming them); the recorded Python version, patch included: installed, else one uv installed earlier into the
     toolkit's folder of Pythons, else downloaded there through uv (exactly that patch; --python-downloads never or
     MLOPS_PYTHON_DOWNLOADS=never turns that off: exit 3 with the install hint; --install-python uses the
     platform's installer instead);
  2. inputs: each file or folder the run's parameters named is taken from the run that produced it (downloaded
     from its outputs/) or from its recorded path, and its sha256 checked; a missing or changed file is named and
     the stage is not run (exit 8);
  3. environment: a venv under --venv-root (default: <venv root>/replay; stage venvs and kernels are not touched)
     from the recorded lock (exact hashes) or, without one, the recorded pip freeze; never from today's spec; a
     second replay reuses it;
  4. the recorded notebook (as given, before parameters were injected) runs with the recorded parameters through
     run_notebook's own machinery, logged as a new MLflow run tagged mlops_kit.replay_of=RUN_ID (role replay;
     nested under a replay parent run for a pipeline);
  5. the table: each metric (recorded, replayed, difference), each output file (same sha256 or not), the
     environment (freeze identical or the packages that differ). It is printed and logged to the replay run as
     replay/report.json and replay/report.txt, with the tag mlops_kit.replay_verdict.
Exit 0 when every metric matches (within --rtol, default exact; NaN equals NaN), every output file and input has
its recorded sha256 and the freeze is identical; exit 8 (not reproduced) otherwise, naming the first difference;
exit 5 when the replayed notebook fails (the report is still printed and logged).

Runs recorded before lineage records existed: the notebook comes from git show <commit>:<notebook> in --repo (else
from the executed notebook, injected parameters removed), inputs are not verified (the report says so); what
cannot be had is listed, exit 2.

Tracking store: --tracking-uri, else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db in the current folder (as
run_notebook.py). Replay runs go to the run's experiment unless --experiment. Working folder: --workdir, default
replay/<RUN_ID> in the current folder (emptied by the next replay into it): downloads, each stage's inputs,
executed notebook and output folder.

examples (Windows cmd):
  python scripts\\replay_run.py 3f1a62dc87146dc7b11655bcbc2249b0 --tracking-uri http://mlflow:5000
  python scripts\\replay_run.py 8f3960568d7b438cb8f737faa399ac9d -p db_password %DB_PASSWORD% --rtol 1e-9
  python scripts\\replay_run.py %PIPELINE_RUN% --workdir D:\\audits\\churn-17 --install-python

examples (PowerShell):
  $env:MLFLOW_TRACKING_URI = "http://mlflow:5000"; python scripts\\replay_run.py $runId
  python scripts\\replay_run.py $pipelineRun --experiment audits --venv-root D:\\replay-venvs `
      -p api_token $env:API_TOKEN -p raw_file D:\\archive\\raw.csv
"""


def build_parser() -> cli.ArgParser:
    p = cli.ArgParser(prog="replay_run.py", description=DESCRIPTION)
    p.add_argument("run_id", metavar="RUN_ID", help="the MLflow run to replay (a stage run or a pipeline run)")
    p.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                                                          "else sqlite:///mlflow.db)")
    p.add_argument("--experiment", metavar="NAME", help="log the replay runs here (default: the run's experiment)")
    p.add_argument("--venv-root", type=Path, metavar="DIR",
                   help="where replay venvs are built (default: the folder replay in the venv root)")
    p.add_argument("--workdir", type=Path, metavar="DIR", help="the replay's working folder (default: "
                                                               "replay/<RUN_ID> in the current folder)")
    p.add_argument("-p", "--param", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                   help="a value the record masked (VALUE read as YAML), or a new place for an input file or "
                        "folder (its sha256 is still checked); repeatable")
    p.add_argument("--rtol", type=float, default=0.0, metavar="R",
                   help="relative tolerance for metrics: |replayed - recorded| <= R * |recorded| (default 0: exact)")
    p.add_argument("--install-python", action="store_true",
                   help="install the recorded Python version when it is missing (as create_venv.py does)")
    p.add_argument("--python-downloads", choices=("auto", "never"), metavar="{auto,never}",
                   help="when the recorded Python patch is not installed: download it through uv (auto, the default) "
                        "or stop with exit 3 (never); default: $MLOPS_PYTHON_DOWNLOADS, else uv's UV_PYTHON_DOWNLOADS")
    p.add_argument("--python", type=Path, metavar="PATH",
                   help="the interpreter to use (must be exactly the recorded version)")
    p.add_argument("--repo", type=Path, metavar="DIR", help="a git checkout for runs recorded before lineage "
                                                            "(git show <commit>:<notebook>; default: the current one)")
    p.add_argument("--cwd", type=Path, metavar="DIR",
                   help="the kernel's working folder (default: the recorded one when it exists, else the stage's "
                        "folder in --workdir)")
    p.add_argument("--cell-timeout", type=float, metavar="S", help="fail a cell running longer (default: no limit)")
    p.add_argument("--log-output", action="store_true", help="stream cell output to the console")
    return p


def request_from(args: argparse.Namespace) -> replayer.ReplayRequest:
    return replayer.ReplayRequest(
        run_id=args.run_id.strip(), tracking_uri=args.tracking_uri, experiment=args.experiment,
        venv_root=args.venv_root, workdir=args.workdir, overrides=tuple((n, v) for n, v in args.param),
        rtol=args.rtol, install_python=args.install_python, python_downloads=args.python_downloads, python=args.python, repo=args.repo, cwd=args.cwd,
        log_output=args.log_output, cell_timeout=args.cell_timeout,
    )


def _main(argv: list[str]) -> int:
    return replayer.replay(request_from(build_parser().parse_args(argv)))


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
