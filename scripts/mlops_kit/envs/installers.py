"""Installing packages into a venv with uv (default) or pip: the commands, where packages come from, the freeze.

Index settings: the spec's ``index_url``/``extra_index_urls``, else the environment (``PIP_INDEX_URL``,
``PIP_EXTRA_INDEX_URL``, ``UV_DEFAULT_INDEX``/``UV_INDEX_URL``, ``UV_INDEX``/``UV_EXTRA_INDEX_URL``) are handed to
either installer through *its* environment variables (never on the command line, so a token in a URL cannot
leak into a log through an error message). ``pip.ini``/``pip.conf`` is read by pip only; uv ignores it, so put
corporate mirrors in the spec or in GoCD environment variables. With extra indexes uv keeps its default
``first-index`` strategy (a name found on an earlier index is never taken from a later one: protection against
dependency confusion), whereas pip takes the best version across all indexes; set
``UV_INDEX_STRATEGY=unsafe-best-match`` to get pip's behaviour from uv (uv reads it, we pass the environment on).

pip is always in the venv, so ``%pip install`` works from Jupyter: seeded (``uv venv --seed``) for a resolving
install, pinned with the other packages for an install from a lock (:func:`install_locked`: the venv is made
without seed packages, the lock brings pip). ``UV_NO_VERIFY_HASHES`` is never passed on: a lock's hashes are
always checked.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from ..core import paths, proc
from ..core.console import Echo, silent
from ..core.errors import BadInput, EnvBuildError
from ..core.redact import redact
from ..core.userfile import read_input
from .spec import StageSpec

INSTALLERS = ("uv", "pip")
# A line of `uv pip check` ("The package `a` requires `b>=1`, but it's not installed") or of `pip check`
# ("a 1.0 requires b, which is not installed." / "a 1.0 has requirement b>=2, but you have b 1.0.").
_BROKEN_REQUIREMENT = re.compile(r" requires | has requirement ")
_INDEX_VARS = ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_INDEX", "UV_EXTRA_INDEX_URL", "PIP_INDEX_URL",
               "PIP_EXTRA_INDEX_URL")


# ---------------------------------------------------------------------------------------------------- indexes


@dataclass(frozen=True)
class IndexSettings:
    """Where packages come from; ``origin`` says which source won (spec, environment or installer default)."""

    url: str | None = None
    extra_urls: tuple[str, ...] = ()
    origin: str = "installer default"

    def masked(self) -> dict[str, Any]:
        """For env.json and messages: credentials in URLs masked."""
        return {"url": redact(self.url) if self.url else None, "extra_urls": [redact(u) for u in self.extra_urls],
                "origin": self.origin}

    def describe(self) -> str:
        if self.origin == "installer default":
            return ""
        return f" from {self.masked()['url'] or 'the default index'} ({self.origin})"


def index_settings(spec: StageSpec, environ: Mapping[str, str] | None = None) -> IndexSettings:
    """The spec's index settings, else the usual environment variables (pip's and uv's names)."""
    if spec.index_url or spec.extra_index_urls:
        return IndexSettings(spec.index_url, tuple(spec.extra_index_urls), "spec")
    env = os.environ if environ is None else environ
    url = next((env[k] for k in ("PIP_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX_URL") if env.get(k)), None)
    extras = tuple(u for k in ("PIP_EXTRA_INDEX_URL", "UV_INDEX", "UV_EXTRA_INDEX_URL") for u in env.get(k, "").split())
    if url or extras:
        return IndexSettings(url, tuple(dict.fromkeys(extras)), "environment")
    return IndexSettings()


def installer_env(installer: str, index: IndexSettings) -> dict[str, str]:
    """The installer's environment: ours, with the index settings spelled the way that installer reads them
    (hash checking cannot be switched off from outside)."""
    env = {k: v for k, v in os.environ.items() if k != "UV_NO_VERIFY_HASHES"}
    if index.origin == "installer default":
        return env
    names = ("UV_DEFAULT_INDEX", "UV_INDEX") if installer == "uv" else ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")
    for stale in _INDEX_VARS:
        env.pop(stale, None)
    if index.url:
        env[names[0]] = index.url
    if index.extra_urls:
        env[names[1]] = " ".join(index.extra_urls)
    return env


# ---------------------------------------------------------------------------------------------------- freeze files


@dataclass(frozen=True)
class FrozenPins:
    """A validated ``pip freeze`` file: exact pins only (``name==version`` or ``name @ url``)."""

    path: Path
    requirements: tuple[str, ...]
    sha256: str


def read_freeze(path: Path | str) -> FrozenPins:
    """Read a freeze file for ``--from-freeze``; :class:`BadInput` naming the file and line on anything else."""
    path = Path(path)
    text = read_input(path, "freeze file")
    reqs = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            reqs.append(_pinned(line, path, number))
    if not reqs:
        raise BadInput(f"{path}: freeze file lists no packages")
    digest = hashlib.sha256("\n".join(sorted(reqs)).encode()).hexdigest()
    return FrozenPins(path, tuple(reqs), digest)


def _pinned(line: str, path: Path, number: int) -> str:
    where = f"{path}: line {number}: {line!r}"
    if line.startswith("-"):
        raise BadInput(f"{where}: installer options and editable (-e) installs cannot be rebuilt exactly; "
                       "keep only name==version lines")
    try:
        req = Requirement(line)
    except InvalidRequirement as exc:
        raise BadInput(f"{where}: not a requirement ({str(exc).splitlines()[0]})") from None
    specs = list(req.specifier)
    exact = len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version
    if not (req.url or exact):
        raise BadInput(f"{where}: not pinned to one version (expected name==version, as pip freeze writes)")
    return line


