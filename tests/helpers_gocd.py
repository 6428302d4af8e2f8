"""GoCD config XML builders shared by the rehearsal tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
import textwrap
import uuid
from pathlib import Path
from typing import Iterator

import psutil

from helpers import REPO_ROOT, run_script
from mlops_kit.rehearsal import gocd, gocd_reader

EXAMPLE = REPO_ROOT / "gocd" / "pipeline_config.xml"


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


def parse_xml(xml: str | bytes) -> gocd.Pipeline:
    return gocd_reader.parse_config(xml, source=Path("cfg.xml"))[0]


def example_pipeline() -> gocd.Pipeline:
    return gocd.select_pipeline(gocd_reader.load_config(EXAMPLE), None)


def position_of(xml: str, marker: str) -> tuple[int, int]:
    """(line, column), 1-based, of the first ``marker`` in ``xml``: where the messages must point."""
    before = xml[: xml.index(marker)]
    return before.count("\n") + 1, len(before) - (before.rfind("\n") + 1) + 1


def refused(xml: str, marker: str) -> str:
    """The one-line refusal of config ``xml``; it must point at the element that starts with ``marker``."""
    import pytest

    from mlops_kit.core.errors import BadInput

    with pytest.raises(BadInput) as info:
        parse_xml(xml)
    message = str(info.value)
    line, column = position_of(xml, marker)
    assert message.startswith(f"cfg.xml: line {line}, column {column}: <"), (message, line, column)
    assert "\n" not in message
    return message


def rehearse(tmp_path: Path, xml: str | bytes, *args: str, files: dict[str, str] | None = None,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``run_pipeline.py`` on ``xml`` in a small repository ``<tmp_path>/my repo`` (a space, as in "C:\\Users\\Jane
    Doe") holding ``files``: the real tool, end to end."""
    repo = tmp_path / "my repo"
    repo.mkdir(exist_ok=True)
    (repo / "README.txt").write_text("material", encoding="utf-8")
    if isinstance(xml, bytes):
        (repo / "cfg.xml").write_bytes(xml)  # as the file says (its XML declaration)
    else:
        (repo / "cfg.xml").write_text(xml, encoding="utf-8")
    for name, text in (files or {}).items():
        (repo / name).write_text(text, encoding="utf-8")
    return run_script("run_pipeline.py", "--config", str(repo / "cfg.xml"), "--source", str(repo), *args,
                      cwd=tmp_path, timeout=300, env=env)


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


# The case of a daemonizing task, exactly as reported: its `sleep 1005` detaches (new session, parent gone).
DAEMONIZING_TASK = 'sh -c \'echo s; (setsid sh -c "sleep 1005 &"); sleep 1000\''
TEST_TAG = "MLOPS_KIT_TEST_TAG"


def daemonizing_exec(command: str = 'echo s; (setsid sh -c "sleep 1005 &"); sleep 1000') -> str:
    """An <exec> running ``sh -c <command>`` (by default :data:`DAEMONIZING_TASK`'s)."""
    escaped = command.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return f'<exec command="sh"><arg>-c</arg><arg>{escaped}</arg></exec>'


def tagged_processes(tag: str, cmdline: list[str] | None = None) -> list[psutil.Process]:
    """Live processes (not zombies) of this user whose environment carries ``TEST_TAG=tag`` (and, if given, whose
    command line is ``cmdline``): what a test started, whatever became of its parents."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        with contextlib.suppress(psutil.Error):
            if cmdline is not None and process.info["cmdline"] != cmdline:
                continue
            if process.environ().get(TEST_TAG) == tag and process.status() != psutil.STATUS_ZOMBIE:
                found.append(process)
    return found


@contextlib.contextmanager
def nothing_left_running() -> Iterator[dict[str, str]]:
    """An environment whose every descendant carries a tag of its own; whatever carries it when the block ends is
    killed, so a failing test never leaves a process behind."""
    tag = uuid.uuid4().hex
    try:
        yield {**os.environ, TEST_TAG: tag}
    finally:
        for process in tagged_processes(tag):
            with contextlib.suppress(psutil.Error):
                process.kill()
