"""Reading a GoCD config XML (``<cruise schemaVersion="139">``) into typed records, strictly.

The local rehearsal (:mod:`mlops_kit.pipeline`) must run exactly what GoCD would run, so anything this module does
not understand is refused up front with one line naming the element and its line, before a single task runs.
Elements that only matter to the server (agents, security, tabs, resources...) are read or skipped, not refused.
No XML schema library is needed: the Python standard library's expat parser gives us line numbers.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable
from xml.parsers import expat

from .errors import BadInput
from .inputs import read_input
from .redact import redact

RUNIF_VALUES = ("passed", "failed", "any")
_LABEL_TOKEN = re.compile(r"\$\{([^}]*)\}")
_PARAM_TOKEN = re.compile(r"##|#\{([^}]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_\-.]*$")
_TASKS_HINT = "the local runner runs <exec> and <fetchartifact> tasks; call the tool from an <exec>"
_WHY = {
    "ant": _TASKS_HINT, "nant": _TASKS_HINT, "rake": _TASKS_HINT, "task": f"plugin task; {_TASKS_HINT}",
    "dependencies": "dependencies on other pipelines are not emulated",
    "oncancel": "cancelling is not emulated (Ctrl-C stops the local run)",
    "configuration": "external (plugin) artifacts are not emulated",
}


# ----------------------------------------------------------------------------------------------- records


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
    runif: frozenset[str]
    line: int

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
    runif: frozenset[str]
    line: int

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

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name.lower() == name.lower()), None)


# ----------------------------------------------------------------------------------------------- XML nodes


@dataclass
class _Node:
    tag: str
    attrs: dict[str, str]
    line: int
    children: list[_Node] = field(default_factory=list)
    text: str = ""

    def kids(self, tag: str) -> list[_Node]:
        return [c for c in self.children if c.tag == tag]

    def kid(self, tag: str) -> _Node | None:
        found = self.kids(tag)
        return found[0] if found else None


def _parse_xml(text: str, source: Path) -> _Node:
    """Parse with expat (standard library) so every node knows its line for error messages."""
    parser = expat.ParserCreate()
    stack: list[_Node] = []
    root: list[_Node] = []

    def start(tag: str, attrs: dict[str, str]) -> None:
        node = _Node(tag, dict(attrs), parser.CurrentLineNumber)
        (stack[-1].children if stack else root).append(node)
        stack.append(node)

    def end(tag: str) -> None:
        stack.pop()

    def chars(data: str) -> None:
        if stack:
            stack[-1].text += data

    parser.StartElementHandler, parser.EndElementHandler, parser.CharacterDataHandler = start, end, chars
    try:
        parser.Parse(text, True)
    except expat.ExpatError as exc:
        raise BadInput(f"{source}: line {exc.lineno}: invalid XML: {expat.ErrorString(exc.code)}") from None
    return root[0]


# ----------------------------------------------------------------------------------------------- loading


class _Reader:
    """Walks the node tree; every refusal names the file, the line and the element."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, node: _Node, problem: str) -> BadInput:
        return BadInput(f"{self.source}: line {node.line}: <{node.tag}>: {problem}")

    def unsupported(self, node: _Node, why: str) -> BadInput:
        return self.fail(node, f"not supported by the local runner ({why})")

    def only(self, node: _Node, allowed: Iterable[str], ignored: Iterable[str] = ()) -> None:
        allowed, ignored = set(allowed), set(ignored)
        for child in node.children:
            if child.tag in ignored:
                continue
            if child.tag not in allowed:
                known = ", ".join(sorted(allowed)) or "nothing"
                raise self.unsupported(child, _WHY.get(child.tag) or f"inside <{node.tag}> it understands: {known}")

    def attr(self, node: _Node, name: str, *, required: bool = True, default: str = "") -> str:
        value = node.attrs.get(name)
        if value is None or (required and not value.strip()):
            if required:
                raise self.fail(node, f"attribute '{name}' is required")
            return default
        return value.strip()

    def flag(self, node: _Node, name: str, default: bool) -> bool:
        value = node.attrs.get(name)
        if value is None:
            return default
        if value.strip().lower() not in ("true", "false"):
            raise self.fail(node, f"attribute '{name}' must be true or false, got {value!r}")
        return value.strip().lower() == "true"


