"""Rehearse a GoCD pipeline on this machine: the same tasks GoCD would run, in the same order.

Thin CLI over :mod:`mlops_kit.gocd` (reading the XML) and :mod:`mlops_kit.pipeline` (running it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mlops_kit import cli, envs, gocd, pipeline, proc  # noqa: E402
from mlops_kit.errors import BadInput, PipelineFailed  # noqa: E402
from mlops_kit.spec import load_spec  # noqa: E402
from mlops_kit.tracking import hide_password  # noqa: E402

DESCRIPTION = """\
Run the pipeline defined in a GoCD config XML locally, exactly as GoCD would: stages in order (stopping after a
failed one), the jobs of each stage, their tasks in order with GoCD's runif rules, the environment variables of
the pipeline/stage/job levels, the GO_* variables GoCD provides (GO_PIPELINE_COUNTER goes up by one per local run),
and artifacts published by one stage and fetched by the next through a local artifact store.

By default each job runs in its OWN fresh copy of the repository (git's tracked and untracked-but-not-ignored
files, uncommitted edits included), as if on a different agent: a later stage only sees what the XML publishes
and fetches. --shared-workdir runs all jobs in one folder instead.

An <exec command="python"> finds this toolkit's Python: its folder is put first on the jobs' PATH, as the
operator does on a GoCD agent. Values in the XML meant for the GoCD agents are replaced for local runs:
  MLFLOW_TRACKING_URI  --tracking-uri, else $MLFLOW_TRACKING_URI, else sqlite:///<repo>/mlflow.db
  ML_VENV_ROOT         --venv-root, else $ML_VENV_ROOT, else the toolkit's per-user default
  (any variable)       --env NAME=VALUE
Everything a run creates lives under <repo>/.pipeline/ (working copies, artifacts, counters); delete it freely.
This is a rehearsal tool, not a scheduler: GoCD remains the engine. Jobs of a stage run one after the other (GoCD
may run them in parallel); <resources> are only shown. Refused before anything runs, with the element and line:
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
    parser.add_argument("--dry-run", action="store_true", help="check the XML and print the plan; run nothing")
    return parser


def main(argv: list[str]) -> int:
    _safe_console()
    args = build_parser().parse_args(argv)
    source, config = _locate(args.source, args.config)
    chosen = gocd.select_pipeline(gocd.load_config(config), args.pipeline)
    if args.dry_run:
        print(plan(chosen))
        return 0
    settings = pipeline.LocalSettings(
        source=source, state_dir=(args.state_dir or source / ".pipeline").resolve(),
        shared_workdir=args.shared_workdir, overrides=_overrides(args, source),
    )
    _say(f"[local] config {config}\n[local] repository {source}\n")
    result = pipeline.run_pipeline(chosen, settings, echo=_say)
    print("\n" + pipeline.summary(result), flush=True)
    print(where_results_are(chosen, result, settings), flush=True)
    failed = result.first_failure()
    if failed is not None:
        raise PipelineFailed(f"pipeline {result.pipeline} #{result.counter} failed in {failed.stage}/{failed.job} "
                             f"at {failed.failed_task}; results of the stages before it are kept in "
                             f"{result.artifacts_root}")
    return 0


def _safe_console() -> None:
    """Never die on a character the console code page cannot show (Windows cp1252 consoles)."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")


def _say(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _locate(source: Path | None, config: Path | None) -> tuple[Path, Path]:
    """(repository, config): explicit values first, then the git work tree, then the current folder."""
    if source is None:
        start = config.resolve().parent if config is not None else Path.cwd()
        source = _git_toplevel(start) or Path.cwd()
    source = source.resolve()
    if not source.is_dir():
        raise BadInput(f"--source {source}: not a folder")
    config = (config or source / "gocd" / "pipeline_config.xml").resolve()
    return source, config


def _git_toplevel(start: Path) -> Path | None:
    try:
        result = proc.run(["git", "-C", start, "rev-parse", "--show-toplevel"], check=False, timeout=30)
    except proc.CommandError:
        return None
    return Path(result.stdout.strip()) if result.returncode == 0 and result.stdout.strip() else None


def _overrides(args: argparse.Namespace, source: Path) -> dict[str, str | None]:
    """Local values replacing the XML's agent-side ones (None = drop, so the tools use their own default)."""
    tracking = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri(source)
    explicit_root = args.venv_root or os.environ.get("ML_VENV_ROOT", "").strip()
    overrides: dict[str, str | None] = {
        "MLFLOW_TRACKING_URI": tracking,
        "ML_VENV_ROOT": str(envs.venv_root(explicit_root)) if explicit_root else None,
    }
    for item in args.env:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise BadInput(f"--env {item!r}: expected NAME=VALUE")
        overrides[name.strip()] = value
    return overrides


