"""Resolving a stage spec into its lock with uv: universal, hashed, proven installable on Windows, Linux and macOS.

* :func:`write_lock` resolves into a temp copy of the existing lock (uv keeps its pins: minimal change unless
  ``upgrade``/``upgrade_packages``) and replaces the lock atomically only when resolution succeeded and the new
  lock installs (a uv dry run) on each of :data:`~mlops_kit.envs.lockfile.PLATFORMS`; identical pins leave the file
  byte for byte untouched.
* :func:`write_locks`: the same for several specs, one line per failure (create_venv's ``--lock``); an
  ``--upgrade-package`` name none of the specs lists or their locks pin is refused first (:func:`check_upgrade_names`).

A lock that is no longer whole (edited by hand, or of the previous format) is rewritten whole by a re-lock; its pins
are still uv's preferences, so a repair moves nothing the spec does not ask for.

Index settings (:func:`mlops_kit.envs.installers.index_settings`) reach uv through environment variables only,
never the command line, and uv is told not to write them into the lock (no ``--emit-index-url``), so a token in
an index URL reaches neither the lock nor a message (uv's own messages strip credentials; ours are redacted).
Ambient resolver settings (``UV_RESOLUTION``, ``UV_CONSTRAINT``, ...) and uv config files are left out: the lock
is "the spec, resolved", on every machine.
"""

from __future__ import annotations

import codecs
import contextlib
import datetime as _dt
import difflib
import os
import re
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from .. import __version__
from ..core import console, paths, proc
from ..core.console import Echo
from ..core.errors import BadInput, EnvBuildError
from ..core.redact import redact
from . import installers, lockfile
from .installers import IndexSettings
from .lockfile import ADDED, PLATFORMS, Lock, Pin
from .spec import OLDEST_STAGE_PYTHON, PythonRequest, StageSpec

DEFAULT_INDEX = "https://pypi.org/simple"
_DEFINING_FIELDS = ("lock-format", "spec-hash", "python", "added", "index", "extra-index")  # what makes a lock differ
# Settings that would silently make the lock differ from "the spec, resolved": ambient uv variables are dropped
# for the resolution (config files too: --no-config). The index strategy is a deliberate policy and kept.
_RESOLUTION_ENV = ("UV_CONSTRAINT", "UV_OVERRIDE", "UV_EXCLUDE", "UV_BUILD_CONSTRAINT", "UV_RESOLUTION",
                   "UV_PRERELEASE", "UV_EXCLUDE_NEWER", "UV_FORK_STRATEGY", "UV_CUSTOM_COMPILE_COMMAND",
                   "UV_TORCH_BACKEND", "UV_NO_BUILD_ISOLATION")


def lock_python(request: PythonRequest) -> str:
    """The minor a lock is resolved for: ``3.12`` -> 3.12, ``3.10.13`` -> 3.10, a range -> its lowest minor.

    uv's universal resolution takes it as the *lowest* Python, so the lock also serves every later minor (it
    forks by ``python_full_version`` markers where packages differ): a range's newest match is covered too."""
    if request.exact is not None:
        return f"{request.exact.major}.{request.exact.minor}"
    if re.match(r"^3\.\d+$", request.text):
        return request.text
    lows = [Version(s.version.rstrip(".*")) for s in request.specifier if s.operator in (">=", "==", "~=", ">")]
    low = max([v.release[:2] for v in lows], default=OLDEST_STAGE_PYTHON)
    major, minor = max(tuple(low), OLDEST_STAGE_PYTHON)
    return f"{major}.{minor}"


# ---------------------------------------------------------------------------------------------------- writing


def write_locks(specs: Sequence[StageSpec], *, upgrade: bool = False, upgrade_packages: Sequence[str] = (),
                echo: Echo = console.progress) -> list[str]:
    """Lock each spec in turn against the index a build would use; a spec that fails keeps its old lock and
    the others are still written. One line per failure (empty: all written or unchanged). An ``upgrade_packages``
    name that none of the specs lists and none of their locks pins is :class:`BadInput` before anything resolves."""
    check_upgrade_names(specs, upgrade_packages)
    failures = []
    for spec in specs:
        try:
            write_lock(spec, index=installers.index_settings(spec), upgrade=upgrade,
                       upgrade_packages=upgrade_packages, echo=echo)
        except (BadInput, EnvBuildError) as exc:
            failures.append(str(exc))
    return failures