def load_config(path: Path | str) -> list[Pipeline]:
    """Read ``path`` and return its pipelines, or raise :class:`BadInput` naming what is wrong or unsupported."""
    path = Path(path)
    return parse_config(read_input(path, "GoCD config"), source=path)


def parse_config(text: str, *, source: Path) -> list[Pipeline]:
    """Parse config XML ``text``; ``source`` is used in messages."""
    root = _parse_xml(text, source)
    reader = _Reader(source)
    if root.tag != "cruise":
        raise reader.fail(root, "the root element must be <cruise>")
    server_only = ("server", "elastic", "repositories", "scms", "config-repos", "artifactStores", "secretConfigs",
                   "agents")
    reader.only(root, ("pipelines", "environments", "templates"), server_only)
    env_vars = _environment_variables(reader, root)
    pipelines = []
    for group in root.kids("pipelines"):
        reader.only(group, ("pipeline",), ("authorization",))
        for node in group.kids("pipeline"):
            pipelines.append(_pipeline(reader, node, group.attrs.get("group", "defaultGroup"), env_vars))
    if not pipelines:
        raise BadInput(f"{source}: no <pipeline> found inside <pipelines>")
    _check_unique([p.name for p in pipelines], f"{source}: pipeline")
    return pipelines


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


def _check_unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name.lower() in seen:
            raise BadInput(f"{what} name {name!r} is used twice (GoCD names are case-insensitive)")
        seen.add(name.lower())


def _environment_variables(reader: _Reader, root: _Node) -> dict[str, tuple[Variable, ...]]:
    """``<environments>``: variables an environment gives to the pipelines it lists (lowest precedence)."""
    result: dict[str, tuple[Variable, ...]] = {}
    for envs in root.kids("environments"):
        for env in envs.kids("environment"):
            variables = _variables(reader, env)
            for pipes in env.kids("pipelines"):
                for pipe in pipes.kids("pipeline"):
                    result[pipe.attrs.get("name", "").lower()] = variables
    return result


def _pipeline(reader: _Reader, node: _Node, group: str, env_vars: dict[str, tuple[Variable, ...]]) -> Pipeline:
    name = _name(reader, node)
    if node.attrs.get("template"):
        raise reader.unsupported(node, f"pipeline {name!r} uses template {node.attrs['template']!r}; "
                                       "inline the stages to rehearse it")
    reader.only(node, ("params", "environmentvariables", "materials", "stage", "timer"), ("trackingtool",))
    _substitute_params(reader, node)
    notes = []
    if node.kid("timer") is not None:
        notes.append("ignored <timer>: a local run is a manual trigger")
    stages = tuple(_stage(reader, s, index) for index, s in enumerate(node.kids("stage")))
    if not stages:
        raise reader.fail(node, f"pipeline {name!r} has no <stage>")
    _check_unique([s.name for s in stages], f"{reader.source}: pipeline {name!r}: stage")
    label = node.attrs.get("labeltemplate", "${COUNT}")
    pipeline = Pipeline(
        name=name, group=group, label_template=label, variables=_variables(reader, node),
        environment_variables=env_vars.get(name.lower(), ()), material=_material(reader, node),
        stages=stages, source=reader.source, notes=tuple(notes),
    )
    _check_label(reader, node, pipeline)
    return _check_fetches(reader, pipeline)