def local_tracking_uri(source: Path) -> str:
    """The embedded default: a SQLite store in the repository (absolute, so every working copy shares it)."""
    return f"sqlite:///{(source / 'mlflow.db').as_posix()}"


def plan(chosen: gocd.Pipeline) -> str:
    """What would run, stage by stage (for --dry-run)."""
    lines = [f"pipeline {chosen.name} (group {chosen.group}, label {chosen.label_template})"]
    lines += [f"  note: {n}" for n in chosen.notes]
    for stage in chosen.stages:
        lines.append(f"  stage {stage.name}")
        for job in stage.jobs:
            resources = f"  [resources: {', '.join(job.resources)}]" if job.resources else ""
            lines.append(f"    job {job.name}{resources}")
            for number, task in enumerate(job.tasks, start=1):
                runif = "" if task.runif == {"passed"} else f"  (runif {', '.join(sorted(task.runif))})"
                lines.append(f"      {number}. {task.describe()}{runif}")
            for artifact in job.artifacts:
                lines.append(f"      publishes {artifact.src} -> {artifact.published_path() or artifact.dest or '.'}")
    return "\n".join(lines)


def where_results_are(chosen: gocd.Pipeline, result: pipeline.RunResult, settings: pipeline.LocalSettings) -> str:
    """The closing note: artifacts, working copies, MLflow, kernels."""
    tracking = hide_password(settings.overrides.get("MLFLOW_TRACKING_URI") or "")
    work = settings.state_dir / "work" / chosen.name / str(result.counter)
    lines = ["", "results:",
             f"  artifacts (as GoCD would store them): {result.artifacts_root}",
             f"  working copies of the jobs:           {work}",
             f"  MLflow runs ({tracking}), parent run per pipeline counter, one nested run per stage:"]
    mlflow, jupyter = _toolkit_command("mlflow", settings.source), _toolkit_command("jupyter", settings.source)
    if tracking == local_tracking_uri(settings.source):
        lines.append(f"      cd {settings.source}")
        lines.append(f"      {mlflow} ui --backend-store-uri sqlite:///mlflow.db      then open http://127.0.0.1:5000")
    elif tracking.startswith("sqlite:"):
        lines.append(f"      {mlflow} ui --backend-store-uri {tracking}      then open http://127.0.0.1:5000")
    else:
        lines.append(f"      open the tracking server's web UI ({tracking})")
    kernels = _kernel_names(chosen, settings.source)
    if kernels:
        lines.append(f"  Jupyter kernels of the stage venvs ({jupyter} lab, then Kernel > Change Kernel): "
                     + ", ".join(f'"{k}"' for k in kernels))
    return "\n".join(lines)


def _toolkit_command(name: str, source: Path) -> str:
    """``mlflow`` / ``jupyter`` as installed beside this toolkit's Python (requirements.txt), the way to type it
    from the repository (``.venv\\Scripts\\mlflow``); the bare name if it is not there."""
    folder = Path(sys.executable).parent
    found = next((p for p in (folder / name, folder / f"{name}.exe") if p.is_file()), None)
    if found is None:
        return name
    try:
        return str(found.relative_to(source))
    except ValueError:
        return str(found)


def _kernel_names(chosen: gocd.Pipeline, source: Path) -> list[str]:
    """Display names of the stage kernels, read from the specs the create_venv tasks name."""
    names = []
    for task in (t for s in chosen.stages for j in s.jobs for t in j.tasks if isinstance(t, gocd.ExecTask)):
        if any(a.endswith("create_venv.py") for a in task.args) and "--spec" in task.args:
            index = task.args.index("--spec") + 1
            try:
                names.append(load_spec(source / task.args[index]).kernel_display_name)
            except (IndexError, BadInput):
                continue
    return names


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
