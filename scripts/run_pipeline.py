"""Rehearse a GoCD pipeline on this machine: the same tasks GoCD would run, in the same order.

Thin CLI over :mod:`mlops_kit.rehearsal.gocd_reader` (reading the XML), :mod:`mlops_kit.rehearsal.schedule` (running
it) and :mod:`mlops_kit.rehearsal.report` (what it prints).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlops_kit.core import cli, console  # noqa: E402
from mlops_kit.core.errors import BadInput, PipelineFailed, Terminated  # noqa: E402
from mlops_kit.rehearsal import gocd, gocd_reader, report, schedule, settings  # noqa: E402

DESCRIPTION = """\
Run the pipeline defined in a GoCD config XML locally, exactly as GoCD would: stages in order (stopping after a
failed one), the jobs of each stage IN PARALLEL (the stage fails once all of them finished if one failed), their
tasks in order with GoCD's runif rules, the environment variables of the pipeline/stage/job levels, the GO_*
variables GoCD provides (GO_PIPELINE_COUNTER goes up by one per local run), and artifacts published by one stage and
fetched by the next through a local artifact store. Each job's output is prefixed [stage/job] and also kept in its
console log (<state>/artifacts/<pipeline>/<counter>/<stage>/1/<job>/cruise-output/console.log, where GoCD keeps it).

Before anything runs, the XML is checked as GoCD's server checks a config it loads: first against GoCD's own schema
(cruise-config.xsd, version 139: an unknown or misspelt attribute or element, a value of the wrong shape is refused
with its line and column), then against the server's rules (names unique case-insensitively, what a <fetchartifact>
may name, paths, job timeout values), with GoCD's messages. The file is decoded as its XML declaration says.

By default each job runs in its OWN fresh copy of the repository (git's tracked and untracked-but-not-ignored
files, uncommitted edits included), as if on a different agent: a later stage only sees what the XML publishes
and fetches. --shared-workdir runs all jobs in one folder instead (as on one agent: the jobs of a stage then run
one after the other).

Job timeout, as on GoCD: a job whose console shows nothing for <job timeout="N"> minutes (else --job-timeout, the
server-wide default) is cancelled: its running task's whole process tree is stopped (kernels included, and on Linux
what its tasks daemonized), no further task runs, nothing is published; the job shows as "timed out" and its stage
as cancelled. Secure variables' values are masked in every console line and console log.

An <exec command="python"> finds this toolkit's Python: its folder is put first on the jobs' PATH, as the
operator does on a GoCD agent. Values in the XML meant for the GoCD agents are replaced for local runs:
  MLFLOW_TRACKING_URI  --tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///<repo>/mlflow.db
  ML_VENV_ROOT         --venv-root, else $ML_VENV_ROOT, else the toolkit's per-user default
  (any variable)       --env NAME=VALUE
Everything a run creates lives under <repo>/.pipeline/ (working copies, artifacts, counters); delete it freely.
The newest --keep runs of each pipeline are kept, older ones pruned (only folders this tool created; never a run in
progress, this one's or a concurrent rehearsal's).
This is a rehearsal tool, not a scheduler: GoCD remains the engine; <resources> are only shown. Refused before
anything runs, with the element and line:
<ant>/<nant>/<rake>/plugin tasks, <oncancel>, external artifacts, a manual <approval> after the first stage,
templates, runInstanceCount, elastic agents, materials other than one <git> (which the local repository stands
in for). A <timer> is ignored (a local run is a manual trigger); #{param} parameters are substituted.

examples (Windows cmd / PowerShell; on Linux/macOS use .venv/bin/python and forward slashes):
  .venv\\Scripts\\python scripts\\run_pipeline.py
  .venv\\Scripts\\python scripts\\run_pipeline.py --dry-run
  .venv\\Scripts\\python scripts\\run_pipeline.py --tracking-uri http://mlflow.example.internal:5000
  .venv\\Scripts\\python scripts\\run_pipeline.py --config gocd\\pipeline_config.xml --venv-root "D:\\ml venvs"
