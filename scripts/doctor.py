"""Check an agent before it runs the pipeline: account, venv root, path budget, long paths, every spec's Python,
uv, git, the MLflow tracking store, free disk, console encoding.

Thin command-line edge over :mod:`mlops_kit.run.preflight`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlops_kit.core import cli  # noqa: E402

DESCRIPTION = """\
Check that this machine and account can run the pipeline, before a job finds out: one row per check, each OK,
WARN, FAIL or N/A (ERROR: the check itself broke, a bug), with what was found and, when it is not OK, the exact fix.

  account           who runs this (a Windows service account: LocalSystem, LocalService, NetworkService) and where
                    its defaults live (%ProgramData%\\mlops_kit for a service account)
  venv root         --venv-root, else ML_VENV_ROOT, else the default; writable for this account
  long paths        Windows: HKLM\\SYSTEM\\CurrentControlSet\\Control\\FileSystem LongPathsEnabled (N/A elsewhere)
  path budget       Windows: the longest path of each spec's venv under the venv root against 259 characters
  python <stage>    every spec's Python: found where (MLOPS_PYTHON_<X>_<Y>, py launcher, registry, PATH, ...), or
                    downloaded at the first build, or the fix
  uv, git           found and running (git is optional: WARN)
  mlflow            --tracking-uri, else MLFLOW_TRACKING_URI, else sqlite:///mlflow.db: a server reachable and its
                    version (/version, with MLflow's credentials); a SQLite store's schema revision; a database
                    store's port (postgresql://, mysql://, ...); credentials never shown
  free disk         on the venv root's drive (FAIL under 2 GiB, WARN under 10 GiB)
  console encoding  UTF-8, or what the agent's job log will show instead

Exit 0 when all checks pass (warnings allowed), 1 otherwise: a check failed (the agent is not ready: each FAIL row
says its fix), or the doctor itself broke (an ERROR row, or one "internal error" line with the log of its
traceback). --json tells the two apart in its "result": "ready", "not_ready" (a check failed) or "error" (the doctor
broke; a JSON document is printed even then, with "error" the one line); "exit_code" repeats the exit code.
Nothing is built, downloaded or written. Run it in the pipeline's working copy (its specs/ are checked), or name
specs with --spec.

examples (Windows cmd, on a new agent, as the agent's account):
  python scripts\\doctor.py
  python scripts\\doctor.py --spec specs --venv-root C:\\ml_venvs --tracking-uri http://mlflow.example.internal:5000
examples (PowerShell; a GoCD job's first task, or monitoring):
  python scripts\\doctor.py --json | ConvertFrom-Json | Select-Object -ExpandProperty rows
examples (Linux/macOS):
  python scripts/doctor.py --json
"""


def build_parser() -> cli.ArgParser:
    parser = cli.ArgParser(prog="doctor.py", description=DESCRIPTION)
    parser.add_argument("--spec", type=Path, action="append", default=[],
                        help="a stage spec or a folder of them (default: specs/ here); repeatable")
    parser.add_argument("--venv-root", type=Path, help="the venv root to check (default: $ML_VENV_ROOT, else the "
                                                       "default of this account)")
    parser.add_argument("--tracking-uri", metavar="URI", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, "
                                                              "else sqlite:///mlflow.db)")
    parser.add_argument("--json", action="store_true", help="print the rows as JSON (for a machine)")
    return parser


def _main(argv: list[str]) -> int:
    from mlops_kit.run import preflight as doctor

    args = build_parser().parse_args(argv)
    rows = doctor.run_checks(doctor.Request(tuple(args.spec), args.venv_root, args.tracking_uri))
    print(json.dumps(doctor.as_json(rows), indent=1) if args.json else doctor.render_table(rows), flush=True)
    return doctor.exit_code(doctor.verdict(rows))


def _document_the_failure(line: str, code: int) -> None:
    """``--json`` and the doctor itself stopped (a bug, Ctrl-C, a bad argument): a machine still gets a document,
    whose ``result`` says the doctor broke, not the agent."""
    from mlops_kit.run import preflight as doctor

    print(json.dumps(doctor.crashed_json(line, code), indent=1), flush=True)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    return cli.run(_main, args, on_failure=_document_the_failure if "--json" in args else None)


if __name__ == "__main__":
    raise SystemExit(main())
