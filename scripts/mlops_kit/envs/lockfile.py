"""Stage lock files (``specs/<stage>.lock.txt``), the format: reading, checking fresh, the pins for a platform.

A lock is ``uv pip compile --universal --generate-hashes`` output (written by :mod:`mlops_kit.envs.resolution`) for
the spec's packages plus what the toolkit adds to every stage venv (``ipykernel``, and ``pip`` so ``%pip`` works
and is pinned too), resolved for the spec's Python minor and every later one, with environment markers kept: one
file serves Windows, Linux and macOS. On top sits a header of ``# key: value`` comment lines that this module
parses (see :data:`REQUIRED`): the spec's content hash (freshness, checked without network), the Python minor, uv
and toolkit versions, the index URLs with credentials masked, the UTC time of resolution and the command that
regenerates the lock.

* :func:`check_fresh` / :func:`read_lock`: stale, missing or malformed locks are :class:`BadInput` (exit 2), one
  line naming the spec, the lock and the refresh command; milliseconds, no network.
* :func:`check_locks`: the same for several specs, one line per problem (create_venv's ``--check-lock``).
* :func:`pins_for_this_platform`: the pins whose markers hold in a marker environment.
* :func:`render_lock`: the text of a lock from its header fields and uv's body.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from packaging.markers import InvalidMarker, Marker, default_environment
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..core import console
from ..core.console import Echo
from ..core.errors import BadInput
from .spec import StageSpec, load_spec

LOCK_SUFFIX = ".lock.txt"
LOCK_FORMAT = "1"
ADDED = ("ipykernel", "pip")  # what every stage venv gets on top of the spec's packages
PLATFORMS = ("windows", "linux", "macos")  # what one universal lock must install on (uv --python-platform)
REQUIRED = ("lock-format", "spec-hash", "python", "added", "uv", "toolkit", "index", "resolved-at", "command")
_TOOLKIT_ROOT = Path(__file__).resolve().parents[3]
_HEADER_LINE = re.compile(r"^#\s*(?P<key>[a-z][a-z0-9-]*):\s*(?P<value>.*?)\s*$")
_REQ_LINE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.!+_-]+)"
                       r"\s*(?:;\s*(?P<marker>[^\\]*?))?\s*(?P<more>\\)?$")
_HASH_LINE = re.compile(r"^\s+--hash=sha256:(?P<hash>[0-9a-f]{64})\s*(?P<more>\\)?$")


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
    return f"python scripts/create_venv.py --spec {display_path(spec_path)} --lock"


def display_path(path: Path | str) -> str:
    """A spec path as a command in a committed file should show it: relative to the toolkit root if inside."""
    absolute = Path(os.path.abspath(path))
    if absolute.is_relative_to(_TOOLKIT_ROOT):
        return absolute.relative_to(_TOOLKIT_ROOT).as_posix()
    return Path(path).as_posix()



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


def render_lock(spec: StageSpec, header: Mapping[str, str], body: str) -> str:
    """The lock's text: a note for whoever opens it, the ``# key: value`` header, a blank line, uv's body."""
    intro = [f"# mlops_kit lock of {spec.source.name} (stage {spec.stage}): exact versions and sha256 hashes,",
             f"# valid on Windows, Linux and macOS for Python {header['python']} and later. Do not edit; regenerate",
             "# with the command below and commit it together with the spec."]
    return "\n".join([*intro, *(f"# {k}: {v}" for k, v in header.items()), "", body.strip("\n"), ""])


# ---------------------------------------------------------------------------------------------------- pins


def pins_for_this_platform(lock: Lock, environment: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{name: version}`` of the lock's pins whose markers hold in ``environment`` (default: this process's
    interpreter; pass :func:`mlops_kit.envs.locked_install.marker_environment` of a venv's python for that venv)."""
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