def _substitute_params(reader: _Reader, pipeline: _Node) -> None:
    """GoCD's ``#{name}`` pipeline parameters, replaced everywhere inside the pipeline (``##`` is a literal #)."""
    params: dict[str, str] = {}
    for block in pipeline.kids("params"):
        reader.only(block, ("param",))
        params.update({reader.attr(p, "name"): p.text for p in block.kids("param")})

    def replace(node: _Node, text: str) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(0) == "##":
                return "#"
            if match.group(1) not in params:
                raise reader.fail(node, f"parameter #{{{match.group(1)}}} is not defined in <params>")
            return params[match.group(1)]

        return _PARAM_TOKEN.sub(one, text)

    def walk(node: _Node) -> None:
        node.attrs = {k: replace(node, v) for k, v in node.attrs.items()}
        node.text = replace(node, node.text)
        for child in node.children:
            if child.tag != "params":
                walk(child)

    walk(pipeline)


def _name(reader: _Reader, node: _Node) -> str:
    name = reader.attr(node, "name")
    if not _NAME.match(name):
        raise reader.fail(node, f"name {name!r} may only contain letters, digits, '_', '-' and '.'")
    return name


def _variables(reader: _Reader, node: _Node) -> tuple[Variable, ...]:
    block = node.kid("environmentvariables")
    if block is None:
        return ()
    reader.only(block, ("variable",))
    out = []
    for var in block.kids("variable"):
        reader.only(var, ("value", "encryptedValue"))
        name = reader.attr(var, "name")
        secure = reader.flag(var, "secure", False) or var.kid("encryptedValue") is not None
        value_node = var.kid("value")
        value = None if secure else (value_node.text if value_node is not None else "")
        out.append(Variable(name, value, secure))
    _check_unique([v.name for v in out], f"{reader.source}: line {block.line}: environment variable")
    return tuple(out)


def _material(reader: _Reader, node: _Node) -> Material:
    materials = node.kid("materials")
    if materials is None:
        raise reader.fail(node, "a <materials> element is required")
    if len(materials.children) != 1 or materials.children[0].tag != "git":
        first = next((c for c in materials.children if c.tag != "git"), materials)
        raise reader.unsupported(first, "the local runner stands in for exactly one <git> material, "
                                        "the repository it runs from")
    git = materials.children[0]
    reader.only(git, (), ("filter",))
    dest = git.attrs.get("dest", "").strip()
    if dest:
        _relative(reader, git, "dest", dest)
    return Material(url=reader.attr(git, "url"), branch=git.attrs.get("branch", "master"),
                    name=git.attrs.get("materialName") or dest or None, dest=dest)


def _stage(reader: _Reader, node: _Node, index: int) -> Stage:
    name = _name(reader, node)
    reader.only(node, ("approval", "environmentvariables", "jobs"))
    approval = node.kid("approval")
    if approval is not None:
        reader.only(approval, (), ("authorization",))
        kind = approval.attrs.get("type", "success")
        if kind == "manual" and index > 0:
            raise reader.unsupported(approval, f"stage {name!r} waits for a manual approval; a local run does not "
                                               "pause: remove it or rehearse the stages before it")
        if kind not in ("manual", "success"):
            raise reader.fail(approval, f"type must be 'success' or 'manual', got {kind!r}")
    jobs = [_job(reader, j) for block in node.kids("jobs") for j in _jobs_of(reader, block)]
    if not jobs:
        raise reader.fail(node, f"stage {name!r} has no <job>")
    _check_unique([j.name for j in jobs], f"{reader.source}: stage {name!r}: job")
    return Stage(name=name, jobs=tuple(jobs), variables=_variables(reader, node),
                 fetch_materials=reader.flag(node, "fetchMaterials", True), line=node.line,
                 clean_working_dir=reader.flag(node, "cleanWorkingDir", False))


def _jobs_of(reader: _Reader, block: _Node) -> list[_Node]:
    reader.only(block, ("job",))
    return block.kids("job")


