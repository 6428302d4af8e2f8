"""Stage lock files (``specs/<stage>.lock.txt``): resolve a spec once, install exactly that on every agent.

A lock is ``uv pip compile --universal --generate-hashes`` output for the spec's packages plus what the toolkit
adds to every stage venv (``ipykernel``, and ``pip`` so ``%pip`` works and is pinned too), resolved for the
spec's Python minor and every later one, with environment markers kept: one file serves Windows, Linux and
macOS. On top sits a header of ``# key: value`` comment lines that this module parses (see :data:`REQUIRED`):
the spec's content hash (freshness, checked without network), the Python minor, uv and toolkit versions, the
index URLs with credentials masked, the UTC time of resolution and the command that regenerates the lock.

* :func:`write_lock` resolves into a temp copy of the existing lock (uv keeps its pins: minimal change unless
  ``upgrade``/``upgrade_packages``) and replaces the lock atomically only when resolution succeeded; identical
  pins leave the file byte-for-byte untouched.
* :func:`check_fresh` / :func:`read_lock`: stale, missing or malformed locks are :class:`BadInput` (exit 2), one
  line naming the spec, the lock and the refresh command; milliseconds, no network.
* :func:`install_from_lock`: the exact install (:func:`mlops_kit.installers.install_locked`: ``uv pip sync
  --require-hashes`` or ``pip install --require-hashes --no-deps``), then removal of anything not locked (uv
  keeps seeded setuptools/wheel), then the venv's freeze must equal the lock's pins for the venv's own marker
  environment; any failure (a hash mismatch included) is one :class:`EnvBuildError` line (exit 4).
* :func:`check_locks` / :func:`write_locks`: the same for several specs, one line per problem (create_venv's
  ``--check-lock`` and ``--lock``).

Index settings (:func:`mlops_kit.installers.index_settings`) reach uv and pip through environment variables only,
never the command line, and uv is told not to write them into the lock (no ``--emit-index-url``), so a token in
an index URL reaches neither the lock nor a message (uv's own messages strip credentials; ours are redacted).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import InvalidMarker, Marker, default_environment
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from .. import __version__
from ..core import console, paths, proc
from ..core.console import Echo
from ..core.errors import BadInput, EnvBuildError
from ..core.redact import redact
from . import installers
from .installers import IndexSettings
from .spec import OLDEST_STAGE_PYTHON, PythonRequest, StageSpec, load_spec

LOCK_SUFFIX = ".lock.txt"
LOCK_FORMAT = "1"
ADDED = ("ipykernel", "pip")  # what every stage venv gets on top of the spec's packages
DEFAULT_INDEX = "https://pypi.org/simple"
PLATFORMS = ("windows", "linux", "macos")  # what one universal lock must install on (uv --python-platform)
REQUIRED = ("lock-format", "spec-hash", "python", "added", "uv", "toolkit", "index", "resolved-at", "command")
_COMPARED = ("lock-format", "spec-hash", "python", "added", "index", "extra-index")  # what makes a lock differ
_TOOLKIT_ROOT = Path(__file__).resolve().parents[3]
# Settings that would silently make the lock differ from "the spec, resolved": ambient uv variables are dropped
# for the resolution (config files too: --no-config). The index strategy is a deliberate policy and kept.
_RESOLUTION_ENV = ("UV_CONSTRAINT", "UV_OVERRIDE", "UV_EXCLUDE", "UV_BUILD_CONSTRAINT", "UV_RESOLUTION",
                   "UV_PRERELEASE", "UV_EXCLUDE_NEWER", "UV_FORK_STRATEGY", "UV_CUSTOM_COMPILE_COMMAND",
                   "UV_TORCH_BACKEND", "UV_NO_BUILD_ISOLATION")
_HEADER_LINE = re.compile(r"^#\s*(?P<key>[a-z][a-z0-9-]*):\s*(?P<value>.*?)\s*$")
_REQ_LINE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.!+_-]+)"
                       r"\s*(?:;\s*(?P<marker>[^\\]*?))?\s*(?P<more>\\)?$")
_HASH_LINE = re.compile(r"^\s+--hash=sha256:(?P<hash>[0-9a-f]{64})\s*(?P<more>\\)?$")
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

# ---------------------------------------------------------------------------------------------------- names


def lock_path(spec_path: Path | str) -> Path:
    """``specs/train.yaml`` -> ``specs/train.lock.txt`` (same folder, the spec's stem)."""
    spec_path = Path(spec_path)
    return spec_path.with_name(spec_path.stem + LOCK_SUFFIX)


def spec_path_for(lock: Path | str) -> Path:
    """The inverse of :func:`lock_path` (for messages about a lock read on its own)."""
    lock = Path(lock)
    stem = lock.name[: -len(LOCK_SUFFIX)] if lock.name.endswith(LOCK_SUFFIX) else lock.stem
    return lock.with_name(stem + ".yaml")


def refresh_command(spec_path: Path | str) -> str:
    """The command that (re)writes the lock of ``spec_path``, as written in the header and in messages."""
    return f"python scripts/create_venv.py --spec {_display(spec_path)} --lock"


def _display(path: Path | str) -> str:
    """A spec path as a command in a committed file should show it: relative to the toolkit root if inside."""
    absolute = Path(os.path.abspath(path))
    if absolute.is_relative_to(_TOOLKIT_ROOT):
        return absolute.relative_to(_TOOLKIT_ROOT).as_posix()
    return Path(path).as_posix()


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


# ---------------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Pin:
    """One requirement line: ``name==version ; marker`` with its ``--hash`` lines (``line``: 1-based)."""

    name: str
    version: str
    marker: str | None
    hashes: tuple[str, ...]
    line: int

    def applies(self, environment: Mapping[str, str]) -> bool:
        return self.marker is None or Marker(self.marker).evaluate(dict(environment))


@dataclass(frozen=True)
class Lock:
    """A parsed lock: ``header`` (its ``# key: value`` fields), ``pins`` and ``sha256`` of the file's bytes
    (the part of a venv cache key that says "this exact lock"); ``data``, those bytes (the audit copy)."""

    path: Path
    header: Mapping[str, str]
    pins: tuple[Pin, ...]
    sha256: str
    data: bytes = field(default=b"", repr=False, compare=False)

    @property
    def spec_hash(self) -> str:
        return self.header["spec-hash"]

    @property
    def python(self) -> str:
        return self.header["python"]

    @property
    def refresh(self) -> str:
        return self.header.get("command") or refresh_command(spec_path_for(self.path))


def read_lock(path: Path | str) -> Lock:
    """Parse a lock; :class:`BadInput` naming the file and line for anything but header, pins, hashes and
    comments (a merge conflict, a hand-added ``--index-url``, a loose ``>=``, a pin without hashes)."""
    path = Path(path)
    data = _read_bytes(path)
    text = data.decode("utf-8", errors="replace")
    header, first = _parse_header(text, path)
    pins = _parse_pins(text.splitlines()[first:], path, first)
    if not pins:
        raise BadInput(f"{path}: the lock pins no packages; re-lock with: {refresh_command(spec_path_for(path))}")
    return Lock(path, header, tuple(pins), hashlib.sha256(data).hexdigest(), data)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such lock file; create it with: "
                       f"{refresh_command(spec_path_for(path))}") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the lock ({exc})") from None


