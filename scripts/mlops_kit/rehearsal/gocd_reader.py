"""Reading a GoCD config (``<cruise schemaVersion="139">``) into the rehearsal's typed records, strictly.

The order is GoCD's: the file is parsed and validated against GoCD's schema (:mod:`~mlops_kit.rehearsal.gocd_xml`),
``#{param}`` pipeline parameters are substituted, then each element becomes a record while the server's own rules
(:mod:`~mlops_kit.rehearsal.gocd_rules`) are checked. The rehearsal must run exactly what GoCD would run, so what it
cannot emulate (other task kinds, dependencies, templates, elastic agents...) is refused up front with one line
naming the element, its line and column, before a single task runs; what only matters to the server (agents'
resources, security, tabs, tracking tools, timers...) is read or skipped, not refused.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Iterable, cast

from ..core.errors import BadInput
from ..core.userfile import read_input_bytes
from . import gocd, gocd_rules
from .gocd_rules import TaskOwner
from .gocd_xml import Element, read_config, refusal

_PARAM_TOKEN = re.compile(r"##|#\{([^}]*)\}")
_TASKS_HINT = "the local runner runs <exec> and <fetchartifact> tasks; call the tool from an <exec>"
_WHY = {
    "ant": _TASKS_HINT, "nant": _TASKS_HINT, "rake": _TASKS_HINT, "task": f"plugin task; {_TASKS_HINT}",
    "dependencies": "dependencies on other pipelines are not emulated",
    "oncancel": "cancelling is not emulated (Ctrl-C stops the local run)",
    "configuration": "external (plugin) artifacts are not emulated",
}


def load_config(path: Path | str) -> list[gocd.Pipeline]:
    """Read ``path`` and return its pipelines, or raise :class:`BadInput` naming what is wrong or unsupported."""
    path = Path(path)
    return parse_config(read_input_bytes(path, "GoCD config"), source=path)


def parse_config(data: bytes | str, *, source: Path) -> list[gocd.Pipeline]:
    """Parse config XML ``data`` (bytes are decoded as the XML declares); ``source`` is used in messages."""
    root = read_config(data, source)
    reader = _Reader(source)
    env_vars = _environment_variables(reader, root)
    pipelines = []
    named: list[tuple[str, Element]] = []
    for group in root.children("pipelines"):
        for element in group.children("pipeline"):
            pipelines.append(_pipeline(reader, element, group.get("group", "defaultGroup"), env_vars))
            named.append((pipelines[-1].name, element))
    if not pipelines:
        raise BadInput(f"{source}: no <pipeline> found inside <pipelines>")
    gocd_rules.check_unique(source, named, lambda name: gocd_rules.DUPLICATE_PIPELINE.format(name, source.name))
    return [gocd_rules.check_fetches(p, pipelines) for p in pipelines]


class _Reader:
    """Walks the validated tree; every refusal names the file, the line, the column and the element."""

    def __init__(self, source: Path) -> None:
        self.source = source

    def fail(self, element: Element, problem: str) -> BadInput:
        return refusal(self.source, element.tag, element.line, element.column, problem)

    def unsupported(self, element: Element, why: str) -> BadInput:
        return self.fail(element, f"not supported by the local runner ({why})")

    def refuse_children(self, element: Element, tags: Iterable[str]) -> None:
        """Children the schema allows but the rehearsal cannot emulate."""
        for child in element:
            if child.tag in tags:
                raise self.unsupported(cast(Element, child), _WHY[child.tag])


def _boolean(element: Element, name: str, default: bool) -> bool:
    """An ``xs:boolean`` attribute (the schema has checked it is true, false, 1 or 0)."""
    value = element.get(name)
    return default if value is None else value.strip() in ("true", "1")


def _environment_variables(reader: _Reader, root: Element) -> dict[str, tuple[gocd.Variable, ...]]:
    """``<environments>``: variables an environment gives to the pipelines it lists (lowest precedence)."""
    result: dict[str, tuple[gocd.Variable, ...]] = {}
    for environments in root.children("environments"):
        for environment in environments.children("environment"):
            variables = _variables(reader, environment, f"environment '{environment.get('name', '')}'")
            for listed in environment.children("pipelines"):
                for pipeline in listed.children("pipeline"):
                    result[pipeline.get("name", "").lower()] = variables
    return result


def _pipeline(reader: _Reader, element: Element, group: str,
              env_vars: dict[str, tuple[gocd.Variable, ...]]) -> gocd.Pipeline:
    name = element.get("name", "")
    if element.get("template"):
        raise reader.unsupported(element, f"pipeline {name!r} uses template {element.get('template')!r}; "
                                          "inline the stages to rehearse it")
    reader.refuse_children(element, ("dependencies",))
    _substitute_params(reader, element)
    notes = ["ignored <timer>: a local run is a manual trigger"] if element.child("timer") is not None else []
    stage_elements = element.children("stage")
    gocd_rules.check_has_stages(reader.source, element, len(stage_elements))
    stages = tuple(_stage(reader, s, index, name) for index, s in enumerate(stage_elements))
    gocd_rules.check_unique(reader.source, zip((s.name for s in stages), stage_elements, strict=True),
                            gocd_rules.DUPLICATE_STAGE.format)
    material = _material(reader, element)
    label = element.get("labeltemplate", "${COUNT}")
    gocd_rules.check_label(reader.source, element, label, material.name, name)
    return gocd.Pipeline(name=name, group=group, label_template=label,
                         variables=_variables(reader, element, f"pipeline '{name}'"),
                         environment_variables=env_vars.get(name.lower(), ()), material=material, stages=stages,
                         source=reader.source, notes=tuple(notes), line=element.line, column=element.column)


def _substitute_params(reader: _Reader, pipeline: Element) -> None:
    """GoCD's ``#{name}`` pipeline parameters, replaced everywhere inside the pipeline (``##`` is a literal #).
    As on GoCD, after the schema validation: the schema sees ``#{name}`` as written."""
    params: dict[str, str] = {}
    for block in pipeline.children("params"):
        params.update({p.get("name", ""): p.content for p in block.children("param")})

    def substituted(element: Element, text: str) -> str:
        def one(match: re.Match[str]) -> str:
            if match.group(0) == "##":
                return "#"
            if match.group(1) not in params:
                raise reader.fail(element, f"parameter #{{{match.group(1)}}} is not defined in <params>")
            return params[match.group(1)]

        return _PARAM_TOKEN.sub(one, text)

    def walk(element: Element) -> None:
        for key, value in element.attrib.items():
            element.set(key, substituted(element, value))
        if element.text:
            element.text = substituted(element, element.text)
        for child in element:
            if child.tag != "params":
                walk(cast(Element, child))

    walk(pipeline)


