"""GoCD config XML builders shared by the rehearsal tests."""

from __future__ import annotations

import textwrap
from pathlib import Path

from helpers import REPO_ROOT
from mlops_kit.rehearsal import gocd

EXAMPLE = REPO_ROOT / "gocd" / "pipeline_config.xml"


XSD = REPO_ROOT / "tests" / "data" / "cruise-config.xsd"  # GoCD's official schema, schemaVersion 139 (Apache-2.0)


def cruise_xml(stages: str, *, pipeline_extra: str = "", name: str = "demo") -> str:
    return textwrap.dedent(f"""\
        <?xml version="1.0" encoding="utf-8"?>
        <cruise schemaVersion="139">
          <pipelines group="g">
            <pipeline name="{name}">
              {pipeline_extra}
              <materials><git url="https://example.invalid/repo.git" materialName="repo" /></materials>
              {stages}
            </pipeline>
          </pipelines>
        </cruise>
        """)


def stage_xml(name: str, tasks: str, *, artifacts: str = "", job: str | None = None, extra: str = "") -> str:
    return (f'<stage name="{name}">{extra}<jobs><job name="{job or name}"><tasks>{tasks}</tasks>'
            f'<artifacts>{artifacts}</artifacts></job></jobs></stage>')


def job_xml(name: str, tasks: str, *, artifacts: str = "", attrs: str = "") -> str:
    return f'<job name="{name}"{attrs}><tasks>{tasks}</tasks><artifacts>{artifacts}</artifacts></job>'


def stage_jobs_xml(name: str, *jobs: str, extra: str = "") -> str:
    """A stage with several jobs (see :func:`job_xml`): GoCD runs them in parallel."""
    return f'<stage name="{name}">{extra}<jobs>{"".join(jobs)}</jobs></stage>'


# A task shaped like a notebook run: it starts a child in a NEW session (as jupyter_client starts a kernel), which
# starts a grandchild; each writes its pid to <folder>/<role>.pid and sleeps without a word (600 s).
PROCESS_TREE = """\
import os, subprocess, sys, time
from pathlib import Path
out, role = Path(sys.argv[1]), sys.argv[2]
out.mkdir(parents=True, exist_ok=True)
(out / f"{role}.pid").write_text(str(os.getpid()))
child = {"task": "kernel", "kernel": "grandchild"}.get(role)
if child:
    subprocess.Popen([sys.executable, __file__, str(out), child], start_new_session=(role == "task"))
print(role, "up", flush=True)
time.sleep(600)
"""
TREE_ROLES = ("task", "kernel", "grandchild")


def py_task(code: str, runif: str = "") -> str:
    """An exec task running ``python -c code`` (``python`` found on the job's PATH, as on an agent)."""
    code = code.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    runifs = "".join(f'<runif status="{s}" />' for s in runif.split()) if runif else ""
    return f'<exec command="python"><arg>-c</arg><arg>{code}</arg>{runifs}</exec>'


def parse_xml(xml: str) -> gocd.Pipeline:
    return gocd.parse_config(xml, source=Path("cfg.xml"))[0]


def example_pipeline() -> gocd.Pipeline:
    return gocd.select_pipeline(gocd.load_config(EXAMPLE), None)


def exec_tasks(job: gocd.Job) -> list[gocd.ExecTask]:
    return [t for t in job.tasks if isinstance(t, gocd.ExecTask)]


def option_of(task: gocd.ExecTask, name: str) -> str:
    return task.args[task.args.index(name) + 1]


def param_of(task: gocd.ExecTask, name: str) -> str | None:
    for i, arg in enumerate(task.args[:-2]):
        if arg == "-p" and task.args[i + 1] == name:
            return task.args[i + 2]
    return None


WRITE_ENV = ("import json, os, sys; from pathlib import Path; Path('out').mkdir(exist_ok=True); "
              "Path('out/env.json').write_text(json.dumps({k: v for k, v in os.environ.items() "
              "if k.startswith(('GO_', 'MLFLOW_', 'ML_VENV', 'LEVEL'))} | {'prefix': sys.prefix}))")


def write_tree(root: Path, files: list[str]) -> None:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(name, encoding="utf-8")