def _job(reader: _Reader, node: _Node) -> Job:
    name = reader.attr(node, "name")
    if not re.match(r"^[A-Za-z0-9_\-.]+$", name):
        raise reader.fail(node, f"job name {name!r} may only contain letters, digits, '_', '-' and '.'")
    if node.attrs.get("runInstanceCount"):
        raise reader.unsupported(node, f"job {name!r}: runInstanceCount (one instance per job runs locally)")
    if node.attrs.get("elasticProfileId"):
        raise reader.unsupported(node, f"job {name!r}: elastic agents")
    reader.only(node, ("tasks", "artifacts", "environmentvariables", "resources"), ("tabs",))
    tasks_node = node.kid("tasks")
    tasks = tuple(_task(reader, t) for t in tasks_node.children) if tasks_node is not None else ()
    resources = node.kid("resources")
    return Job(name=name, tasks=tasks, artifacts=_artifacts(reader, node), variables=_variables(reader, node),
               resources=tuple(r.text.strip() for r in resources.kids("resource")) if resources is not None else (),
               line=node.line)


def _task(reader: _Reader, node: _Node) -> Task:
    if node.tag == "exec":
        return _exec(reader, node)
    if node.tag == "fetchartifact":
        return _fetch(reader, node)
    raise reader.unsupported(node, _WHY.get(node.tag, _TASKS_HINT))


def _runif(reader: _Reader, node: _Node) -> frozenset[str]:
    values = set()
    for runif in node.kids("runif"):
        status = reader.attr(runif, "status")
        if status not in RUNIF_VALUES:
            raise reader.fail(runif, f"status must be one of {', '.join(RUNIF_VALUES)}, got {status!r}")
        values.add(status)
    return frozenset(values or {"passed"})


def _exec(reader: _Reader, node: _Node) -> ExecTask:
    reader.only(node, ("arg", "runif"))
    command = reader.attr(node, "command")
    if node.attrs.get("args", "").strip():
        raise reader.unsupported(node, "the 'args' attribute: its quoting differs between agents; "
                                       "write one <arg> element per argument")
    workingdir = node.attrs.get("workingdir", "").strip() or None
    if workingdir:
        _relative(reader, node, "workingdir", workingdir)
    return ExecTask(command=command, args=tuple(a.text for a in node.kids("arg")), workingdir=workingdir,
                    runif=_runif(reader, node), line=node.line)


def _fetch(reader: _Reader, node: _Node) -> FetchTask:
    reader.only(node, ("runif",))
    origin = node.attrs.get("artifactOrigin", "gocd")
    if origin != "gocd":
        raise reader.unsupported(node, f"artifactOrigin={origin!r}: only GoCD's own artifact store is emulated")
    srcdir, srcfile = node.attrs.get("srcdir", "").strip(), node.attrs.get("srcfile", "").strip()
    if bool(srcdir) == bool(srcfile):
        raise reader.fail(node, "exactly one of 'srcdir' and 'srcfile' is required")
    source = srcdir or srcfile
    _relative(reader, node, "srcdir" if srcdir else "srcfile", source)
    dest = node.attrs.get("dest", "").strip()
    if dest:
        _relative(reader, node, "dest", dest)
    return FetchTask(stage=reader.attr(node, "stage"), job=reader.attr(node, "job"),
                     source=posixpath.normpath(source.replace("\\", "/")), is_dir=bool(srcdir),
                     dest=posixpath.normpath(dest.replace("\\", "/")) if dest else "",
                     runif=_runif(reader, node), line=node.line)


def _artifacts(reader: _Reader, job: _Node) -> tuple[Artifact, ...]:
    block = job.kid("artifacts")
    if block is None:
        return ()
    reader.only(block, ("artifact",))
    out = []
    for node in block.kids("artifact"):
        reader.only(node, ())
        kind = node.attrs.get("type", "build")
        if kind not in ("build", "test"):
            raise reader.unsupported(node, f"type={kind!r}: only build and test artifacts are emulated")
        src = reader.attr(node, "src").replace("\\", "/")
        dest = node.attrs.get("dest", "").strip().replace("\\", "/")
        _relative(reader, node, "src", src)
        if dest:
            _relative(reader, node, "dest", dest)
        out.append(Artifact(src=src, dest=posixpath.normpath(dest) if dest else "", line=node.line))
    return tuple(out)


