"""GoCD's artifact rules, locally: what a job publishes (``<artifact src dest>``, ant-style wildcards) and what a
later job fetches (``<fetchartifact>``), in a local store laid out like the server's
(``<store>/<stage>/1/<job>/<path>``).

What GoCD's server does not check when it loads a config fails here at run time, as on an agent, with GoCD's words:
an artifact ``src`` is matched under the working directory only (``../x`` or ``/abs/x`` match nothing: "The rule
[...] cannot match any resource under [...]"), an artifact ``dest`` leading out of the job's artifact folder is
refused like the server refuses the upload ("Artifact path [...] is illegal..."), a fetched path the other job did
not publish fails the fetch ("Giving up fetching resource...": GoCD retries 4 times first; a local copy does not).
"""

from __future__ import annotations

import posixpath
import re
import shutil
from pathlib import Path

from ..core.console import Echo
from . import gocd


def run_fetch(task: gocd.FetchTask, *, workdir: Path, store: Path, echo: Echo) -> bool:
    """Copy an earlier job's artifact into the working directory, as GoCD's fetch does."""
    source = store / task.stage / "1" / task.job / task.source
    target_dir = workdir / task.dest if task.dest else workdir
    if task.is_dir and not source.is_dir() or not task.is_dir and not source.is_file():
        echo(f"[go] Giving up fetching resource '{task.stage}/1/{task.job}/{task.source}': "
             f"{task.describe()} found nothing (looked for {source})\n")
        return False
    target_dir.mkdir(parents=True, exist_ok=True)
    target = target_dir / posixpath.basename(task.source)
    if task.is_dir:
        shutil.copytree(source, target, dirs_exist_ok=True)
    else:
        shutil.copy2(source, target)
    echo(f"[go] fetched {task.stage}/{task.job}/{task.source} -> {target.relative_to(workdir).as_posix()}\n")
    return True


def ant_regex(pattern: str) -> re.Pattern[str]:
    """GoCD's ant-style wildcards: ``**`` any number of folders, ``*`` any name part, ``?`` one character."""
    parts = pattern.strip("/").split("/")
    out = ""
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        if part == "**":
            out += ".*" if last else "(?:[^/]+/)*"
            continue
        out += "".join("[^/]*" if c == "*" else "[^/]" if c == "?" else re.escape(c) for c in part)
        out += "" if last else "/"
    return re.compile(out + r"\Z")


def artifact_targets(artifact: gocd.Artifact, workdir: Path) -> list[tuple[Path, str]]:
    """``(source path, destination inside the job's artifacts)`` pairs, following GoCD's ArtifactPlan rules.

    A plain ``src`` (file or folder) lands as ``dest/<its name>``. With wildcards every matching file keeps its
    folders below the pattern's fixed prefix: ``src="test/**/*.log" dest="logs"`` puts test/a/b/x.log at
    ``logs/a/b/x.log``.
    """
    if not artifact.has_wildcard:
        path = workdir / artifact.src
        inside = path.resolve().is_relative_to(workdir.resolve())  # GoCD scans under the working directory only
        return [(path, artifact.published_path() or path.name)] if inside and path.exists() else []
    regex = ant_regex(posixpath.normpath(artifact.src))
    segments = posixpath.normpath(artifact.src).split("/")
    prefix = "/".join(s for s in segments[: next(i for i, s in enumerate(segments) if "*" in s or "?" in s)])
    found = []
    for file in sorted(p for p in workdir.rglob("*") if p.is_file()):
        rel = file.relative_to(workdir).as_posix()
        if regex.match(rel):
            parent = posixpath.dirname(rel)
            below = parent[len(prefix):].lstrip("/") if prefix and parent.startswith(prefix) else parent
            found.append((file, posixpath.join(artifact.dest, below, file.name) if artifact.dest or below
                          else file.name))
    return found


def publish_artifacts(job: gocd.Job, *, workdir: Path, target: Path, job_passed: bool, echo: Echo) -> bool:
    """Upload (copy) a job's artifacts; GoCD does this after the tasks whatever their result."""
    ok = True
    for artifact in job.artifacts:
        pairs = artifact_targets(artifact, workdir)
        if not pairs:
            echo(f"[go] The rule [{artifact.src}] cannot match any resource under [{workdir}]\n")
            ok = False
            continue
        illegal = [dest for _, dest in pairs if not (target / dest).resolve().is_relative_to(target.resolve())]
        if illegal:
            echo(f"[go] Artifact path [{illegal[0]}] is illegal. Path must be inside the artifact directory.\n")
            ok = False
            continue
        for path, dest in pairs:
            out = (target / dest).resolve()
            out.parent.mkdir(parents=True, exist_ok=True)
            if path.is_dir():
                shutil.copytree(path, out, dirs_exist_ok=True)
            else:
                shutil.copy2(path, out)
        echo(f"[go] published artifact [{artifact.src}] -> [{artifact.dest or '.'}]\n")
    return ok or not job_passed  # a missing artifact fails a passing job; a failed job stays failed
