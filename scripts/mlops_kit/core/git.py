"""Everything the toolkit asks git, through one runner: a missing git, a folder outside any repository or a git
error is an answer (``None``, ``"unknown"``), never a failure: git is optional for every tool.

Outside a checkout (a GoCD fetch-only job, a rehearsal's copy of the repository that the repository ignores) the
commit that ran is the material revision GoCD passes in ``GO_REVISION*`` (:func:`gocd_revision`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from . import proc

TOOLKIT_ROOT = Path(__file__).resolve().parents[3]


def _git(folder: Path | str, *args: str, timeout: float = 60) -> str | None:
    """stdout of ``git -C folder args`` (stripped), or ``None`` when git is missing or fails."""
    try:
        result = proc.run(["git", "-C", str(folder), *args], check=False, timeout=timeout)
    except proc.CommandError:
        return None
    return result.stdout.strip() if result.returncode == 0 else None


def toplevel(folder: Path) -> Path | None:
    """The work tree holding ``folder``, or ``None``."""
    found = _git(folder, "rev-parse", "--show-toplevel")
    return Path(found) if found else None


def head(folder: Path) -> str | None:
    """The commit checked out in the repository holding ``folder``."""
    return _git(folder, "rev-parse", "HEAD") or None


def has_local_changes(folder: Path) -> bool:
    """True when the work tree differs from HEAD (tracked or untracked-not-ignored files)."""
    return bool(_git(folder, "status", "--porcelain"))


def listed_files(folder: Path) -> list[str] | None:
    """What a fresh checkout would hold: tracked plus untracked-not-ignored files; ``None`` outside git."""
    out = _git(folder, "ls-files", "-z", "--cached", "--others", "--exclude-standard", timeout=120)
    return None if out is None else [name for name in out.split("\0") if name]


def show(folder: Path, commit: str, path: str) -> str | None:
    """The text of ``path`` as committed in ``commit`` (``git show <commit>:<path>``), or ``None`` (no such
    repository, commit or file)."""
    if not commit or commit == "unknown" or not path:
        return None
    try:
        result = proc.run(["git", "-C", str(folder), "show", f"{commit}:{path}"], check=False, timeout=60)
    except proc.CommandError:
        return None
    return result.stdout if result.returncode == 0 else None


def toolkit_sha() -> str:
    """The toolkit checkout's commit, or ``unknown`` (not a git checkout, or git not installed)."""
    if not (TOOLKIT_ROOT / ".git").exists():
        return "unknown"
    return head(TOOLKIT_ROOT) or "unknown"


@dataclass(frozen=True)
class SourceInfo:
    """The code a run used: commit, branch and dirty flag (``unknown`` when they cannot be known)."""

    commit: str = "unknown"
    branch: str = "unknown"
    dirty: str = "unknown"
    root: Path | None = None


def source_info(path: Path, env: Mapping[str, str] | None = None) -> SourceInfo:
    """Commit, branch and dirty flag of the repository holding ``path``; outside git (or in a folder the repository
    ignores, such as a rehearsal's copy under ``.pipeline/``) the revision GoCD passes, else ``unknown``."""
    folder = path if path.is_dir() else path.parent
    root = toplevel(folder)
    if root is None or _git(folder, "check-ignore", "-q", str(path)) is not None:
        return gocd_revision(os.environ if env is None else env)
    status = _git(folder, "status", "--porcelain", "--untracked-files=no")
    return SourceInfo(commit=head(folder) or "unknown",
                      branch=_git(folder, "rev-parse", "--abbrev-ref", "HEAD") or "unknown",
                      dirty="unknown" if status is None else str(bool(status)), root=root)


def gocd_revision(env: Mapping[str, str]) -> SourceInfo:
    """The material revision GoCD passes (``GO_REVISION`` or the one ``GO_REVISION_<material>``); the dirty flag
    cannot be known there."""
    def only(prefix: str) -> str | None:
        values = {v for k, v in env.items() if k.startswith(prefix) and v}
        return values.pop() if len(values) == 1 else None

    commit = env.get("GO_REVISION") or only("GO_REVISION_")
    return SourceInfo(commit=commit or "unknown", branch=only("GO_MATERIAL_BRANCH_") or "unknown")

