"""Installing exactly a stage's lock into its venv, and verifying the venv against it.

:func:`install_from_lock`: the exact install (:func:`mlops_kit.envs.installers.install_locked`: ``uv pip sync
--require-hashes`` or ``pip install --require-hashes --no-deps``), then removal of anything not locked (uv keeps
seeded setuptools/wheel), then the venv's freeze must equal the lock's pins for the venv's own marker environment
(:func:`marker_environment`, asked of the venv's interpreter); any failure (a hash mismatch included) is one
:class:`EnvBuildError` line (exit 4).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.version import InvalidVersion, Version

from ..core import console, paths
from ..core.console import Echo
from ..core.errors import BadInput, EnvBuildError
from ..core.redact import redact
from . import installers, probe
from .installers import IndexSettings
from .lockfile import Lock, check_fresh, pins_for_this_platform
from .spec import StageSpec

_UV_HASH_ERROR = re.compile(r"Hash mismatch for `([^`]+)`")
_PIP_HASH_ERROR = re.compile(r"^\s+(\S+==\S+) from ")
_MARKER_PROBE = (  # packaging.markers.default_environment(), without needing packaging in the venv
    "import json, os, platform, sys\n"
    "i = sys.implementation.version\n"
    "iv = '%d.%d.%d' % (i.major, i.minor, i.micro) + ('' if i.releaselevel == 'final' else i.releaselevel[0] + "
    "str(i.serial))\n"
    "print(json.dumps({'implementation_name': sys.implementation.name, 'implementation_version': iv, "
    "'os_name': os.name, 'platform_machine': platform.machine(), 'platform_release': platform.release(), "
    "'platform_system': platform.system(), 'platform_version': platform.version(), "
    "'python_full_version': platform.python_version(), "
    "'platform_python_implementation': platform.python_implementation(), "
    "'python_version': '.'.join(platform.python_version_tuple()[:2]), 'sys_platform': sys.platform}))"
)


# ---------------------------------------------------------------------------------------------------- install


@dataclass(frozen=True)
class Installed:
    """What :func:`install_from_lock` did: the venv's final ``freeze``, the lock's ``pins`` for the venv's
    platform (equal to the freeze, verified), the packages it ``removed`` (not in the lock) and the lock."""

    lock: Lock
    freeze: str
    pins: Mapping[str, str]
    removed: tuple[str, ...]


def install_from_lock(
    spec: StageSpec, venv_dir: Path, *, lock: Lock | None = None, installer: str = "uv",
    index: IndexSettings | None = None, echo: Echo = console.progress,
) -> Installed:
    """Make the venv hold exactly the spec's lock: ``lock`` as the caller checked it, else the spec's own, checked
    fresh here (else :class:`BadInput`, nothing touched); install with hashes required, remove what the lock
    does not list, verify the freeze."""
    lock = lock or check_fresh(spec)
    environment = marker_environment(paths.venv_python(venv_dir))
    _check_python(lock, environment)
    pins = pins_for_this_platform(lock, environment)
    env = installers.installer_env(installer, index or IndexSettings())
    echo(f"installing {len(pins)} locked package(s) from {lock.path} with {installer} (hashes required)")
    _install(venv_dir, lock, installer, env, echo)
    extras = sorted(set(installers.parse_freeze(installers.freeze(venv_dir, installer=installer, env=env))) - set(pins))
    if extras:
        echo(f"removing {len(extras)} package(s) not in the lock: {', '.join(extras)}")
        installers.uninstall(venv_dir, extras, installer=installer, env=env)
    final = installers.freeze(venv_dir, installer=installer, env=env)
    differences = verify_installed(final, pins)
    if differences:
        raise EnvBuildError(f"{venv_dir}: the venv does not match {lock.path} after installing: "
                            f"{'; '.join(differences[:5])}" + (" ..." if len(differences) > 5 else ""))
    return Installed(lock, final, pins, tuple(extras))


class _HashWatch:
    """An ``echo`` for a streamed install that also notes the packages whose hash did not match (the message
    lists every expected hash, dozens for numpy: the "mismatch" line is long gone from proc's output tail)."""

    def __init__(self, echo: Echo) -> None:
        self.echo, self._pip_report = echo, False
        self.bad: list[str] = []

    def __call__(self, line: str) -> None:
        self.echo(line.rstrip("\r\n"))
        self._pip_report = self._pip_report or "DO NOT MATCH THE HASHES" in line
        match = _UV_HASH_ERROR.search(line) or (_PIP_HASH_ERROR.match(line) if self._pip_report else None)
        if match and match[1] not in self.bad:
            self.bad.append(match[1])


def _install(venv_dir: Path, lock: Lock, installer: str, env: Mapping[str, str], echo: Echo) -> None:
    watch = _HashWatch(echo)
    try:
        installers.install_locked(venv_dir, lock.path, installer=installer, env=env, echo=watch)
    except EnvBuildError:
        if not watch.bad:
            raise
        raise EnvBuildError(f"{lock.path}: hash mismatch for {', '.join(watch.bad)}: the downloaded file "
                            "is not the one locked (the lock was edited, or the index serves another file); "
                            f"nothing was installed; if the change is intended re-lock with: "
                            f"{lock.refresh}") from None


def _check_python(lock: Lock, environment: Mapping[str, str]) -> None:
    have, need = environment["python_version"], lock.python
    if tuple(map(int, have.split("."))) < tuple(map(int, need.split("."))):
        raise BadInput(f"{lock.path}: resolved for Python {need} and later, the venv has Python {have}; "
                       f"re-lock with: {lock.refresh}")


# ---------------------------------------------------------------------------------------------------- verify


def marker_environment(python: Path | str) -> dict[str, str]:
    """The PEP 508 marker environment of another interpreter (a venv's), from a tiny probe run in it."""
    try:
        return {str(k): str(v) for k, v in probe.ask(python, _MARKER_PROBE, timeout=120).items()}
    except probe.ProbeFailed as exc:
        raise EnvBuildError(f"{python}: cannot read its platform and version ({redact(str(exc))})") from None


def verify_installed(freeze_text: str, pins: Mapping[str, str]) -> list[str]:
    """Differences between a venv's freeze and the pins it should hold (empty: identical), e.g.
    ``six: installed 1.16.0, locked 1.17.0``, ``missing six==1.17.0``, ``not locked attrs==25.1.0``."""
    installed = installers.parse_freeze(freeze_text)
    out = []
    for name in sorted(pins.keys() | installed.keys()):
        have, want = installed.get(name), pins.get(name)
        if have is None:
            out.append(f"missing {name}=={want}")
        elif want is None:
            out.append(f"not locked {name}=={have}")
        elif not _same_version(have, want):
            out.append(f"{name}: installed {have}, locked {want}")
    return out


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b