def write_lock(
    spec: StageSpec, *, index: IndexSettings | None = None, upgrade: bool = False,
    upgrade_packages: Sequence[str] = (), check_platforms: Sequence[str] = PLATFORMS, target: Path | None = None,
    echo: Echo = console.progress,
) -> Lock:
    """Resolve ``spec`` into ``target`` (default :func:`~mlops_kit.envs.lockfile.lock_path`, next to the spec); return the lock on disk.

    Existing pins are kept where they still satisfy the spec; ``upgrade`` re-resolves everything,
    ``upgrade_packages`` only those names. The new lock must install, in a uv dry run, on each of
    ``check_platforms`` (Windows, Linux, macOS by default) before it replaces the old one, atomically; when
    pins and header facts are unchanged the file is left as it was. Failure: :class:`EnvBuildError`."""
    target = Path(target) if target is not None else lockfile.lock_path(spec.source)
    previous, whole = _previous(target, echo)
    python, env, uv = lock_python(spec.python), _resolution_env(index), installers.uv_bin()
    started = time.monotonic()
    mode = "upgrading all" if upgrade else f"upgrading {' '.join(upgrade_packages)}" if upgrade_packages else (
        "keeping existing pins" if previous else "new lock")
    echo(f"locking {spec.source} for Python {python}+ on {', '.join(PLATFORMS)} "
         f"({len(spec.packages)} package(s) + {' '.join(ADDED)}; {mode})")
    with tempfile.TemporaryDirectory(prefix="mlops_kit-lock-") as work:
        body = _resolve(spec, Path(work), previous, python=python, env=env, uv=uv, upgrade=upgrade,
                        upgrade_packages=upgrade_packages)
        header = _header_fields(spec, python=python, env=env, uv=uv, checked_on=check_platforms)
        new_text = lockfile.render_lock(spec, header, body)
        draft = Path(work) / target.name
        draft.write_bytes(new_text.encode("utf-8"))
        fresh = lockfile.read_lock(draft)  # every rule a build applies, before it replaces anything
        for platform_name in check_platforms:
            check_installable(draft, platform_name, python, env=env)
        if previous is not None and whole and _same_pins_and_facts(previous, fresh):
            echo(f"{target}: unchanged ({len(fresh.pins)} pins, resolved in {time.monotonic() - started:.1f}s)")
            return previous
        _replace(target, new_text)
    echo(f"{target}: {_summary(previous, fresh)} (resolved in {time.monotonic() - started:.1f}s)")
    return lockfile.read_lock(target)


def _previous(target: Path, echo: Echo) -> tuple[Lock | None, bool]:
    """The existing lock (its pins are uv's preferences) and whether it is whole (sealed, current format: else
    it is rewritten even if nothing moved), or ``None``: absent, or not even pins (said so)."""
    if not target.exists():
        return None, False
    try:
        return lockfile.read_lock(target), True
    except BadInput as exc:
        why = str(exc)
    try:
        previous = lockfile.read_lock(target, whole=False)
    except BadInput as exc:
        echo(f"warning: ignoring the existing lock's pins, it is unreadable: {exc}")
        return None, False
    echo(f"rewriting {target}, which is not whole ({why.removeprefix(f'{target}: ').split('; ')[0]}); its pins are "
         "kept where the spec allows")
    return previous, False