def _parse_header(text: str, path: Path) -> tuple[dict[str, str], int]:
    """The ``# key: value`` lines before the first requirement; returns them and the first body line index."""
    header: dict[str, str] = {}
    lines = text.splitlines()
    first = len(lines)
    for index, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            first = index
            break
        match = _HEADER_LINE.match(line)
        if match:
            header.setdefault(match["key"], match["value"])
    missing = [key for key in REQUIRED if key not in header]
    if missing:
        raise BadInput(f"{path}: not a mlops_kit lock (header field '{missing[0]}' missing); re-lock with: "
                       f"{refresh_command(spec_path_for(path))}")
    if header["lock-format"] != LOCK_FORMAT:
        raise BadInput(f"{path}: lock format {header['lock-format']!r}, this toolkit reads {LOCK_FORMAT!r}; "
                       f"update the toolkit or re-lock with: {header['command']}")
    return header, first


def _parse_pins(lines: Sequence[str], path: Path, offset: int) -> list[Pin]:
    pins: list[Pin] = []
    open_pin: Pin | None = None  # a requirement line whose hash lines are being read
    hashes: list[str] = []
    for number, line in enumerate(lines, start=offset + 1):
        if open_pin is not None:
            match = _HASH_LINE.match(line)
            if not match:
                raise _malformed(path, number, line, "expected a '    --hash=sha256:<64 hex>' continuation line")
            hashes.append(match["hash"])
            if not match["more"]:
                pins.append(dataclasses.replace(open_pin, hashes=tuple(hashes)))
                open_pin, hashes = None, []
        elif line.strip() and not line.lstrip().startswith("#"):
            open_pin = _pin_start(line, path, number)
    if open_pin is not None:
        raise _malformed(path, open_pin.line, lines[open_pin.line - offset - 1], "its hash lines are cut off")
    return pins


