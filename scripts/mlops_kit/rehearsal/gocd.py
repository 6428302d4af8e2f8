"""Reading a GoCD config XML (``<cruise schemaVersion="139">``) into typed records, strictly.

The local rehearsal (:mod:`mlops_kit.rehearsal.engine`) must run exactly what GoCD would run, so anything this module does
not understand is refused up front with one line naming the element and its line, before a single task runs.
Elements that only matter to the server (agents, security, tabs, resources...) are read or skipped, not refused.
No XML schema library is needed: the Python standard library's expat parser gives us line numbers. A DTD (and so
any entity declaration) is refused at once: GoCD configs have none, and expanding entities lets a small file hang
the reader ("billion laughs") or pull in a local file.

The server's own config rules (what GoCD checks when it loads a config, from its source: ``JobConfig``,
``AbstractFetchTask``, ``FetchTask``, ``ExecTask``, ``EnvironmentVariableConfig``, ``StageConfig``,
``PipelineConfigs``...) are checked here too, with GoCD's own messages: names and their case-insensitive
uniqueness (pipelines, stages, jobs, variables per level), job ``timeout``, what a ``<fetchartifact>`` may name,
and the paths GoCD checks (``filePathType`` of the schema; fetch and ``workingdir`` paths must normalise inside the
working directory). What GoCD leaves to run time stays a run-time failure in the rehearsal too, with GoCD's words:
an artifact ``src`` matching nothing (or outside the working directory), an artifact uploaded outside the job's
artifact folder, a fetched path the other job did not publish (a note is printed up front), a command the agent
cannot start. Stricter than GoCD, and said so in the message: a job ``timeout`` that is not a whole number of
minutes (GoCD's config check accepts ``1.5``, but its server reads the value with ``Long.parseLong`` and its hung-job
check then fails for every job).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Iterable
from xml.parsers import expat

from ..core.errors import BadInput
from ..core.redact import redact
from ..core.userfile import read_input

RUNIF_VALUES = ("passed", "failed", "any")
_LABEL_TOKEN = re.compile(r"\$\{([^}]*)\}")
_PARAM_TOKEN = re.compile(r"##|#\{([^}]*)\}")
_NAME = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_\-.]*$")
_JOB_NAME = re.compile(r"^[A-Za-z0-9_\-.]+$")
_MAX_NAME = 255
_FILE_PATH_TYPE = r"(([.]\/)?[.][^. ]+)|([^. ].+[^. ])|([^. ][^. ])|([^. ])"  # the XSD's filePathType pattern
_JAVA_DOUBLE = re.compile(r"[+-]?(NaN|Infinity|(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?[fFdD]?)")  # Double.parseDouble
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
    pipeline: str = ""  # the ``pipeline`` attribute as written ("": this pipeline)

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
    timeout: int | None = None  # minutes of silence before GoCD cancels the job; 0 = never; None = server default


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
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    stack: list[_Node] = []
    root: list[_Node] = []

    def doctype(name: str, *_: object) -> None:
        raise BadInput(f"{source}: line {parser.CurrentLineNumber}: <!DOCTYPE {name}>: a DTD (with its entity "
                       "declarations) is not allowed in a GoCD config; remove it")

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
    parser.StartDoctypeDeclHandler = doctype  # before any declaration in it is read, so before any expansion
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
    _unique(reader, [(p.name, p.line) for p in pipelines], "pipeline",
            "You have defined multiple pipelines named '{}'. Pipeline names must be unique. "
            f"Source(s): [{source.name}]")
    return [_check_fetches(reader, p, pipelines) for p in pipelines]


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


def _unique(reader: _Reader, named: list[tuple[str, int]], tag: str, message: str) -> None:
    """GoCD compares names case-insensitively; the second of two equal names is refused with GoCD's message."""
    seen: set[str] = set()
    for name, line in named:
        if name.lower() in seen:
            raise reader.fail(_Node(tag, {}, line), message.format(name))
        seen.add(name.lower())


