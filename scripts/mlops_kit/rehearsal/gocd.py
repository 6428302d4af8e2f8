"""A GoCD pipeline config as typed records: what the rehearsal runs (pipelines, stages, jobs, tasks, artifacts,
variables), whatever file they came from.

:mod:`~mlops_kit.rehearsal.gocd_reader` builds them from a config XML (checked by
:mod:`~mlops_kit.rehearsal.gocd_xml` against GoCD's schema and by :mod:`~mlops_kit.rehearsal.gocd_rules` as GoCD's
server checks a config); the rest of the rehearsal only reads these records. Every record knows the line and column
of its element, for the messages that name it.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..core.errors import BadInput
from ..core.redact import redact

RunIf = Literal["passed", "failed", "any"]
LABEL_TOKEN = re.compile(r"\$\{([^}]*)\}")
_TRUNCATED = re.compile(r"(?P<material>[^\[]*)\[:(?P<length>\d+)\]")
UNVERSIONED = "unversioned"  # the revision of a repository git cannot read (no git, or not a work tree)


@dataclass(frozen=True)
class Variable:
    """An ``<environmentvariables><variable>``; a secure one has no readable value in the XML."""

    name: str
    value: str | None
    secure: bool = False


@dataclass(frozen=True)
class ExecTask:
    """``<exec command=... workingdir=...><arg>...</arg></exec>``: one process, arguments passed as given."""

    command: str
    args: tuple[str, ...]
    workingdir: str | None
    runif: frozenset[RunIf]
    line: int
    column: int = 0

    def describe(self, limit: int = 200) -> str:
        text = " ".join([self.command, *(a if a and " " not in a else repr(a) for a in self.args)])
        text = redact(text)  # e.g. --tracking-uri https://user:pass@host in the XML: shown in every log
        return text if len(text) <= limit else text[: limit - 3] + "..."


@dataclass(frozen=True)
class FetchTask:
    """``<fetchartifact stage job srcdir|srcfile dest>`` from an earlier stage of the same pipeline."""

    stage: str
    job: str
    source: str
    is_dir: bool
    dest: str
    runif: frozenset[RunIf]
    line: int
    pipeline: str = ""  # the ``pipeline`` attribute as written ("": this pipeline)
    column: int = 0

    def describe(self, limit: int = 200) -> str:
        kind = "srcdir" if self.is_dir else "srcfile"
        return f"fetchartifact {self.stage}/{self.job} {kind}={self.source} dest={self.dest or '.'}"


Task = ExecTask | FetchTask


@dataclass(frozen=True)
class Artifact:
    """``<artifact type="build|test" src=... dest=...>``: files a job publishes to the server."""

    src: str
    dest: str
    line: int
    column: int = 0

    @property
    def has_wildcard(self) -> bool:
        return any(ch in self.src for ch in "*?")

    def published_path(self) -> str | None:
        """Where a plain (wildcard-free) ``src`` lands in the job's artifacts: ``dest/<basename of src>``."""
        if self.has_wildcard:
            return None
        return posixpath.join(self.dest, posixpath.basename(self.src)) if self.dest else posixpath.basename(self.src)


@dataclass(frozen=True)
class Job:
    name: str
    tasks: tuple[Task, ...]
    artifacts: tuple[Artifact, ...]
    variables: tuple[Variable, ...]
    resources: tuple[str, ...]
    line: int
    timeout: int | None = None  # minutes of silence before GoCD cancels the job; 0 = never; None = server default
    column: int = 0


@dataclass(frozen=True)
class Stage:
    name: str
    jobs: tuple[Job, ...]
    variables: tuple[Variable, ...]
    fetch_materials: bool
    line: int
    clean_working_dir: bool = False


@dataclass(frozen=True)
class Material:
    """The (single, git) material: the local run copies the local repository in its place."""

    url: str
    branch: str
    name: str | None
    dest: str


@dataclass(frozen=True)
class Pipeline:
    name: str
    group: str
    label_template: str
    variables: tuple[Variable, ...]
    environment_variables: tuple[Variable, ...]
    material: Material
    stages: tuple[Stage, ...]
    source: Path
    notes: tuple[str, ...] = field(default=(), compare=False)
    line: int = 0
    column: int = 0

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name.lower() == name.lower()), None)


def select_pipeline(pipelines: list[Pipeline], name: str | None) -> Pipeline:
    """The pipeline called ``name``, or the only one; otherwise a BadInput listing the choices."""
    names = ", ".join(p.name for p in pipelines)
    if name is None:
        if len(pipelines) > 1:
            raise BadInput(f"{pipelines[0].source}: several pipelines ({names}): choose one with --pipeline")
        return pipelines[0]
    for pipeline in pipelines:
        if pipeline.name.lower() == name.lower():
            return pipeline
    raise BadInput(f"{pipelines[0].source}: no pipeline named {name!r} (found: {names})")


def label_for(pipeline: Pipeline, counter: int, revision: str | None, env: dict[str, str]) -> str:
    """GO_PIPELINE_LABEL from the labeltemplate: ${COUNT}, ${<material>}, ${<material>[:N]}, ${env:NAME}.

    ``revision`` None (no git): the material token says ``unversioned``, whole. Cut to N characters it would read
    as a typo (``1-unversio``), and leaving it out would change the label's shape (``1-`` or ``1``) for anyone
    reading labels as ``<count>-<revision>``."""

    def value(match: re.Match[str]) -> str:
        token = match.group(1)
        if token.upper() == "COUNT":
            return str(counter)
        if token.lower().startswith("env:"):
            return env.get(token[4:], "")
        if revision is None:
            return UNVERSIONED
        cut = _TRUNCATED.fullmatch(token)
        return revision[: int(cut.group("length"))] if cut else revision

    return LABEL_TOKEN.sub(value, pipeline.label_template)