def _pin_start(line: str, path: Path, number: int) -> Pin:
    match = _REQ_LINE.match(line)
    if not match:
        raise _malformed(path, number, line, "expected 'name==version [; marker] \\' (exact pins with hashes only)")
    if not match["more"]:
        raise _malformed(path, number, line, "no --hash follows (every package needs its sha256)")
    try:
        Version(match["version"])
        if match["marker"]:
            Marker(match["marker"])
    except (InvalidVersion, InvalidMarker) as exc:
        raise _malformed(path, number, line, str(exc).splitlines()[0]) from None
    return Pin(canonicalize_name(match["name"]), match["version"], match["marker"] or None, (), number)


def _malformed(path: Path, number: int, line: str, problem: str) -> BadInput:
    shown = line.strip() if len(line.strip()) <= 80 else line.strip()[:77] + "..."
    return BadInput(f"{path}: line {number}: {shown!r}: {problem}; a lock is written by "
                    f"'{refresh_command(spec_path_for(path))}', not by hand")


# ---------------------------------------------------------------------------------------------------- fresh


def check_fresh(spec: StageSpec, lock: Path | str | None = None) -> Lock:
    """The spec's lock, parsed, if it was written for this very spec; else :class:`BadInput` (exit 2), one line
    naming the spec, the lock and the command that refreshes it. No network: milliseconds."""
    path = Path(lock) if lock is not None else lock_path(spec.source)
    command = refresh_command(spec.source)
    if not path.is_file():
        raise BadInput(f"{spec.source}: no lock {path}; create it with: {command}")
    parsed = read_lock(path)
    why = _staleness(spec, parsed.header)
    if why:
        raise BadInput(f"{spec.source}: stale lock {path} ({why}); refresh it with: {command}")
    return parsed


def _staleness(spec: StageSpec, header: Mapping[str, str]) -> str | None:
    if header["added"].split() != list(ADDED):
        return f"it adds {header['added']!r}, this toolkit adds {' '.join(ADDED)!r}"
    if header["spec-hash"] == spec.content_hash():
        return None
    if header.get("python-request", spec.python.text) != spec.python.text:
        return f"python_version changed from {header['python-request']!r} to {spec.python.text!r}"
    return f"packages or index settings changed since it was locked at {header['resolved-at']}"


def check_locks(spec_files: Sequence[Path], *, echo: Echo = console.progress) -> list[str]:
    """Check every given spec's lock (no network); one line per missing, stale or unreadable lock (or spec),
    empty when all are fresh. Fresh ones are reported through ``echo``."""
    problems = []
    for path in spec_files:
        try:
            lock = check_fresh(load_spec(path))
        except BadInput as exc:
            problems.append(str(exc))
        else:
            echo(f"{lock.path}: fresh ({len(lock.pins)} pins, Python {lock.python} and later, resolved "
                 f"{lock.header['resolved-at']})")
    return problems


# ---------------------------------------------------------------------------------------------------- writing


def write_locks(specs: Sequence[StageSpec], *, upgrade: bool = False, upgrade_packages: Sequence[str] = (),
                echo: Echo = console.progress) -> list[str]:
    """Lock each spec in turn against the index a build would use; a spec that fails keeps its old lock and
    the others are still written. One line per failure (empty: all written or unchanged)."""
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
    """Resolve ``spec`` into ``target`` (default :func:`lock_path`, next to the spec); return the lock on disk.

    Existing pins are kept where they still satisfy the spec; ``upgrade`` re-resolves everything,
    ``upgrade_packages`` only those names. The new lock must install, in a uv dry run, on each of
    ``check_platforms`` (Windows, Linux, macOS by default) before it replaces the old one, atomically; when
    pins and header facts are unchanged the file is left as it was. Failure: :class:`EnvBuildError`."""
    target = Path(target) if target is not None else lock_path(spec.source)
    previous = _previous(target, echo)
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
        new_text = _render(spec, header, body)
        draft = Path(work) / target.name
        draft.write_bytes(new_text.encode("utf-8"))
        fresh = read_lock(draft)  # what uv wrote must parse as a lock before it replaces anything
        for platform_name in check_platforms:
            check_installable(draft, platform_name, python, env=env)
        if previous is not None and _same(previous, fresh, body):
            echo(f"{target}: unchanged ({len(fresh.pins)} pins, resolved in {time.monotonic() - started:.1f}s)")
            return previous
        _replace(target, new_text)
    echo(f"{target}: {_summary(previous, fresh)} (resolved in {time.monotonic() - started:.1f}s)")
    return read_lock(target)


