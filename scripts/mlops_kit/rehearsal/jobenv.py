"""A job's environment, as a GoCD agent builds it: agent < environment < pipeline < stage < job variables, then
the ``GO_*`` variables GoCD gives every task; plus what a local rehearsal changes (``--env``, the tracking URI and
venv root meant for the agents, the toolkit's Python first on ``PATH``).

Secure variables have no readable value in the XML: a rehearsal takes them from this machine (``--env NAME=VALUE``
or the environment) and the log shows them masked, as GoCD does: their values (and those of secret-looking names)
are masked in every line a job prints too (:func:`secret_values`, registered with :mod:`mlops_kit.core.redact`).
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from pathlib import Path
from typing import Mapping

from ..core import paths
from ..core.console import Echo
from ..core.errors import BadInput
from ..core.redact import MASK, is_secret_name, redact
from ..run.runrecord import current_user
from . import gocd

LOCAL_SERVER_URL = "https://localhost:8154/go"  # never contacted: GoCD tools only read it


def job_environment(pipeline: gocd.Pipeline, stage: gocd.Stage, job: gocd.Job, *, base: Mapping[str, str],
                    go_vars: Mapping[str, str], overrides: Mapping[str, str | None], toolkit_bin: Path,
                    echo: Echo) -> dict[str, str]:
    """Agent env < environment < pipeline < stage < job variables < local overrides; then GO_* and PATH."""
    # the caller's own GO_* (a rehearsal inside a GoCD job) would pose as this run's: only go_vars below count
    env = {k: v for k, v in base.items() if not k.upper().startswith("GO_")}
    secure = {v.name.upper() for v in all_variables(pipeline) if v.secure}
    for level in (pipeline.environment_variables, pipeline.variables, stage.variables, job.variables):
        for var in level:
            value = _variable_value(var, base, pipeline, overrides)
            verb = "overriding" if _pop(env, var.name) is not None else "setting"
            echo(f"[go] {verb} environment variable '{var.name}' to value '{_shown(var.name, value, var.secure)}'\n")
            env[var.name] = value
    for name, override in overrides.items():
        old = _pop(env, name)
        if override is None:
            if old is not None:
                echo(f"[local] removing environment variable '{name}' (the XML's value is for GoCD agents)\n")
        else:
            verb = "overriding" if old is not None else "setting"
            shown = _shown(name, override, name.upper() in secure)
            echo(f"[local] {verb} environment variable '{name}' to value '{shown}'\n")
            env[name] = override
    for name, value in go_vars.items():
        _pop(env, name)
        env[name] = value
    path = _pop(env, "PATH")
    env["Path" if paths.is_windows() else "PATH"] = os.pathsep.join(
        [str(toolkit_bin), *([path] if path else [])])
    return env


def _pop(env: dict[str, str], name: str) -> str | None:
    """Remove ``name`` (any case on Windows, where variable names are case-insensitive); return its value."""
    keys = [k for k in env if (k.upper() == name.upper() if paths.is_windows() else k == name)]
    values = [env.pop(k) for k in keys]
    return values[0] if values else None


def _shown(name: str, value: str, secure: bool) -> str:
    """What the log may show: secure or secret-looking variables masked, passwords in URLs hidden."""
    if secure or is_secret_name(name):
        return MASK
    return redact(value)


def _variable_value(var: gocd.Variable, base: Mapping[str, str], pipeline: gocd.Pipeline,
                    overrides: Mapping[str, str | None]) -> str:
    """A secure variable's value comes from this machine: ``--env NAME=VALUE`` (which wins anyway), else the
    environment."""
    if not var.secure:
        return var.value or ""
    if overrides.get(var.name) is not None:
        return overrides[var.name] or ""
    if var.name in base:
        return base[var.name]
    raise BadInput(f"{pipeline.source}: secure variable '{var.name}' has no readable value in the XML: "
                   f"set {var.name} in your environment (or pass --env {var.name}=VALUE) for a local run")


def go_variables(pipeline: gocd.Pipeline, *, counter: int, label: str, revision: str, stage: str,
                 job: str) -> dict[str, str]:
    """The variables GoCD gives every task (docs: configuration reference, <tasks>)."""
    env = {
        "GO_SERVER_URL": LOCAL_SERVER_URL, "GO_PIPELINE_NAME": pipeline.name, "GO_PIPELINE_GROUP_NAME": pipeline.group,
        "GO_PIPELINE_COUNTER": str(counter), "GO_PIPELINE_LABEL": label, "GO_STAGE_NAME": stage,
        "GO_STAGE_COUNTER": "1", "GO_JOB_NAME": job, "GO_TRIGGER_USER": current_user() or "anonymous",
        "GO_REVISION": revision,
    }
    if pipeline.material.name:
        suffix = re.sub(r"[^A-Za-z0-9]", "_", pipeline.material.name).upper()
        env.update({f"GO_REVISION_{suffix}": revision, f"GO_TO_REVISION_{suffix}": revision,
                    f"GO_FROM_REVISION_{suffix}": revision, f"GO_MATERIAL_BRANCH_{suffix}": pipeline.material.branch})
    return env


def rehearsal_origin(state_dir: Path) -> str:
    """Tells this machine's rehearsals (this state folder) apart from GoCD's and other clones' runs of the same
    counter when they log to one tracking server (see ``tracking.pipeline_key``)."""
    where = f"{socket.gethostname()}|{state_dir.resolve()}"
    return "local-" + hashlib.sha256(where.encode()).hexdigest()[:10]


def plain_values(variables: tuple[gocd.Variable, ...]) -> dict[str, str]:
    return {v.name: v.value or "" for v in variables if not v.secure}


def all_variables(pipeline: gocd.Pipeline) -> list[gocd.Variable]:
    levels = [pipeline.environment_variables, pipeline.variables]
    levels += [s.variables for s in pipeline.stages] + [j.variables for s in pipeline.stages for j in s.jobs]
    return [var for level in levels for var in level]


def check_secure_variables(pipeline: gocd.Pipeline, base: Mapping[str, str],
                            overrides: Mapping[str, str | None]) -> None:
    """Refuse before anything runs if a secure variable has no value on this machine (environment or --env)."""
    for var in all_variables(pipeline):
        _variable_value(var, base, pipeline, overrides)


def secret_values(pipeline: gocd.Pipeline, base: Mapping[str, str],
                  overrides: Mapping[str, str | None]) -> list[str]:
    """The values a job's console must never show: every secure variable's (as this machine gives it) and every
    variable's whose name looks secret (``DB_PASSWORD`` in plain text in the XML is still a password)."""
    return [_variable_value(var, base, pipeline, overrides) for var in all_variables(pipeline)
            if var.secure or is_secret_name(var.name)]