# ---------------------------------------------------------------------------------------------------- commands


def uv_bin() -> str:
    import uv

    return uv.find_uv_bin()


def _step(what: str, cmd: Sequence[Any], env: Mapping[str, str], echo: Echo, *, stream: bool = True) -> proc.Result:
    """Run one install step; a failure becomes one :class:`EnvBuildError` line (exit 4)."""
    try:
        return proc.run(cmd, env=env, stream=stream, echo=lambda line: echo(line.rstrip("\r\n")))
    except proc.CommandError as exc:
        raise EnvBuildError(f"{what} failed: {exc}") from None


def create_venv(venv_dir: Path, base_python: Path, *, prompt: str, installer: str, env: Mapping[str, str],
                echo: Echo, seed: bool = True) -> str:
    """Create the venv (uv: with pip/setuptools/wheel only if ``seed``; a lock brings its own pip); return the
    installer's version."""
    if installer == "uv":
        uv = uv_bin()
        _step("creating the venv", [uv, "venv", *(["--seed"] if seed else []), "--allow-existing", "--no-project",
                                    "--python", base_python, "--prompt", prompt, venv_dir], env, echo)
        return _version_of([uv, "--version"], env)
    _step("creating the venv", [base_python, "-m", "venv", "--prompt", prompt, venv_dir], env, echo)
    return _version_of([paths.venv_python(venv_dir), "-m", "pip", "--version"], env)


def _version_of(cmd: list[Any], env: Mapping[str, str]) -> str:
    out = _step("asking the installer's version", cmd, env, silent, stream=False).stdout.split()
    return out[1] if len(out) > 1 else "unknown"


def install(venv_dir: Path, requirements: Sequence[str], *, installer: str, env: Mapping[str, str],
            echo: Echo) -> None:
    """Install ``requirements`` into the venv (output streamed: a long install shows progress)."""
    python = paths.venv_python(venv_dir)
    if installer == "uv":
        cmd = [uv_bin(), "pip", "install", "--python", python, *requirements]
    else:
        cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", *requirements]
    _step(f"installing packages with {installer}", cmd, env, echo)


def locked_install_command(venv_dir: Path, lock: Path, installer: str) -> list[Any]:
    """Exactly the lock, hashes required, nothing resolved. uv: ``uv pip sync`` (also removes what the lock does
    not list, except seed packages); pip: ``pip install --require-hashes --no-deps -r`` (markers honoured)."""
    python = paths.venv_python(venv_dir)
    if installer == "uv":
        return [uv_bin(), "pip", "sync", "--require-hashes", "--python", python, lock]
    return [python, "-m", "pip", "install", "--require-hashes", "--no-deps", "--no-input",
            "--disable-pip-version-check", "-r", lock]


def install_locked(venv_dir: Path, lock: Path, *, installer: str, env: Mapping[str, str], echo: Echo) -> None:
    """Install the lock file into the venv (output streamed through ``echo``)."""
    _step(f"installing {lock} with {installer}", locked_install_command(venv_dir, lock, installer), env, echo)


def uninstall(venv_dir: Path, names: Sequence[str], *, installer: str, env: Mapping[str, str]) -> None:
    """Remove ``names`` from the venv (what a lock does not list)."""
    python = paths.venv_python(venv_dir)
    cmd = ([uv_bin(), "pip", "uninstall", "--python", python, *names] if installer == "uv" else
           [python, "-m", "pip", "uninstall", "-y", "--disable-pip-version-check", *names])
    _step(f"removing {', '.join(names)}", cmd, env, silent, stream=False)


def parse_freeze(text: str) -> dict[str, str]:
    """``{normalized name: version}`` of a freeze's ``name==version`` lines; a ``name @ url`` or ``-e`` line is kept
    whole as the value (installed, never a pinned version); comments are skipped."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.split(" #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        name, sep, version = line.partition("==")
        if not sep:
            name, version = re.split(r"[\s@]+", line.removeprefix("-e").strip(), maxsplit=1)[0], line
        out[canonicalize_name(name.strip())] = version.strip()
    return out


def freeze(venv_dir: Path, *, installer: str, env: Mapping[str, str]) -> str:
    """``pip freeze`` of the venv (uv's is the same format, without starting the venv's pip)."""
    python = paths.venv_python(venv_dir)
    if installer == "uv":
        cmd = [uv_bin(), "pip", "freeze", "--python", python]
    else:
        cmd = [python, "-m", "pip", "freeze", "--all", "--disable-pip-version-check"]
    return _step("freezing the installed packages", cmd, env, silent, stream=False).stdout


def broken_requirements(venv_dir: Path, *, installer: str, env: Mapping[str, str]) -> list[str]:
    """What the venv's installed packages require and do not get (missing, or the wrong version), one entry per
    problem; empty: the dependency closure holds. ``uv pip check`` (milliseconds) or pip's own ``pip check``."""
    python = paths.venv_python(venv_dir)
    cmd: list[str | os.PathLike[str]] = (
        [uv_bin(), "pip", "check", "--python", python] if installer == "uv" else
        [python, "-m", "pip", "check", "--disable-pip-version-check"])
    try:
        result = proc.run(cmd, env=env, check=False, timeout=300)
    except proc.CommandError as exc:
        return [f"the check did not finish ({exc})"]
    if result.returncode == 0:
        return []
    lines = [line.strip() for line in f"{result.stdout}\n{result.stderr}".splitlines()]
    found = [line.removeprefix("The package ") for line in lines if _BROKEN_REQUIREMENT.search(line)]
    return found or [str(proc.CommandError(result))]