def _previous(target: Path, echo: Echo) -> Lock | None:
    """The existing lock (its pins are uv's preferences), or ``None``: absent, or unreadable (said so)."""
    if not target.exists():
        return None
    try:
        return read_lock(target)
    except BadInput as exc:
        echo(f"warning: ignoring the existing lock's pins, it is unreadable: {exc}")
        return None


def _resolve(spec: StageSpec, work: Path, previous: Lock | None, *, python: str, env: Mapping[str, str],
             uv: str, upgrade: bool, upgrade_packages: Sequence[str]) -> str:
    """Run ``uv pip compile`` in ``work`` (no project config found there); return the requirements body."""
    source = work / spec.source.name  # annotations then read "# via -r train.yaml"
    source.write_text("\n".join([*spec.packages, *ADDED]) + "\n", encoding="utf-8")
    output = work / "resolved.txt"
    if previous is not None:
        shutil.copyfile(previous.path, output)  # uv keeps the pins of an existing output file
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
        "lock-format": LOCK_FORMAT, "spec": _display(spec.source), "spec-hash": spec.content_hash(),
        "python": python, "python-request": spec.python.text, "added": " ".join(ADDED),
        "checked-on": " ".join(checked_on), "uv": _uv_version(uv, env), "toolkit": __version__,
        "index": redact(url), "extra-index": " ".join(redact(u) for u in extras),
        "resolved-at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": refresh_command(spec.source),
    }
    return {k: v for k, v in fields.items() if v}


def _render(spec: StageSpec, header: Mapping[str, str], body: str) -> str:
    intro = [f"# mlops_kit lock of {spec.source.name} (stage {spec.stage}): exact versions and sha256 hashes,",
             f"# valid on Windows, Linux and macOS for Python {header['python']} and later. Do not edit; regenerate",
             "# with the command below and commit it together with the spec."]
    return "\n".join([*intro, *(f"# {k}: {v}" for k, v in header.items()), "", body.strip("\n"), ""])


def _same(old: Lock, new: Lock, body: str) -> bool:
    old_body = old.path.read_text(encoding="utf-8").splitlines()[min(p.line for p in old.pins) - 1:]
    same_facts = all(old.header.get(k) == new.header.get(k) for k in _COMPARED)
    return same_facts and [line for line in old_body if line] == [line for line in body.splitlines() if line]


def _replace(target: Path, text: str) -> None:
    try:
        paths.write_text_atomic(target, text)  # "\n" on every OS: the same bytes, the same hash, no git noise
    except OSError as exc:
        raise EnvBuildError(f"{target}: cannot write the lock ({exc})") from None


def _summary(old: Lock | None, new: Lock) -> str:
    if old is None:
        return f"written ({len(new.pins)} pins)"
    before, after = _versions(old.pins), _versions(new.pins)
    changes = [f"+{n} {after[n]}" for n in sorted(after.keys() - before.keys())]
    changes += [f"-{n} {before[n]}" for n in sorted(before.keys() - after.keys())]
    changes += [f"{n} {before[n]} -> {after[n]}" for n in sorted(before.keys() & after.keys())
                if before[n] != after[n]]
    return "updated: " + (", ".join(changes) if changes else "same pins, header refreshed")


def _versions(pins: Iterable[Pin]) -> dict[str, str]:
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
    import json

    try:
        result = proc.run([os.fspath(python), "-I", "-c", _MARKER_PROBE], timeout=120)
        return json.loads(result.stdout.strip().splitlines()[-1])
    except (proc.CommandError, ValueError, IndexError) as exc:
        raise EnvBuildError(f"{python}: cannot read its platform and version ({redact(str(exc))})") from None


def pins_for_this_platform(lock: Lock, environment: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{name: version}`` of the lock's pins whose markers hold in ``environment`` (default: this process's
    interpreter; pass :func:`marker_environment` of a venv's python for that venv)."""
    env = {**default_environment(), **(environment or {})}
    pins: dict[str, str] = {}
    for pin in lock.pins:
        if pin.applies(env):
            if pin.name in pins:
                raise BadInput(f"{lock.path}: line {pin.line}: {pin.name} is pinned twice for "
                               f"{env['sys_platform']} / Python {env['python_full_version']}; re-lock with: "
                               f"{lock.refresh}")
            pins[pin.name] = pin.version
    return pins


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
