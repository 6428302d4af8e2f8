"""What a rehearsal shows a person: the plan (``--dry-run``), the summary table, and where the results are."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..core.errors import BadInput
from ..core.redact import redact
from ..envs.spec import load_spec
from ..run.runrecord import MANIFEST_SUFFIX
from . import gocd
from .job import FAILED_STATUSES, console_log, job_store
from .schedule import RunResult
from .settings import LocalSettings, local_tracking_uri


def plan(chosen: gocd.Pipeline) -> str:
    """What would run, stage by stage (for --dry-run)."""
    lines = [f"pipeline {chosen.name} (group {chosen.group}, label {chosen.label_template})"]
    lines += [f"  note: {n}" for n in chosen.notes]
    for stage in chosen.stages:
        lines.append(f"  stage {stage.name}" + (f"  ({len(stage.jobs)} jobs in parallel)" if len(stage.jobs) > 1
                                                 else ""))
        for job in stage.jobs:
            resources = f"  [resources: {', '.join(job.resources)}]" if job.resources else ""
            timeout = f"  [timeout: {job.timeout} min without output]" if job.timeout else ""
            lines.append(f"    job {job.name}{resources}{timeout}")
            for number, task in enumerate(job.tasks, start=1):
                runif = "" if task.runif == {"passed"} else f"  (runif {', '.join(sorted(task.runif))})"
                lines.append(f"      {number}. {task.describe()}{runif}")
            for artifact in job.artifacts:
                lines.append(f"      publishes {artifact.src} -> {artifact.published_path() or artifact.dest or '.'}")
    return "\n".join(lines)


def where_results_are(chosen: gocd.Pipeline, result: RunResult, settings: LocalSettings) -> str:
    """The closing note: artifacts, working copies, MLflow, kernels."""
    tracking = redact(settings.overrides.get("MLFLOW_TRACKING_URI") or "")
    work = settings.state_dir / "work" / chosen.name / str(result.counter)
    logs = console_log(job_store(result.artifacts_root, "<stage>", "<job>"))  # pathlib: one separator throughout
    lines = ["", "results:",
             f"  artifacts (as GoCD would store them): {result.artifacts_root}",
             f"  working copies of the jobs:           {work}",
             f"  console logs of the jobs:             {logs}",
             f"  MLflow runs ({tracking}), parent run per pipeline counter, one nested run per stage:"]
    mlflow, jupyter = _toolkit_command("mlflow", settings.source), _toolkit_command("jupyter", settings.source)
    page = _runs_page(result)
    if tracking == local_tracking_uri(settings.source):
        lines.append(f"      cd {settings.source}")
        lines.append(f"      {mlflow} ui --backend-store-uri sqlite:///mlflow.db      then open "
                     f"http://127.0.0.1:5000/{page}")
    elif tracking.startswith("sqlite:"):
        lines.append(f"      {mlflow} ui --backend-store-uri {tracking}      then open http://127.0.0.1:5000/{page}")
    else:
        lines.append(f"      open {tracking.rstrip('/')}/{page}" if tracking.startswith("http") else
                     f"      open the tracking server's web UI ({tracking})")
    kernels = _kernel_names(chosen, settings.source)
    if kernels:
        lines.append(f"  Jupyter kernels of the stage venvs ({jupyter} lab, then Kernel > Change Kernel): "
                     + ", ".join(f'"{k}"' for k in kernels))
    return "\n".join(lines)


def _runs_page(result: RunResult) -> str:
    """The UI page of the experiment's runs, in MLflow 3's "Model training" view (its default view is GenAI's, which
    shows no runs): ``#/experiments/<id>/runs?workflowType=machine_learning``, the id read from a published run
    manifest of this rehearsal; without one, the experiments list."""
    for manifest in sorted(result.artifacts_root.glob(f"*/1/*/*/*{MANIFEST_SUFFIX}")):
        try:
            experiment_id = json.loads(manifest.read_text(encoding="utf-8")).get("experiment_id")
        except (OSError, ValueError):
            continue
        if experiment_id:
            return f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    return "#/experiments?workflowType=machine_learning"


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


def summary(result: RunResult) -> str:
    """The table printed at the end: one row per job (status, seconds) under a row per stage (its result and wall
    time; for parallel jobs also the sum of its jobs' times), and the failing task if any."""
    rows = [("stage", "job", "status", "seconds")]
    for stage in result.stages:
        jobs = [j for j in result.jobs if j.stage == stage.name]
        ran = stage.status != "not run"
        extra = f" (jobs in parallel; sum of jobs {sum(j.seconds for j in jobs):.1f})" if stage.parallel and ran else ""
        rows.append((stage.name, "", _shown(stage.status), f"{stage.seconds:.1f}{extra}" if ran else "-"))
        rows += [("", j.job, _shown(j.status), f"{j.seconds:.1f}" if j.status != "not run" else "-") for j in jobs]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    failed = result.first_failure()
    if failed is not None:
        lines.append(f"{failed.status}: {failed.stage}/{failed.job} at {failed.failed_task}")
    lines.append(f"total {result.seconds:.1f}s, pipeline {result.pipeline} counter {result.counter} "
                 f"(label {result.label})")
    return "\n".join(lines)


def _shown(status: str) -> str:
    """Failures in capitals, so they stand out in a long log."""
    return status.upper() if status in FAILED_STATUSES else status
