"""GoCD's server config rules: what GoCD's server checks when it loads a config, after its schema (which
:mod:`~mlops_kit.rehearsal.gocd_xml` applies), with GoCD's own messages.

From GoCD's source (``PipelineConfig``, ``StageConfig``, ``JobConfig``, ``AbstractFetchTask``, ``FetchTask``,
``ExecTask``, ``EnvironmentVariableConfig``, ``BuiltinArtifactConfig``, ``ScmMaterialConfig``,
``FilenameUtil``...): names unique case-insensitively (pipelines, stages, jobs, variables per level: the schema's
own uniqueness is case-sensitive), variable names, job ``timeout`` values, the label template's tokens, what a
``<fetchartifact>`` may name (this pipeline, an earlier stage, a job that exists there), and paths that must stay
inside the working directory (fetch ``src``/``dest``, exec ``workingdir``, material ``dest``).

What GoCD leaves to run time stays a run-time failure in the rehearsal too (an artifact ``src`` matching nothing, a
fetched path the other job did not publish: a note is printed up front). One rule is stricter than GoCD, and says
so in its message: a job ``timeout`` that is not a whole number of minutes (GoCD's config check accepts ``1.5``,
but its server reads the value with ``Long.parseLong`` and its hung-job check then fails for every job).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Protocol

from ..core.errors import BadInput
from . import gocd
from .gocd_xml import Element, refusal

DUPLICATE_PIPELINE = "You have defined multiple pipelines named '{}'. Pipeline names must be unique. Source(s): [{}]"
DUPLICATE_STAGE = "You have defined multiple stages called '{}'. Stage names are case-insensitive and must be unique."
DUPLICATE_JOB = "You have defined multiple jobs called '{}'. Job names are case-insensitive and must be unique."
DUPLICATE_VARIABLE = "Environment Variable name '{}' is not unique for {}."
_LABEL_FORMAT = ("Label should be composed of alphanumeric text, it can contain the build number as ${COUNT}, can "
                 "contain a material revision as ${<material-name>} of ${<material-name>[:<number>]}, or use params "
                 "as #{<param-name>}.")
_LABEL_TOKEN = re.compile(r"(?P<material>[^\[]*)(\[:(?P<length>\d+)\])?")


class Located(Protocol):
    """An element or a record: where it starts in the config."""

    @property
    def line(self) -> int: ...

    @property
    def column(self) -> int: ...


@dataclass(frozen=True)
class TaskOwner:
    """The pipeline, stage and job a task belongs to (GoCD's messages name all three)."""

    pipeline: str
    stage: str
    job: str


def _refuse(source: Path, tag: str, at: Located, problem: str) -> BadInput:
    return refusal(source, tag, at.line, at.column, problem)


def check_unique(source: Path, named: Iterable[tuple[str, Element]], message: Callable[[str], str]) -> None:
    """GoCD compares names case-insensitively; the second of two equal names is refused with ``message(name)``."""
    seen: set[str] = set()
    for name, element in named:
        if name.lower() in seen:
            raise _refuse(source, element.tag, element, message(name))
        seen.add(name.lower())


def check_has_stages(source: Path, pipeline: Element, stages: int) -> None:
    if not stages:
        raise _refuse(source, pipeline.tag, pipeline, f"Pipeline '{pipeline.get('name')}' does not have any stages "
                                                      "configured. A pipeline must have at least one stage.")


def check_variable_name(source: Path, variable: Element, owner: str) -> None:
    """``owner`` as GoCD names it in messages (``job 'train'``); the schema lets any name through."""
    name = variable.get("name", "")
    if not name.strip():
        raise _refuse(source, variable.tag, variable, f"Environment Variable cannot have an empty name for {owner}.")
    if name != name.strip():
        raise _refuse(source, variable.tag, variable,
                      f"Environment Variable cannot start or end with spaces for {owner}.")


def job_timeout(source: Path, job: Element) -> int | None:
    """``<job timeout="N">``: minutes without console output before GoCD cancels the job (0: never; absent: the
    server's default). The schema has made it an ``xs:double``; GoCD's two messages for what its config check
    refuses, and the rehearsal's own for a number that is not whole minutes (see the module docstring)."""
    raw = job.get("timeout")
    if raw is None:
        return None
    text = raw.strip()
    if re.fullmatch(r"[+-]?\d+", raw) and int(raw) >= 0:
        return int(raw)
    if text in ("INF", "-INF"):  # the schema's spelling; Java's Double.parseDouble does not take it
        raise _refuse(source, job.tag, job, f"Timeout should be a valid number as it represents number of minutes "
                                            f"(timeout={raw!r})")
    if float(text) < 0:
        raise _refuse(source, job.tag, job, f"Timeout cannot be a negative number as it represents number of minutes "
                                            f"(timeout={raw!r})")
    raise _refuse(source, job.tag, job, f"timeout={raw!r}: GoCD's config check accepts it, but its server reads job "
                                        "timeouts as whole minutes (Long.parseLong) and its check for hung jobs then "
                                        "fails for every job; use a whole number of minutes (a rehearsal check, "
                                        "stricter than GoCD's config load)")


def check_workingdir(source: Path, exec_task: Element, owner: TaskOwner) -> None:
    workingdir = exec_task.get("workingdir")
    if workingdir and not inside_working_dir(workingdir):
        raise _refuse(source, exec_task.tag, exec_task,
                      f"The path of the working directory for the custom command in job '{owner.job}' in stage "
                      f"'{owner.stage}' of pipeline '{owner.pipeline}' is outside the agent sandbox. It must be "
                      "relative to the directory where the agent checks out materials.")


def check_fetch_attributes(source: Path, fetch: Element) -> None:
    """What GoCD checks on one ``<fetchartifact>`` alone (the schema requires the attributes, not a value)."""
    for attr, message in (("stage", "Stage is a required field."), ("job", "Job is a required field.")):
        if not fetch.get(attr, "").strip():
            raise _refuse(source, fetch.tag, fetch, message)
    if fetch.get("srcdir") and fetch.get("srcfile"):
        raise _refuse(source, fetch.tag, fetch, "Only one of srcfile or srcdir is allowed at a time")


def check_artifact_source(source: Path, artifact: Element, job: str) -> None:
    if not artifact.get("src", "").strip():
        raise _refuse(source, artifact.tag, artifact, f"Job '{job}' has an artifact with an empty source")


def check_material(source: Path, material: Element) -> None:
    if not material.get("url", "").strip():
        raise _refuse(source, material.tag, material, "URL cannot be blank")
    dest = material.get("dest", "")
    if dest and not inside_working_dir(dest):
        raise _refuse(source, material.tag, material,
                      f"Dest folder '{dest}' is not valid. It must be a sub-directory of the working folder.")


def inside_working_dir(path: str) -> bool:
    """GoCD's ``FilenameUtil.isNormalizedPathOutsideWorkingDir`` (true when the path is fine, despite its name):
    commons-io ``normalize()`` must not climb above the start and ``getPrefix()`` must be empty, so no ``/x``,
    ``\\\\server\\x``, ``C:``, ``C:\\x``, ``~/x``, ``~user/x``, ``..``, ``a/../../x``."""
    if re.match(r"^([:~/\\]|[A-Za-z]:)", path):
        return False
    depth = 0
    for part in re.split(r"[/\\]", path):
        if part == "..":
            depth -= 1
            if depth < 0:
                return False
        elif part not in ("", "."):
            depth += 1
    return True


def check_label(source: Path, element: Element, template: str, material: str | None, pipeline: str) -> None:
    """``PipelineConfig.validateLabelTemplate``: at least one ``${...}`` token, each COUNT, env:NAME or a material
    name (optionally cut to ``[:N]``, N > 0)."""

    def refuse(problem: str) -> BadInput:
        return _refuse(source, element.tag, element, problem)

    tokens = re.findall(r"\$\{(.*?)\}", template)
    if not tokens:
        raise refuse(f"Invalid label '{template}'. {_LABEL_FORMAT}")
    for token in tokens:
        if not token.strip():
            raise refuse("Label template variable cannot be blank.")
        if token.lower() == "count" or (token.lower().startswith("env:") and len(token) > 4):
            continue
        if token.lower() == "env:":
            raise refuse("Missing environment variable name.")
        found = _LABEL_TOKEN.fullmatch(token)
        if found is None:
            raise refuse(f"Invalid label '{template}'. {_LABEL_FORMAT}")
        if (found.group("length") or "").startswith("0"):
            raise refuse(f"Length of zero not allowed on label {template} defined on pipeline {pipeline}.")
        if material is None or found.group("material").lower() != material.lower():
            raise refuse(f"You have defined a label template in pipeline '{pipeline}' that refers to a material "
                         f"called '{found.group('material')}', but no material with this name is defined.")


def check_fetches(pipeline: gocd.Pipeline, pipelines: list[gocd.Pipeline]) -> gocd.Pipeline:
    """Each fetch checked as GoCD's server does (AbstractFetchTask.validateTask, then FetchTask's paths). The
    pipeline returned spells stage and job names as the stage and job do (the artifact folders' names), and
    carries a note for each fetched path the other job does not visibly publish (GoCD finds that at run time)."""
    stages, notes = [], list(pipeline.notes)
    for stage in pipeline.stages:
        jobs = []
        for job in stage.jobs:
            owner = TaskOwner(pipeline.name, stage.name, job.name)
            tasks = tuple(_checked_fetch(pipeline, owner, task, pipelines, notes)
                          if isinstance(task, gocd.FetchTask) else task for task in job.tasks)
            jobs.append(replace(job, tasks=tasks))
        stages.append(replace(stage, jobs=tuple(jobs)))
    return replace(pipeline, stages=tuple(stages), notes=tuple(notes))


def _checked_fetch(pipeline: gocd.Pipeline, owner: TaskOwner, task: gocd.FetchTask, pipelines: list[gocd.Pipeline],
                   notes: list[str]) -> gocd.FetchTask:
    def refuse(problem: str) -> BadInput:
        return _refuse(pipeline.source, "fetchartifact", task, problem)

    stage, job = _fetched_job(pipeline, owner, task, pipelines, refuse)
    if not task.source:
        raise refuse("Should provide either srcdir or srcfile")
    for kind, value in (("src", task.source), ("dest", task.dest)):
        if value and not inside_working_dir(value):
            raise refuse(f"Task of job '{owner.job}' in stage '{owner.stage}' of pipeline '{owner.pipeline}' has "
                         f"{kind} path '{value}' which is outside the working directory.")
    found = replace(task, stage=stage.name, job=job.name, source=posixpath.normpath(task.source.replace("\\", "/")),
                    dest=posixpath.normpath(task.dest.replace("\\", "/")) if task.dest else "")
    if not _published(job, found.source):
        published = [a.published_path() or f"{a.src} -> {a.dest or '.'}" for a in job.artifacts]
        notes.append(f"line {task.line}: {owner.stage}/{owner.job} fetches {found.source!r} from "
                     f"{stage.name}/{job.name}, which publishes {', '.join(published) or 'nothing'}: on GoCD that "
                     "fetch fails at run time")
    return found


def _fetched_job(pipeline: gocd.Pipeline, owner: TaskOwner, task: gocd.FetchTask, pipelines: list[gocd.Pipeline],
                 refuse: _Refuse) -> tuple[gocd.Stage, gocd.Job]:
    """The stage and job a fetch names, which must be of this pipeline and of a stage before the fetching one."""
    me = f'"{owner.pipeline} :: {owner.stage} :: {owner.job}" tries to fetch artifact from'
    path = task.pipeline or pipeline.name
    ancestor = path.split("/")[0]
    source = next((p for p in pipelines if p.name.lower() == ancestor.lower()), None)
    if source is None:
        raise refuse(f'{me} pipeline "{ancestor}" which does not exist.')
    stage = source.stage(task.stage)
    if stage is None:
        raise refuse(f'{me} stage "{ancestor} :: {task.stage}" which does not exist.')
    job = next((j for j in stage.jobs if j.name.lower() == task.job.lower()), None)
    if job is None:
        raise refuse(f'{me} job "{ancestor} :: {task.stage} :: {task.job}" which does not exist.')
    if "/" in path:  # a path of ancestors: the rehearsed pipeline has no dependency material, so no ancestors
        last = path.split("/")[-1]
        raise refuse(f"Pipeline named '{last}' exists, but is not an ancestor of '{pipeline.name}' as declared in "
                     f"'{path}'." if any(p.name.lower() == last.lower() for p in pipelines) else
                     f"Pipeline named '{last}' which is declared ancestor of '{pipeline.name}' through path "
                     f"'{path}' does not exist.")
    if path.lower() != pipeline.name.lower():
        raise refuse(f'Pipeline "{pipeline.name}" tries to fetch artifact from pipeline "{path}" which is not an '
                     "upstream pipeline")
    earlier = [s.name.lower() for s in pipeline.stages[:[s.name for s in pipeline.stages].index(owner.stage)]]
    if stage.name.lower() not in earlier:
        raise refuse(f'{me} its stage "{task.stage}" which does not complete before the current stage '
                     f'"{owner.stage}".')
    return stage, job


class _Refuse(Protocol):
    def __call__(self, problem: str) -> BadInput: ...


def _published(job: gocd.Job, wanted: str) -> bool:
    """Whether fetching ``wanted`` can find something the job publishes (a wildcard: only known at run time)."""
    if any(a.has_wildcard for a in job.artifacts):
        return True
    return any(_covers(p, wanted) for p in (a.published_path() for a in job.artifacts) if p is not None)


def _covers(published: str, wanted: str) -> bool:
    """True if fetching ``wanted`` can find something under the published path (same, inside, or a parent)."""
    published, wanted = posixpath.normpath(published), posixpath.normpath(wanted)
    return (published == wanted or wanted.startswith(published + "/") or published.startswith(wanted + "/")
            or wanted == ".")
