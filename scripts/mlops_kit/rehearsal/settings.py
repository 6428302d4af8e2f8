"""How this machine differs from a GoCD agent: where the repository and the state folder are, which values of the
XML (meant for the agents) a local run replaces, and the server-wide defaults (job timeout, cancel grace, pruning).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from ..core import git, paths
from ..core.errors import BadInput


@dataclass(frozen=True)
class LocalSettings:
    """How this machine differs from a GoCD agent: where things live and what overrides the XML's values."""

    source: Path  # the repository that stands in for the git material
    state_dir: Path
    shared_workdir: bool = False
    overrides: Mapping[str, str | None] = field(default_factory=dict)  # None = remove from the job environment
    toolkit_bin: Path = Path(sys.executable).parent
    job_timeout: float = 0.0  # minutes without output, for jobs without a timeout (GoCD's server default); 0 = never
    kill_grace: float = 10.0  # seconds between SIGTERM and SIGKILL when a job is cancelled
    keep: int | None = 5  # runs kept in the state folder per pipeline; None = keep all


def locate(source: Path | None, config: Path | None) -> tuple[Path, Path]:
    """(repository, config): explicit values first, then the git work tree, then the current folder."""
    if source is None:
        start = config.resolve().parent if config is not None else Path.cwd()
        source = git.toplevel(start) or Path.cwd()
    source = source.resolve()
    if not source.is_dir():
        raise BadInput(f"--source {source}: not a folder")
    config = (config or source / "gocd" / "pipeline_config.xml").resolve()
    return source, config


def local_overrides(source: Path, *, tracking_uri: str | None, venv_root: Path | None,
                    env: list[str]) -> dict[str, str | None]:
    """Local values replacing the XML's agent-side ones (None = drop, so the tools use their own default)."""
    tracking = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or local_tracking_uri(source)
    explicit_root = venv_root or os.environ.get("ML_VENV_ROOT", "").strip()
    overrides: dict[str, str | None] = {
        "MLFLOW_TRACKING_URI": tracking,
        "ML_VENV_ROOT": str(paths.venv_root(explicit_root)) if explicit_root else None,
    }
    for item in env:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise BadInput(f"--env {item!r}: expected NAME=VALUE")
        overrides[name.strip()] = value
    return overrides


def local_tracking_uri(source: Path) -> str:
    """The embedded default: a SQLite store in the repository (absolute, so every working copy shares it)."""
    return f"sqlite:///{(source / 'mlflow.db').as_posix()}"