def _variables(reader: _Reader, element: Element, owner: str) -> tuple[gocd.Variable, ...]:
    """One level's ``<environmentvariables>``; ``owner`` as GoCD names it in messages (``job 'train'``)."""
    block = element.child("environmentvariables")
    if block is None:
        return ()
    found = []
    for variable in block.children("variable"):
        gocd_rules.check_variable_name(reader.source, variable, owner)
        secure = _boolean(variable, "secure", False) or variable.child("encryptedValue") is not None
        value = variable.child("value")
        found.append(gocd.Variable(variable.get("name", ""), None if secure else value.content if value is not None
                                   else "", secure))
    gocd_rules.check_unique(reader.source, zip((v.name for v in found), block.children("variable"), strict=True),
                            lambda name: gocd_rules.DUPLICATE_VARIABLE.format(name, owner))
    return tuple(found)


def _material(reader: _Reader, pipeline: Element) -> gocd.Material:
    materials = pipeline.child("materials")
    assert materials is not None, "the schema requires <materials>"
    first = cast(Element, materials[0])
    if len(materials) != 1 or first.tag != "git":
        other = next((cast(Element, m) for m in materials if m.tag != "git"), first)
        raise reader.unsupported(other, "the local runner stands in for exactly one <git> material, "
                                        "the repository it runs from")
    gocd_rules.check_material(reader.source, first)
    dest = first.get("dest", "")
    return gocd.Material(url=first.get("url", "").strip(), branch=first.get("branch", "master"),
                         name=first.get("materialName") or dest or None, dest=dest)


def _stage(reader: _Reader, element: Element, index: int, pipeline: str) -> gocd.Stage:
    name = element.get("name", "")
    approval = element.child("approval")
    if approval is not None and approval.get("type") == "manual" and index > 0:
        raise reader.unsupported(approval, f"stage {name!r} waits for a manual approval; a local run does not "
                                           "pause: remove it or rehearse the stages before it")
    job_elements = [job for block in element.children("jobs") for job in block.children("job")]
    jobs = [_job(reader, job, (pipeline, name)) for job in job_elements]
    gocd_rules.check_unique(reader.source, zip((j.name for j in jobs), job_elements, strict=True),
                            gocd_rules.DUPLICATE_JOB.format)
    return gocd.Stage(name=name, jobs=tuple(jobs), variables=_variables(reader, element, f"stage '{name}'"),
                      fetch_materials=_boolean(element, "fetchMaterials", True), line=element.line,
                      clean_working_dir=_boolean(element, "cleanWorkingDir", False))