def _environment_variables(reader: _Reader, root: _Node) -> dict[str, tuple[Variable, ...]]:
    """``<environments>``: variables an environment gives to the pipelines it lists (lowest precedence)."""
    result: dict[str, tuple[Variable, ...]] = {}
    for envs in root.kids("environments"):
        for env in envs.kids("environment"):
            variables = _variables(reader, env, f"environment '{env.attrs.get('name', '')}'")
            for pipes in env.kids("pipelines"):
                for pipe in pipes.kids("pipeline"):
                    result[pipe.attrs.get("name", "").lower()] = variables
    return result


def _pipeline(reader: _Reader, node: _Node, group: str, env_vars: dict[str, tuple[Variable, ...]]) -> Pipeline:
    name = _name(reader, node, "pipeline")
    if node.attrs.get("template"):
        raise reader.unsupported(node, f"pipeline {name!r} uses template {node.attrs['template']!r}; "
                                       "inline the stages to rehearse it")
    reader.only(node, ("params", "environmentvariables", "materials", "stage", "timer"), ("trackingtool",))
    _substitute_params(reader, node)
    notes = []
    if node.kid("timer") is not None:
        notes.append("ignored <timer>: a local run is a manual trigger")
    variables = _variables(reader, node, f"pipeline '{name}'")
    stages = tuple(_stage(reader, s, index, name) for index, s in enumerate(node.kids("stage")))
    if not stages:
        raise reader.fail(node, f"pipeline {name!r} has no <stage>")
    _unique(reader, [(s.name, s.line) for s in stages], "stage",
            "You have defined multiple stages called '{}'. Stage names are case-insensitive and must be unique.")
    label = node.attrs.get("labeltemplate", "${COUNT}")
    pipeline = Pipeline(
        name=name, group=group, label_template=label, variables=variables,
        environment_variables=env_vars.get(name.lower(), ()), material=_material(reader, node),
        stages=stages, source=reader.source, notes=tuple(notes), line=node.line,
    )
    _check_label(reader, node, pipeline)
    return pipeline


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


def _name(reader: _Reader, node: _Node, kind: str) -> str:
    """A pipeline or stage name (GoCD's NameTypeValidator)."""
    name = reader.attr(node, "name")
    if not _NAME.match(name) or len(name) > _MAX_NAME:
        raise reader.fail(node, f"Invalid {kind} name '{name}'. This must be alphanumeric and can contain "
                                "underscores, hyphens and periods (however, it cannot start with a period). The "
                                f"maximum allowed length is {_MAX_NAME} characters.")
    return name


def _variables(reader: _Reader, node: _Node, owner: str) -> tuple[Variable, ...]:
    """One level's ``<environmentvariables>``; ``owner`` as GoCD names it in messages (``job 'train'``)."""
    block = node.kid("environmentvariables")
    if block is None:
        return ()
    reader.only(block, ("variable",))
    out = []
    for var in block.kids("variable"):
        reader.only(var, ("value", "encryptedValue"))
        name = var.attrs.get("name", "")
        if not name.strip():
            raise reader.fail(var, f"Environment Variable cannot have an empty name for {owner}.")
        if name != name.strip():
            raise reader.fail(var, f"Environment Variable cannot start or end with spaces for {owner}.")
        secure = reader.flag(var, "secure", False) or var.kid("encryptedValue") is not None
        value_node = var.kid("value")
        value = None if secure else (value_node.text if value_node is not None else "")
        out.append(Variable(name, value, secure))
    _unique(reader, [(v.name, n.line) for v, n in zip(out, block.kids("variable"), strict=True)], "variable",
            f"Environment Variable name '{{}}' is not unique for {owner}.")
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
    if dest and (not _file_path_type(dest) or not _inside_working_dir(dest)):
        raise reader.fail(git, f"Dest folder '{dest}' is not valid. It must be a sub-directory of the working "
                               "folder.")
    return Material(url=reader.attr(git, "url"), branch=git.attrs.get("branch", "master"),
                    name=git.attrs.get("materialName") or dest or None, dest=dest)