def _relative(reader: _Reader, node: _Node, attr: str, value: str) -> None:
    """GoCD paths are relative to the job's working directory and may not leave it."""
    norm = posixpath.normpath(value.replace("\\", "/"))
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or norm == ".." or norm.startswith("../"):
        raise reader.fail(node, f"attribute '{attr}' {value!r} must be a path inside the working directory")


def _check_label(reader: _Reader, node: _Node, pipeline: Pipeline) -> None:
    for token in _LABEL_TOKEN.findall(pipeline.label_template):
        name = token.split("[", 1)[0]
        if token == "COUNT" or token.startswith("env:"):
            continue
        if pipeline.material.name and name.lower() == pipeline.material.name.lower():
            if "[" in token and not re.fullmatch(r"[^\[]+\[:\d+\]", token):
                raise reader.fail(node, f"labeltemplate token ${{{token}}}: truncation must look like [:7]")
            continue
        raise reader.fail(node, f"labeltemplate token ${{{token}}} is neither COUNT, env:NAME nor a material name")


def _check_fetches(reader: _Reader, pipeline: Pipeline) -> Pipeline:
    """Each fetch must name an EARLIER stage, a job of it, and a path that job publishes. GoCD matches the names
    case-insensitively: the pipeline returned spells them as the stage and job do (the artifact folders' names)."""
    stages = []
    for index, stage in enumerate(pipeline.stages):
        earlier = {s.name.lower(): s for s in pipeline.stages[:index]}
        jobs = tuple(replace(job, tasks=tuple(_check_fetch(reader, pipeline, stage, earlier, task)
                                              if isinstance(task, FetchTask) else task for task in job.tasks))
                     for job in stage.jobs)
        stages.append(replace(stage, jobs=jobs))
    return replace(pipeline, stages=tuple(stages))


def _check_fetch(reader: _Reader, pipeline: Pipeline, stage: Stage, earlier: dict[str, Stage],
                 task: FetchTask) -> FetchTask:
    where = f"{reader.source}: line {task.line}: <fetchartifact>"
    source = earlier.get(task.stage.lower())
    if source is None:
        raise BadInput(f"{where}: stage {task.stage!r} is not an earlier stage of pipeline {pipeline.name!r} "
                       f"(stage {stage.name!r} can fetch from: {', '.join(earlier) or 'none'})")
    job = next((j for j in source.jobs if j.name.lower() == task.job.lower()), None)
    if job is None:
        raise BadInput(f"{where}: stage {task.stage!r} has no job {task.job!r} "
                       f"(jobs: {', '.join(j.name for j in source.jobs)})")
    found = replace(task, stage=source.name, job=job.name)
    published = [a.published_path() or f"{a.src} -> {a.dest or '.'}" for a in job.artifacts]
    if any(_covers(p, task.source) for p in (a.published_path() for a in job.artifacts) if p is not None):
        return found
    if any(a.has_wildcard for a in job.artifacts):
        return found  # a wildcard artifact: what it publishes is only known at run time
    raise BadInput(f"{where}: job {task.stage}/{task.job} publishes no {task.source!r} "
                   f"(it publishes: {', '.join(published) or 'nothing'})")


def _covers(published: str, wanted: str) -> bool:
    """True if fetching ``wanted`` can find something under the published path (same, inside, or a parent)."""
    published, wanted = posixpath.normpath(published), posixpath.normpath(wanted)
    return (published == wanted or wanted.startswith(published + "/") or published.startswith(wanted + "/")
            or wanted == ".")


def label_for(pipeline: Pipeline, counter: int, revision: str, env: dict[str, str]) -> str:
    """GO_PIPELINE_LABEL from the labeltemplate: ${COUNT}, ${<material>}, ${<material>[:N]}, ${env:NAME}."""

    def value(match: re.Match[str]) -> str:
        token = match.group(1)
        if token == "COUNT":
            return str(counter)
        if token.startswith("env:"):
            return env.get(token[4:], "")
        cut = re.fullmatch(r"[^\[]+\[:(\d+)\]", token)
        return revision[: int(cut.group(1))] if cut else revision

    return _LABEL_TOKEN.sub(value, pipeline.label_template)