def _job(reader: _Reader, element: Element, where: tuple[str, str]) -> gocd.Job:
    """A job; ``where`` is (pipeline, stage), for GoCD's messages about its tasks."""
    name = element.get("name", "")
    if element.get("runInstanceCount"):
        raise reader.unsupported(element, f"job {name!r}: runInstanceCount (one instance per job runs locally)")
    if element.get("elasticProfileId"):
        raise reader.unsupported(element, f"job {name!r}: elastic agents")
    timeout = gocd_rules.job_timeout(reader.source, element)
    owner = TaskOwner(*where, name)
    tasks_block = element.child("tasks")
    tasks = tuple(_task(reader, cast(Element, t), owner) for t in tasks_block) if tasks_block is not None else ()
    resources = element.child("resources")
    return gocd.Job(name=name, tasks=tasks, artifacts=_artifacts(reader, element),
                    variables=_variables(reader, element, f"job '{name}'"),
                    resources=tuple(r.content.strip() for r in resources.children("resource"))
                    if resources is not None else (),
                    line=element.line, timeout=timeout, column=element.column)


def _task(reader: _Reader, element: Element, owner: TaskOwner) -> gocd.Task:
    if element.tag == "exec":
        return _exec(reader, element, owner)
    if element.tag == "fetchartifact":
        return _fetch(reader, element)
    raise reader.unsupported(element, _WHY.get(element.tag, _TASKS_HINT))


def _runif(element: Element) -> frozenset[gocd.RunIf]:
    statuses = {cast(gocd.RunIf, runif.get("status")) for runif in element.children("runif")}
    return frozenset(statuses or {"passed"})


def _exec(reader: _Reader, element: Element, owner: TaskOwner) -> gocd.ExecTask:
    reader.refuse_children(element, ("oncancel",))
    if element.get("args", "").strip():
        raise reader.unsupported(element, "the 'args' attribute: its quoting differs between agents; "
                                          "write one <arg> element per argument")
    gocd_rules.check_workingdir(reader.source, element, owner)
    return gocd.ExecTask(command=element.get("command", ""), args=tuple(a.content for a in element.children("arg")),
                         workingdir=element.get("workingdir") or None, runif=_runif(element), line=element.line,
                         column=element.column)


def _fetch(reader: _Reader, element: Element) -> gocd.FetchTask:
    """The attributes as written; what they may name is checked once every pipeline is read
    (:func:`gocd_rules.check_fetches`)."""
    reader.refuse_children(element, ("oncancel", "configuration"))
    if element.get("artifactOrigin") != "gocd":
        raise reader.unsupported(element, f"artifactOrigin={element.get('artifactOrigin')!r}: only GoCD's own "
                                          "artifact store is emulated")
    gocd_rules.check_fetch_attributes(reader.source, element)
    srcdir, srcfile = element.get("srcdir", ""), element.get("srcfile", "")
    return gocd.FetchTask(stage=element.get("stage", "").strip(), job=element.get("job", "").strip(),
                          source=srcdir or srcfile, is_dir=bool(srcdir), dest=element.get("dest", ""),
                          runif=_runif(element), line=element.line, pipeline=element.get("pipeline", "").strip(),
                          column=element.column)


def _artifacts(reader: _Reader, job: Element) -> tuple[gocd.Artifact, ...]:
    """``src`` is free text for GoCD (an ant pattern, matched at run time under the working directory); the schema
    has checked ``dest``'s shape. Whether either escapes is found at run time, as on GoCD."""
    block = job.child("artifacts")
    if block is None:
        return ()
    found = []
    for element in block.children("artifact"):
        reader.refuse_children(element, ("configuration",))
        if element.get("type") == "external":
            raise reader.unsupported(element, "type='external': only build and test artifacts are emulated")
        gocd_rules.check_artifact_source(reader.source, element, job.get("name", ""))
        src = element.get("src", "").strip().replace("\\", "/")
        dest = element.get("dest", "").replace("\\", "/")
        found.append(gocd.Artifact(src=src, dest=posixpath.normpath(dest) if dest else "", line=element.line,
                                   column=element.column))
    return tuple(found)
