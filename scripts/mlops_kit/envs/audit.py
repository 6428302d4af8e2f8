"""The audit bundle of a stage venv (``<venv>/audit/``): the ``env.json`` record, the freeze, the spec as used and,
for a venv installed from a lock, a copy of that lock (``spec.lock.txt``, the very bytes whose hash env.json holds).

:class:`EnvRecord` is the one field list of ``env.json``: it is written with :meth:`EnvRecord.to_json` and read
back with :meth:`EnvRecord.from_json` (keys a newer toolkit added are ignored, so old and new agents can share a
venv root). ``env.json`` is written last and atomically: it doubles as the "build complete" marker.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import paths
from ..core.errors import BadInput
from ..core.redact import redact

SCHEMA = 1
AUDIT = "audit"
ENV_JSON = "env.json"
FREEZE_TXT = "pip_freeze.txt"
SPEC_YAML = "spec.yaml"
LOCK_TXT = "spec.lock.txt"
_LOCAL = {"json": False}  # field metadata: not part of env.json


@dataclass(frozen=True)
class ManagedInfo:
    """Where a uv-managed interpreter came from: uv's build name (``cpython-3.10.13-windows-x86_64-none``), the
    python-build-standalone release tag (uv's ``BUILD`` file) and, when the toolkit downloaded it, the archive's
    sha256 (``verified``: uv compared it with the hash its download list publishes), its URL (credentials masked)
    and when it was downloaded. ``None`` fields: not known (a Python uv installed outside the toolkit)."""

    key: str
    build: str | None = None
    sha256: str | None = None
    verified: bool = False
    url: str | None = None
    downloaded_at: str | None = None


@dataclass(frozen=True)
class PythonInfo:
    """The base interpreter: ``source`` is where discovery found it (``py launcher``, ``pyenv-win``, ``PATH``,
    ``pyenv``, ``uv-managed``, ``--python``, or an installer's name); ``managed`` says more for ``uv-managed``."""

    path: str
    version: str
    source: str = ""
    implementation: str = "cpython"
    request: str = ""
    managed: ManagedInfo | None = None


@dataclass(frozen=True)
class InstallerInfo:
    name: str
    version: str


@dataclass(frozen=True)
class ToolkitInfo:
    version: str
    git_sha: str


@dataclass(frozen=True)
class FreezeSource:
    """The ``--from-freeze`` file a venv was built from."""

    path: str
    sha256: str


@dataclass(frozen=True)
class LockInfo:
    """The lock a venv was installed from: ``verified`` means its freeze was compared with the lock's pins for
    this platform and matched; ``removed``, what the install took out because the lock does not list it."""

    path: str
    sha256: str
    python: str
    spec_hash: str
    resolved_at: str
    pins: int
    verified: bool = True
    removed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LongestPath:
    """The longest file and the longest folder a venv holds, relative to it: measured after each build, the start of
    a rebuild's path budget (:mod:`mlops_kit.envs.pathbudget`); a table entry of a locked wheel has the same shape."""

    file: str
    folder: str


@dataclass(frozen=True)
class EnvRecord:
    """What ``audit/env.json`` says about a finished venv."""

    stage: str
    venv_name: str
    venv_path: str
    venv_python: str
    kernel_name: str
    kernel_display_name: str
    python: PythonInfo
    platform: str
    installer: InstallerInfo
    spec_hash: str
    cache_key: str
    created_at: str
    toolkit: ToolkitInfo
    packages: list[str]
    sys_platform: str = ""
    index: dict[str, Any] = field(default_factory=dict)
    spec_source: str = ""
    from_freeze: FreezeSource | None = None
    lock: LockInfo | None = None
    longest_path: LongestPath | None = None
    schema: int = SCHEMA
    venv_dir: Path = field(default=Path(), compare=False, metadata=_LOCAL)  # where it was read from

    @property
    def audit_dir(self) -> Path:
        return self.venv_dir / AUDIT

    @property
    def env_file(self) -> Path:
        return self.audit_dir / ENV_JSON

    @property
    def freeze_file(self) -> Path:
        return self.audit_dir / FREEZE_TXT

    @property
    def spec_file(self) -> Path:
        return self.audit_dir / SPEC_YAML

    @property
    def lock_file(self) -> Path:
        return self.audit_dir / LOCK_TXT

    @property
    def bundle(self) -> tuple[Path, ...]:
        """The bundle's files (the lock's copy when installed from one), ``env.json`` last (copies keep it the
        completion marker). What ``--audit-dir`` copies and run_notebook logs under ``environment/``."""
        return (self.freeze_file, self.spec_file, *([self.lock_file] if self.lock else []), self.env_file)

    def to_json(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self) if f.metadata != _LOCAL}

    @classmethod
    def from_json(cls, data: dict[str, Any], venv_dir: Path) -> EnvRecord:
        return dataclasses.replace(_from_dict(cls, data), venv_dir=Path(venv_dir))


def _plain(value: Any) -> Any:
    return dataclasses.asdict(value) if dataclasses.is_dataclass(value) and not isinstance(value, type) else value


def _from_dict(cls: type, data: Any) -> Any:
    """Build dataclass ``cls`` (and its nested dataclasses) from JSON; a missing required key is a KeyError."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.metadata == _LOCAL:
            continue
        if f.name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise KeyError(f.name)
            continue
        nested = next((t for t in typing.get_args(hints[f.name]) or (hints[f.name],)
                       if isinstance(t, type) and dataclasses.is_dataclass(t)), None)
        value = data[f.name]
        kwargs[f.name] = _from_dict(nested, value) if nested is not None and value is not None else value
    return cls(**kwargs)


def read_env(venv_dir: Path | str) -> EnvRecord:
    """The record of a finished venv; :class:`BadInput` when ``venv_dir`` is not one (missing or incomplete)."""
    venv_dir = Path(venv_dir)
    path = venv_dir / AUDIT / ENV_JSON
    if not path.is_file():
        raise BadInput(f"{venv_dir}: not a venv built by create_venv.py (no {AUDIT}/{ENV_JSON}); build it with "
                       "'python scripts/create_venv.py --spec specs/<stage>.yaml'")
    try:
        return EnvRecord.from_json(json.loads(path.read_text(encoding="utf-8")), venv_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{path}: unreadable venv record ({type(exc).__name__}: {exc}); rebuild with --force") from None


def write_bundle(record: EnvRecord, *, freeze: str, spec_text: str, lock_data: bytes | None = None) -> None:
    """Freeze, spec and lock first, ``env.json`` last (atomically): the venv counts as built only once it exists."""
    record.audit_dir.mkdir(exist_ok=True)
    record.freeze_file.write_text(redact(freeze), encoding="utf-8")  # pkg @ https://user:token@host/pkg.whl
    record.spec_file.write_text(spec_text, encoding="utf-8")
    if lock_data is not None:
        record.lock_file.write_bytes(lock_data)
    paths.write_json_atomic(record.env_file, record.to_json())


def copy_bundle(record: EnvRecord, dest: Path) -> Path:
    """Copy the audit bundle into ``dest`` (created if needed), env.json last; return ``dest``."""
    if dest.exists() and not dest.is_dir():
        raise BadInput(f"--audit-dir {dest}: exists and is not a folder")
    if paths.same_path(dest, record.audit_dir):
        return dest
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for src in record.bundle:
            shutil.copyfile(src, dest / src.name)
    except OSError as exc:
        raise BadInput(f"--audit-dir {dest}: cannot copy the audit bundle ({exc})") from None
    return dest