def _stage(reader: _Reader, node: _Node, index: int, pipeline: str) -> Stage:
    name = _name(reader, node, "stage")
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
    variables = _variables(reader, node, f"stage '{name}'")
    jobs = [_job(reader, j, (pipeline, name)) for block in node.kids("jobs") for j in _jobs_of(reader, block)]
    if not jobs:
        raise reader.fail(node, f"stage {name!r} has no <job>")
    _unique(reader, [(j.name, j.line) for j in jobs], "job",
            "You have defined multiple jobs called '{}'. Job names are case-insensitive and must be unique.")
    return Stage(name=name, jobs=tuple(jobs), variables=variables,
                 fetch_materials=reader.flag(node, "fetchMaterials", True), line=node.line,
                 clean_working_dir=reader.flag(node, "cleanWorkingDir", False))


def _jobs_of(reader: _Reader, block: _Node) -> list[_Node]:
    reader.only(block, ("job",))
    return block.kids("job")


def _job(reader: _Reader, node: _Node, where: tuple[str, str]) -> Job:
    """A job; ``where`` is (pipeline, stage), for GoCD's messages about its tasks."""
    name = reader.attr(node, "name")
    if not _JOB_NAME.match(name) or len(name) > _MAX_NAME:
        raise reader.fail(node, f"Invalid job name '{name}'. This must be alphanumeric and may contain "
                                f"underscores and periods. The maximum allowed length is {_MAX_NAME} characters.")
    if node.attrs.get("runInstanceCount"):
        raise reader.unsupported(node, f"job {name!r}: runInstanceCount (one instance per job runs locally)")
    if node.attrs.get("elasticProfileId"):
        raise reader.unsupported(node, f"job {name!r}: elastic agents")
    reader.only(node, ("tasks", "artifacts", "environmentvariables", "resources"), ("tabs",))
    timeout = _timeout(reader, node)
    context = _Where(*where, name)
    tasks_node = node.kid("tasks")
    tasks = tuple(_task(reader, t, context) for t in tasks_node.children) if tasks_node is not None else ()
    resources = node.kid("resources")
    return Job(name=name, tasks=tasks, artifacts=_artifacts(reader, node), variables=_variables(reader, node,
                                                                                                  f"job '{name}'"),
               resources=tuple(r.text.strip() for r in resources.kids("resource")) if resources is not None else (),
               line=node.line, timeout=timeout)


def _timeout(reader: _Reader, node: _Node) -> int | None:
    """``<job timeout="N">``: minutes without console output before GoCD cancels the job (0: never; absent: the
    server's default). GoCD's own two messages for what its config check refuses; a number that is not whole
    minutes is refused too, as a rehearsal check: GoCD's server cannot use it (see the module docstring)."""
    raw = node.attrs.get("timeout")
    if raw is None:
        return None
    if not _JAVA_DOUBLE.fullmatch(raw.strip()):
        raise reader.fail(node, f"Timeout should be a valid number as it represents number of minutes "
                                f"(timeout={raw!r})")
    if float(raw.strip().rstrip("fFdD").replace("Infinity", "inf")) < 0:
        raise reader.fail(node, f"Timeout cannot be a negative number as it represents number of minutes "
                                f"(timeout={raw!r})")
    if not re.fullmatch(r"[+-]?\d+", raw):
        raise reader.fail(node, f"timeout={raw!r}: GoCD's config check accepts it, but its server reads job "
                                "timeouts as whole minutes (Long.parseLong) and its check for hung jobs then fails "
                                "for every job; use a whole number of minutes (a rehearsal check, stricter than "
                                "GoCD's config load)")
    return int(raw)


@dataclass(frozen=True)
class _Where:
    """The pipeline, stage and job a task belongs to (GoCD's messages name all three)."""

    pipeline: str
    stage: str
    job: str


def _task(reader: _Reader, node: _Node, where: _Where) -> Task:
    if node.tag == "exec":
        return _exec(reader, node, where)
    if node.tag == "fetchartifact":
        return _fetch(reader, node, where)
    raise reader.unsupported(node, _WHY.get(node.tag, _TASKS_HINT))