"""


def build_parser() -> cli.ArgParser:
    parser = cli.ArgParser(prog="run_pipeline.py", description=DESCRIPTION)
    parser.add_argument("--config", type=Path, help="GoCD config XML (default: <repo>/gocd/pipeline_config.xml)")
    parser.add_argument("--source", type=Path, help="the repository standing in for the git material (default: "
                        "the git work tree holding --config, else the current folder)")
    parser.add_argument("--pipeline", help="pipeline to run when the XML defines several")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI for this run (see above)")
    parser.add_argument("--venv-root", type=Path, help="where stage venvs live for this run (see above)")
    parser.add_argument("--env", action="append", default=[], metavar="NAME=VALUE",
                        help="override an environment variable of the XML for this run (repeatable)")
    parser.add_argument("--shared-workdir", action="store_true",
                        help="run all jobs in one working folder instead of one fresh copy per job")
    parser.add_argument("--state-dir", type=Path, help="where runs are kept (default: <repo>/.pipeline)")
    parser.add_argument("--job-timeout", type=_minutes, default=0.0, metavar="MINUTES",
                        help="cancel a job after this many minutes without console output, for jobs whose XML has "
                             "no timeout (GoCD's server-wide default; fractions allowed; 0 or 'never': no limit, "
                             "the default)")
    parser.add_argument("--cancel-grace", type=_seconds, default=10.0, metavar="SECONDS",
                        help="a cancelled job's processes get SIGTERM, then this long to end before they are killed "
                             "(default: 10); after Ctrl-C, also how long running tasks get to end on their own")
    parser.add_argument("--keep", type=_keep, default=5, metavar="N",
                        help="keep the newest N runs' working copies and artifacts per pipeline, prune older ones "
                             "(default: 5; 'all': never prune)")
    parser.add_argument("--dry-run", action="store_true", help="check the XML and print the plan; run nothing")
    return parser


def _minutes(text: str) -> float:
    if text.strip().lower() == "never":
        return 0.0
    try:
        value = float(text)
    except ValueError:
        raise BadInput(f"--job-timeout {text!r}: expected a number of minutes, or 'never'") from None
    if not math.isfinite(value) or value < 0:
        raise BadInput(f"--job-timeout {text!r}: expected a finite number of minutes >= 0, or 'never'")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not math.isfinite(value) or value < 0:
        raise BadInput(f"--cancel-grace {text!r}: expected a finite number of seconds >= 0")
    return value


def _keep(text: str) -> int | None:
    if text.strip().lower() == "all":
        return None
    if not text.strip().isdigit() or int(text) < 1:
        raise BadInput(f"--keep {text!r}: expected a number of runs >= 1, or 'all'")
    return int(text)


def _main(argv: list[str]) -> int:
    console.tolerate_unprintable()
    args = build_parser().parse_args(argv)
    source, config = settings.locate(args.source, args.config)
    chosen = gocd.select_pipeline(gocd_reader.load_config(config), args.pipeline)
    if args.dry_run:
        print(report.plan(chosen))
        return 0
    overrides = settings.local_overrides(source, tracking_uri=args.tracking_uri, venv_root=args.venv_root,
                                         env=args.env)
    local = settings.LocalSettings(source=source, state_dir=(args.state_dir or source / ".pipeline").resolve(),
                                   shared_workdir=args.shared_workdir, overrides=overrides,
                                   job_timeout=args.job_timeout, kill_grace=args.cancel_grace, keep=args.keep)
    console.write(f"[local] config {config}\n[local] repository {source}\n")
    result = schedule.run_pipeline(chosen, local, echo=console.write)
    print("\n" + report.summary(result), flush=True)
    print(report.where_results_are(chosen, result, local), flush=True)
    if result.interrupted:  # SIGTERM is errors.Terminated (cli.run installs it), exit 143; Ctrl-C exit 130
        raise Terminated() if result.terminated else KeyboardInterrupt()
    failed = result.first_failure()
    if failed is not None:
        verb = "failed" if failed.status == "failed" else failed.status
        raise PipelineFailed(f"pipeline {result.pipeline} #{result.counter}: {failed.stage}/{failed.job} {verb} "
                             f"at {failed.failed_task}; results of the stages before it are kept in "
                             f"{result.artifacts_root}")
    return 0


def main(argv: list[str] | None = None) -> int:
    return cli.run(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