def check_upgrade_names(specs: Sequence[StageSpec], names: Sequence[str]) -> None:
    """:class:`BadInput` for a name none of ``specs`` lists and none of their locks pins: ``--upgrade-package``
    would otherwise be a silent no-op (a typo that upgrades nothing). A name some spec knows is fine for all."""
    known: dict[str, None] = dict.fromkeys(ADDED)
    for spec in specs:
        known.update(dict.fromkeys(canonicalize_name(Requirement(p).name) for p in spec.packages))
        path = lockfile.lock_path(spec.source)
        with contextlib.suppress(BadInput):
            known.update(dict.fromkeys(pin.name for pin in lockfile.read_lock(path, whole=False).pins))
    for name in names:
        if canonicalize_name(name) in known:
            continue
        close = difflib.get_close_matches(canonicalize_name(name), list(known), n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        where = " or ".join(str(spec.source) for spec in specs)
        locks = "its lock" if len(specs) == 1 else "their locks"
        raise BadInput(f"--upgrade-package {name}: neither a package of {where} nor pinned in {locks}; {hint}"
                       "nothing was locked")


def _resolve(spec: StageSpec, work: Path, previous: Lock | None, *, python: str, env: Mapping[str, str],
             uv: str, upgrade: bool, upgrade_packages: Sequence[str]) -> str:
    """Run ``uv pip compile`` in ``work`` (no project config found there); return the requirements body."""
    source = work / spec.source.name  # annotations then read "# via -r train.yaml"
    source.write_text("\n".join([*spec.packages, *ADDED]) + "\n", encoding="utf-8")
    output = work / "resolved.txt"
    if previous is not None:  # uv keeps the pins of an existing output file (a BOM, if any, left out)
        output.write_bytes(previous.data.removeprefix(codecs.BOM_UTF8))
    cmd = compile_command(source.name, output, python, upgrade=upgrade, upgrade_packages=upgrade_packages, uv=uv)
    result = proc.run(cmd, env=env, cwd=work, check=False)
    if result.returncode != 0:
        raise EnvBuildError(f"{spec.source}: resolving for Python {python} failed: {_uv_reason(result)}; "
                            "nothing was written")
    return output.read_text(encoding="utf-8")


def compile_command(source: str, output: Path, python: str, *, upgrade: bool = False,
                    upgrade_packages: Sequence[str] = (), uv: str | None = None) -> list[str]:
    """The resolution: universal (markers kept), hashes, for ``python`` and later, no header (ours replaces it),
    no index URLs written, no config files read. ``--python`` names the toolkit's own interpreter: without it
    uv looks for one of the target minor and, finding none, *downloads* a managed CPython (10 s of retries
    offline) although ``--python-version`` alone decides the resolution."""
    return [uv or installers.uv_bin(), "pip", "compile", source, "--output-file", os.fspath(output), "--universal",
            "--generate-hashes", "--python-version", python, "--python", sys.executable, "--no-header",
            "--no-config", "--quiet", *(["--upgrade"] if upgrade else []),
            *[arg for name in upgrade_packages for arg in ("--upgrade-package", name)]]


def _header_fields(spec: StageSpec, *, python: str, env: Mapping[str, str], uv: str,
                   checked_on: Sequence[str]) -> dict[str, str]:
    url = next((env[k] for k in ("UV_DEFAULT_INDEX", "UV_INDEX_URL") if env.get(k)), DEFAULT_INDEX)
    extras = [u for k in ("UV_INDEX", "UV_EXTRA_INDEX_URL") for u in env.get(k, "").split()]
    fields = {
        "lock-format": lockfile.LOCK_FORMAT, "spec": lockfile.display_path(spec.source), "spec-hash": spec.content_hash(),
        "python": python, "python-request": spec.python.text, "added": " ".join(ADDED),
        "checked-on": " ".join(checked_on), "uv": _uv_version(uv, env), "toolkit": __version__,
        "index": redact(url), "extra-index": " ".join(redact(u) for u in extras),
        "resolved-at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": lockfile.refresh_command(spec.source),
    }
    return {k: v for k, v in fields.items() if v}


def _same_pins_and_facts(old: Lock, new: Lock) -> bool:
    """Whether a re-lock changed nothing that matters (the time of resolution and uv's version do not): the file
    is then left byte for byte as it was, no git noise."""
    same_facts = all(old.header.get(k) == new.header.get(k) for k in _DEFINING_FIELDS)
    return same_facts and _body(old) == _body(new)


def _body(lock: Lock) -> list[str]:
    lines = lock.data.decode("utf-8").replace("\r\n", "\n").split("\n")
    return [line for line in lines[min(pin.line for pin in lock.pins) - 1:] if line]


def _replace(target: Path, text: str) -> None:
    try:
        paths.write_text_atomic(target, text)  # "\n" on every OS: the same bytes, the same hash, no git noise
    except OSError as exc:
        raise EnvBuildError(f"{target}: cannot write the lock ({exc})") from None


def _summary(old: Lock | None, new: Lock) -> str:
    if old is None:
        return f"written ({len(new.pins)} pins)"
    before, after = _versions_by_name(old.pins), _versions_by_name(new.pins)
    changes = [f"+{n} {after[n]}" for n in sorted(after.keys() - before.keys())]
    changes += [f"-{n} {before[n]}" for n in sorted(before.keys() - after.keys())]
    changes += [f"{n} {before[n]} -> {after[n]}" for n in sorted(before.keys() & after.keys())
                if before[n] != after[n]]
    return "updated: " + (", ".join(changes) if changes else "same pins, header refreshed")


def _versions_by_name(pins: Iterable[Pin]) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    for pin in pins:
        out.setdefault(pin.name, []).append(pin.version)
    return {name: "/".join(sorted(set(v), key=Version)) for name, v in out.items()}


def check_installable(lock: Path | str, platform_name: str, python: str, *,
                      env: Mapping[str, str] | None = None) -> None:
    """Prove ``lock`` installs with hashes on ``platform_name`` (``windows``/``linux``/``macos``) for Python
    ``python``: a uv dry run for that target, no download. A dependency missing for that platform (e.g.
    ``colorama`` on Windows) or a package without a wheel for it fails: :class:`EnvBuildError`."""
    with tempfile.TemporaryDirectory(prefix="mlops_kit-dry-run-") as target:  # uv puts a .lock file in it
        result = proc.run(dry_run_command(lock, platform_name, python, Path(target)),
                          env=_resolution_env(None) if env is None else env, check=False)
    if result.returncode != 0:
        raise EnvBuildError(f"{lock}: does not install on {platform_name} (Python {python}): {_uv_reason(result)}")


def dry_run_command(lock: Path | str, platform_name: str, python: str, target: Path) -> list[str]:
    """``uv pip install --dry-run --require-hashes`` of ``lock`` for another platform; ``--target`` (an empty
    folder: nothing is installed there, uv only takes a lock file in it) spares making a venv."""
    return [installers.uv_bin(), "pip", "install", "--dry-run", "--require-hashes", "--no-config", "--python-platform",
            platform_name, "--python-version", python, "--python", sys.executable,
            "--target", os.fspath(target), "-r", os.fspath(lock)]


# ---------------------------------------------------------------------------------------------------- uv


def _uv_version(uv: str, env: Mapping[str, str]) -> str:
    out = proc.run([uv, "--version"], env=env, timeout=60).stdout.split()
    return out[1] if len(out) > 1 else "unknown"


def _resolution_env(index: IndexSettings | None) -> dict[str, str]:
    """uv's environment for a resolution: the index settings, without ambient resolver settings."""
    env = installers.installer_env("uv", index or IndexSettings())
    for name in _RESOLUTION_ENV:
        env.pop(name, None)
    return env


def _uv_reason(result: proc.Result) -> str:
    """uv's error as one line: its ``error:``/``cause:``/``╰─▶`` lines joined, box drawing dropped, masked."""
    lines = [re.sub(r"^([\s×╰─▶│├┬]|error:)+", "", line).strip()
             for line in (result.stderr or result.stdout).splitlines()]
    lines = [line for line in lines if line and not line.startswith(("Using ", "Resolved ", "hint:"))]
    reason = " ".join(lines) or f"uv exited with {result.returncode}"
    return redact(reason if len(reason) <= 600 else reason[:597] + "...")