def _runif(reader: _Reader, node: _Node) -> frozenset[str]:
    values = set()
    for runif in node.kids("runif"):
        status = reader.attr(runif, "status")
        if status not in RUNIF_VALUES:
            raise reader.fail(runif, f"status must be one of {', '.join(RUNIF_VALUES)}, got {status!r}")
        values.add(status)
    return frozenset(values or {"passed"})


def _exec(reader: _Reader, node: _Node, where: _Where) -> ExecTask:
    reader.only(node, ("arg", "runif"))
    command = node.attrs.get("command", "")
    if not command.strip():
        raise reader.fail(node, "Command cannot be empty")
    if node.attrs.get("args", "").strip():
        raise reader.unsupported(node, "the 'args' attribute: its quoting differs between agents; "
                                       "write one <arg> element per argument")
    workingdir = node.attrs.get("workingdir") or None  # as written: the schema's pattern refuses outer blanks
    if workingdir:
        _path_type(reader, node, workingdir)
        if not _inside_working_dir(workingdir):
            raise reader.fail(node, f"The path of the working directory for the custom command in job '{where.job}' "
                                    f"in stage '{where.stage}' of pipeline '{where.pipeline}' is outside the agent "
                                    "sandbox. It must be relative to the directory where the agent checks out "
                                    "materials.")
    return ExecTask(command=command.strip(), args=tuple(a.text for a in node.kids("arg")), workingdir=workingdir,
                    runif=_runif(reader, node), line=node.line)


def _fetch(reader: _Reader, node: _Node, where: _Where) -> FetchTask:
    """The attributes as written; what they may name is checked once every pipeline is read (_check_fetch)."""
    reader.only(node, ("runif",))
    origin = node.attrs.get("artifactOrigin", "gocd")
    if origin != "gocd":
        raise reader.unsupported(node, f"artifactOrigin={origin!r}: only GoCD's own artifact store is emulated")
    for attr, message in (("stage", "Stage is a required field."), ("job", "Job is a required field.")):
        if not node.attrs.get(attr, "").strip():
            raise reader.fail(node, message)
    srcdir, srcfile = node.attrs.get("srcdir", ""), node.attrs.get("srcfile", "")  # as written (see _exec)
    if srcdir and srcfile:
        raise reader.fail(node, "Only one of srcfile or srcdir is allowed at a time")
    return FetchTask(stage=node.attrs["stage"].strip(), job=node.attrs["job"].strip(), source=srcdir or srcfile,
                     is_dir=bool(srcdir), dest=node.attrs.get("dest", ""), runif=_runif(reader, node),
                     line=node.line, pipeline=node.attrs.get("pipeline", "").strip())


def _artifacts(reader: _Reader, job: _Node) -> tuple[Artifact, ...]:
    """``src`` is free text for GoCD (an ant pattern, matched at run time under the working directory); ``dest``
    must have the schema's filePathType shape. Whether either escapes is found at run time, as on GoCD."""
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
        src = node.attrs.get("src", "").strip().replace("\\", "/")
        if not src:
            raise reader.fail(node, f"Job '{job.attrs.get('name', '')}' has an artifact with an empty source")
        dest = node.attrs.get("dest", "")
        if dest:
            _path_type(reader, node, dest)
        dest = dest.replace("\\", "/")
        out.append(Artifact(src=src, dest=posixpath.normpath(dest) if dest else "", line=node.line))
    return tuple(out)


def _path_type(reader: _Reader, node: _Node, value: str) -> None:
    """The schema's ``filePathType`` (GoCD validates the XML against its XSD first; Xerces' message)."""
    if not _file_path_type(value):
        raise reader.fail(node, f"Value '{value}' is not facet-valid with respect to pattern '{_FILE_PATH_TYPE}' "
                                "for type 'filePathType'.")


def _file_path_type(value: str) -> bool:
    return re.fullmatch(_FILE_PATH_TYPE, value) is not None


def _inside_working_dir(path: str) -> bool:
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


def _check_fetches(reader: _Reader, pipeline: Pipeline, pipelines: list[Pipeline]) -> Pipeline:
    """Each fetch checked as GoCD's server does (AbstractFetchTask.validateTask, then FetchTask's paths). The
    pipeline returned spells stage and job names as the stage and job do (the artifact folders' names), and
    carries a note for each fetched path the other job does not visibly publish (GoCD finds that at run time)."""
    stages, notes = [], list(pipeline.notes)
    for stage in pipeline.stages:
        jobs = []
        for job in stage.jobs:
            where = _Where(pipeline.name, stage.name, job.name)
            tasks = tuple(_check_fetch(reader, pipeline, where, task, pipelines, notes)
                          if isinstance(task, FetchTask) else task for task in job.tasks)
            jobs.append(replace(job, tasks=tasks))
        stages.append(replace(stage, jobs=tuple(jobs)))
    return replace(pipeline, stages=tuple(stages), notes=tuple(notes))


def _check_fetch(reader: _Reader, pipeline: Pipeline, where: _Where, task: FetchTask, pipelines: list[Pipeline],
                 notes: list[str]) -> FetchTask:
    node = _Node("fetchartifact", {}, task.line)
    me = f'"{where.pipeline} :: {where.stage} :: {where.job}" tries to fetch artifact from'
    path = task.pipeline or pipeline.name
    ancestor = path.split("/")[0]
    source = next((p for p in pipelines if p.name.lower() == ancestor.lower()), None)
    if source is None:
        raise reader.fail(node, f'{me} pipeline "{ancestor}" which does not exist.')
    stage = source.stage(task.stage)
    if stage is None:
        raise reader.fail(node, f'{me} stage "{ancestor} :: {task.stage}" which does not exist.')
    job = next((j for j in stage.jobs if j.name.lower() == task.job.lower()), None)
    if job is None:
        raise reader.fail(node, f'{me} job "{ancestor} :: {task.stage} :: {task.job}" which does not exist.')
    if "/" in path:  # a path of ancestors: the rehearsed pipeline has no dependency material, so no ancestors
        raise reader.fail(node, f"Pipeline named '{path.split('/')[-1]}' exists, but is not an ancestor of "
                                f"'{pipeline.name}' as declared in '{path}'."
                          if any(p.name.lower() == path.split("/")[-1].lower() for p in pipelines) else
                          f"Pipeline named '{path.split('/')[-1]}' which is declared ancestor of '{pipeline.name}' "
                          f"through path '{path}' does not exist.")
    if path.lower() != pipeline.name.lower():
        raise reader.fail(node, f'Pipeline "{pipeline.name}" tries to fetch artifact from pipeline "{path}" which '
                                "is not an upstream pipeline")
    earlier = [s.name.lower() for s in pipeline.stages[:[s.name for s in pipeline.stages].index(where.stage)]]
    if stage.name.lower() not in earlier:
        raise reader.fail(node, f'{me} its stage "{task.stage}" which does not complete before the current stage '
                                f'"{where.stage}".')
    if not task.source:
        raise reader.fail(node, "Should provide either srcdir or srcfile")
    for kind, value in (("src", task.source), ("dest", task.dest)):
        if value:
            _path_type(reader, node, value)
            if not _inside_working_dir(value):
                raise reader.fail(node, f"Task of job '{where.job}' in stage '{where.stage}' of pipeline "
                                        f"'{where.pipeline}' has {kind} path '{value}' which is outside the working "
                                        "directory.")
    found = replace(task, stage=stage.name, job=job.name, source=posixpath.normpath(task.source.replace("\\", "/")),
                    dest=posixpath.normpath(task.dest.replace("\\", "/")) if task.dest else "")
    if not _published(job, found.source):
        published = [a.published_path() or f"{a.src} -> {a.dest or '.'}" for a in job.artifacts]
        notes.append(f"line {task.line}: {where.stage}/{where.job} fetches {found.source!r} from "
                     f"{stage.name}/{job.name}, which publishes {', '.join(published) or 'nothing'}: on GoCD that "
                     "fetch fails at run time")
    return found


def _published(job: Job, wanted: str) -> bool:
    """Whether fetching ``wanted`` can find something the job publishes (a wildcard: only known at run time)."""
    if any(a.has_wildcard for a in job.artifacts):
        return True
    return any(_covers(p, wanted) for p in (a.published_path() for a in job.artifacts) if p is not None)


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
