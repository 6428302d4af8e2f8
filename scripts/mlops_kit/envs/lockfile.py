"""Stage lock files (``specs/<stage>.lock.txt``), the format: reading, the seal, checking fresh, pins per platform.

A lock is ``uv pip compile --universal --generate-hashes`` output (written by :mod:`mlops_kit.envs.resolution`) for
the spec's packages plus what the toolkit adds to every stage venv (``ipykernel``, and ``pip`` so ``%pip`` works
and is pinned too), resolved for the spec's Python minor and every later one, with environment markers kept: one
file serves Windows, Linux and macOS. On top sits a header of ``# key: value`` comment lines that this module
parses (see :data:`REQUIRED`): the spec's content hash (freshness, checked without network), the Python minor, uv
and toolkit versions, the index URLs with credentials masked, the UTC time of resolution and the command that
regenerates the lock.

A lock is whole or refused. Its header ends with a **seal**: ``# digest: sha256:...`` of every other line (line
endings aside: a Windows checkout's CRLF is the same lock) and ``# blocks:``, a short digest of each block (a line
with the indented lines under it: a package's pin with its hashes and ``# via`` notes; a header line), labelled
with the package it pins. Any hand edit breaks the digest; the block digests, compared in order with the file's
blocks, name the first edited line without the original at hand: a block removed, added, or changed. A lock of
the previous format (no seal) is refused with the command that re-locks it (its pins are kept).

* :func:`check_fresh` / :func:`read_lock`: a missing, stale, edited, malformed lock, one saved with a byte-order
  mark or in another encoding, or one pinning a package twice for a platform is :class:`BadInput` (exit 2), one
  line naming the lock, the line and the command that re-locks; milliseconds, no network.
* :func:`check_locks`: the same for several specs, one line per problem (create_venv's ``--check-lock``).
* :func:`pins_for_this_platform`: the pins whose markers hold in a marker environment.
* :func:`render_lock` / :func:`seal`: the text of a lock from its header fields and uv's body, sealed.
"""

from __future__ import annotations

import codecs
import dataclasses
import functools
import hashlib
import os
import re
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from packaging.markers import InvalidMarker, Marker, default_environment
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from ..core import console
from ..core.console import Echo
from ..core.errors import BadInput
from .spec import StageSpec, load_spec

LOCK_SUFFIX = ".lock.txt"
LOCK_FORMAT = "2"  # 2: sealed (digest + block digests); 1: unsealed, refused with the command that re-locks
ADDED = ("ipykernel", "pip")  # what every stage venv gets on top of the spec's packages
PLATFORMS = ("windows", "linux", "macos")  # what one universal lock must install on (uv --python-platform)
REQUIRED = ("lock-format", "spec-hash", "python", "added", "uv", "toolkit", "index", "resolved-at", "command")
_TOOLKIT_ROOT = Path(__file__).resolve().parents[3]
_HEADER_LINE = re.compile(r"^#\s*(?P<key>[a-z][a-z0-9-]*):\s*(?P<value>.*?)\s*$")
_REQ_LINE = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)==(?P<version>[A-Za-z0-9.!+_-]+)"
                       r"\s*(?:;\s*(?P<marker>[^\\]*?))?\s*(?P<more>\\)?$")
_HASH_LINE = re.compile(r"^\s+--hash=sha256:(?P<hash>[0-9a-f]{64})\s*(?P<more>\\)?$")
_DIGEST, _BLOCKS = "# digest: ", "# blocks: "  # the seal's lines, the last of the header
_BLOCK_TOKEN = re.compile(r"^(?:(?P<label>[a-z0-9][a-z0-9._-]*):)?(?P<digest>[0-9a-f]{8})$")
_SEAL_WIDTH = 118
# The marker environments a lock is checked against without network (duplicate pins): what uv's --python-platform
# windows/linux/macos targets report, for each CPython minor from the lock's to the newest one known.
_PLATFORM_MARKERS = {
    "windows": {"sys_platform": "win32", "platform_system": "Windows", "os_name": "nt", "platform_machine": "AMD64"},
    "linux": {"sys_platform": "linux", "platform_system": "Linux", "os_name": "posix", "platform_machine": "x86_64"},
    "macos": {"sys_platform": "darwin", "platform_system": "Darwin", "os_name": "posix", "platform_machine": "arm64"},
}
_NEWEST_MINOR = 15


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
        return self.marker is None or _marker(self.marker).evaluate(dict(environment))


@functools.lru_cache(maxsize=1024)
def _marker(text: str) -> Marker:
    return Marker(text)


@dataclass(frozen=True)
class Lock:
    """A parsed lock: ``header`` (its ``# key: value`` fields, the seal's aside), ``pins`` and ``sha256`` of the
    file's bytes (the part of a venv cache key that says "this exact lock"); ``data``, those bytes (the audit
    copy)."""

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


def read_lock(path: Path | str, *, whole: bool = True) -> Lock:
    """Parse a lock and check every rule a build applies; :class:`BadInput` naming the file (and line) otherwise:
    an encoding other than UTF-8 without BOM, an older or newer format, a broken seal (naming the first edited
    line), a missing header field, anything but pins with hashes and comments in the body (a merge conflict, an
    ``--index-url``, a loose ``>=``), no pins, a package pinned twice for one platform and Python.

    ``whole=False`` reads only what a re-lock needs from a lock that is no longer whole (its header facts and
    pins, which uv keeps as preferences): no encoding, format, seal or duplicate check."""
    path = Path(path)
    data = _read_bytes(path)
    command = refresh_command(spec_path_for(path))  # not the header's: it is not trusted before the seal is
    lines = _lines(_decode(data, path, command) if whole else data.decode("utf-8-sig", errors="replace"))
    header, first = _parse_header(lines)
    if whole:
        _check_format(header, path, command)
        _check_seal(lines, first, path, command)
        _check_fields(header, path, command)
    pins = _parse_pins(lines[first:], path, first)
    if not pins:
        raise BadInput(f"{path}: the lock pins no packages; re-lock with: {command}")
    lock = Lock(path, header, tuple(pins), hashlib.sha256(data).hexdigest(), data)
    if whole:
        _refuse_duplicates(lock)
    return lock


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BadInput(f"{path}: no such lock file; create it with: "
                       f"{refresh_command(spec_path_for(path))}") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the lock ({exc})") from None


def _decode(data: bytes, path: Path, command: str) -> str:
    """UTF-8 without a byte-order mark, as the toolkit writes it; an editor's re-save is named for what it is."""
    fix = f"a lock is only written by the toolkit: restore it from git or re-lock with: {command}"
    if data.startswith(codecs.BOM_UTF8):
        raise BadInput(f"{path}: starts with a UTF-8 byte-order mark (BOM), added when an editor (Notepad, "
                       f"PowerShell's Set-Content -Encoding UTF8) saved it; {fix}")
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise BadInput(f"{path}: is UTF-16 (what Windows PowerShell's '>' and Out-File write); {fix}")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise BadInput(f"{path}: line {line}: is not UTF-8 (byte 0x{data[exc.start]:02x}); {fix}") from None


def _lines(text: str) -> list[str]:
    """The file's lines without their ends; ``\r\n`` counts as ``\n`` (a Windows checkout with core.autocrlf)."""
    lines = text.split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def _parse_header(lines: Sequence[str]) -> tuple[dict[str, str], int]:
    """The ``# key: value`` lines before the first requirement (the seal's aside); returns them and the index of
    the first body line."""
    header: dict[str, str] = {}
    first = len(lines)
    for index, line in enumerate(lines):
        if line.strip() and not line.startswith("#"):
            first = index
            break
        match = _HEADER_LINE.match(line)
        if match and not line.startswith((_DIGEST, _BLOCKS)):
            header.setdefault(match["key"], match["value"])
    return header, first


def _check_format(header: Mapping[str, str], path: Path, command: str) -> None:
    found = header.get("lock-format")
    if found is None:
        raise BadInput(f"{path}: not a mlops_kit lock (header field 'lock-format' missing); re-lock with: {command}")
    if found == LOCK_FORMAT:
        return
    if found.isdigit() and int(found) < int(LOCK_FORMAT):
        raise BadInput(f"{path}: lock format {found} was written by an older toolkit (before locks were sealed "
                       f"against hand edits); this one reads format {LOCK_FORMAT}: re-lock with: {command} "
                       "(the pins are kept)")
    raise BadInput(f"{path}: lock format {found!r} is not the format {LOCK_FORMAT} this toolkit reads (written by a "
                   f"newer toolkit?); update the toolkit or re-lock with: {command}")


def _check_fields(header: Mapping[str, str], path: Path, command: str) -> None:
    missing = [key for key in REQUIRED if key not in header]
    if missing:
        raise BadInput(f"{path}: not a mlops_kit lock (header field '{missing[0]}' missing); re-lock with: "
                       f"{command}")
    if not re.match(r"^3\.\d{1,2}$", header["python"]):
        raise BadInput(f"{path}: header field 'python': {header['python']!r} is not a Python minor such as 3.12; "
                       f"re-lock with: {command}")


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


# ---------------------------------------------------------------------------------------------------- seal


@dataclass(frozen=True)
class _Block:
    """A line not indented with the indented lines under it: a package's pin with its hashes and ``# via`` notes,
    or one header line; ``label``: the package it pins (empty for other blocks)."""

    line: int  # 1-based number of its first line
    lines: tuple[str, ...]

    @property
    def label(self) -> str:
        match = _REQ_LINE.match(self.lines[0])
        return canonicalize_name(match["name"]) if match else ""

    @property
    def digest(self) -> str:
        return hashlib.sha256("\n".join(self.lines).encode("utf-8")).hexdigest()[:8]

    @property
    def token(self) -> str:
        return f"{self.label}:{self.digest}" if self.label else self.digest

    @property
    def shown(self) -> str:
        text = self.lines[0].rstrip().removesuffix("\\").rstrip()
        return (text if len(text) <= 80 else text[:77] + "...") or "a blank line"


def seal(text: str) -> str:
    """``text`` (a lock's header and body) with its seal (any previous one replaced): the ``# digest:`` of every
    other line and the ``# blocks:`` digests, after the header's last line. What :func:`render_lock` writes."""
    lines = _lines(text)
    first = _parse_header(lines)[1]
    kept = [line for index, line in enumerate(lines) if not _is_seal(index, line, first)]
    first -= len(lines) - len(kept)
    end = first
    while end > 0 and not kept[end - 1].startswith("#"):
        end -= 1  # the seal goes after the last header line, before the blank line that ends the header
    tokens = " ".join(block.token for block in _blocks(kept, first))
    width = _SEAL_WIDTH - len(_BLOCKS)
    wrapped = [_BLOCKS + part for part in textwrap.wrap(tokens, width, break_on_hyphens=False)]
    return "\n".join([*kept[:end], _DIGEST + _digest(kept), *wrapped, *kept[end:]]) + "\n"


def upgrade_recorded(data: bytes, recorded_sha256: str | None) -> bytes | None:
    """A lock a run recorded in an older format (before seals), sealed in today's format with its pins and body
    unchanged, so that a replay can install it; only when its bytes are the very ones the run recorded
    (``recorded_sha256``, from its env.json: that record is the lock's integrity, not a seal). ``None`` when the
    lock is already in today's format, or is not the recorded one (then it is read, and refused, as it is)."""
    if recorded_sha256 is None or hashlib.sha256(data).hexdigest() != recorded_sha256:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    header, _first = _parse_header(_lines(text))
    found = header.get("lock-format", "")
    if not found.isdigit() or int(found) >= int(LOCK_FORMAT):
        return None
    return seal(text.replace(f"# lock-format: {found}\n", f"# lock-format: {LOCK_FORMAT}\n", 1)).encode("utf-8")


def _is_seal(index: int, line: str, first: int) -> bool:
    return index < first and line.startswith((_DIGEST, _BLOCKS))


def _digest(lines: Sequence[str]) -> str:
    return "sha256:" + hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def _blocks(lines: Sequence[str], first: int, numbers: Sequence[int] | None = None) -> list[_Block]:
    """``lines`` grouped into blocks; ``numbers``: each line's 1-based number in the file (default: its index + 1)."""
    numbers = numbers or range(1, len(lines) + 1)
    blocks: list[tuple[int, list[str]]] = []
    for index, (number, line) in enumerate(zip(numbers, lines)):
        if index >= first and line[:1].isspace() and blocks:  # an indented body line: under the block above
            blocks[-1][1].append(line)
        else:
            blocks.append((number, [line]))
    return [_Block(number, tuple(group)) for number, group in blocks]


def _check_seal(lines: Sequence[str], first: int, path: Path, command: str) -> None:
    """:class:`BadInput` naming the first edited line unless the seal matches every other line."""
    seal_at = [(index + 1, line) for index, line in enumerate(lines) if _is_seal(index, line, first)]
    digests = [(number, line) for number, line in seal_at if line.startswith(_DIGEST)]
    stored = [token for _, line in seal_at if line.startswith(_BLOCKS) for token in line[len(_BLOCKS):].split()]
    refused = f"is refused whole: restore it from git or re-lock with: {command}"
    if len(digests) != 1 or not stored:
        raise BadInput(f"{path}: its seal (one '{_DIGEST.strip()}' line and '{_BLOCKS.strip()}' lines at the end of "
                       f"the header) is missing or repeated; the lock was edited by hand and {refused}")
    kept = [(index + 1, line) for index, line in enumerate(lines) if not _is_seal(index, line, first)]
    blocks = _blocks([line for _, line in kept], first - len(seal_at), [number for number, _ in kept])
    if digests[0][1][len(_DIGEST):].strip() == _digest([line for _, line in kept]):  # every line as sealed
        if stored == [block.token for block in blocks]:
            return
        where = None  # but the block list was edited
    else:
        where = _first_edit(stored, blocks, len(lines))
    where = where or f"line {digests[0][0]}: the seal itself differs"
    raise BadInput(f"{path}: {where}; the lock was edited by hand (its digest no longer matches) and {refused}")


def _first_edit(stored: Sequence[str], blocks: Sequence[_Block], last_line: int) -> str | None:
    """Where the file's blocks first part from the sealed ones: a block changed, added or removed."""
    sealed = [_BLOCK_TOKEN.match(token) for token in stored]
    digests = [match["digest"] if match else token for match, token in zip(sealed, stored)]
    labels = [(match["label"] or "") if match else "" for match in sealed]
    for i in range(max(len(digests), len(blocks))):
        if i < len(digests) and i < len(blocks) and digests[i] == blocks[i].digest:
            continue
        if i >= len(blocks):
            return f"line {last_line + 1}: {_removed(labels[i:])} from the end"
        block = blocks[i]
        if i >= len(digests):
            return f"line {block.line} ({block.shown}): added"
        removed = next((k for k in range(1, len(digests) - i) if digests[i + k] == block.digest), None)
        added = next((k for k in range(1, len(blocks) - i) if blocks[i + k].digest == digests[i]), None)
        if removed is not None and (added is None or removed <= added):
            return f"line {block.line}: {_removed(labels[i:i + removed])} here"
        if added is not None:
            return f"line {block.line} ({block.shown}): added"
        return f"line {block.line} ({block.shown}): differs from what was locked"
    return None


def _removed(labels: Sequence[str]) -> str:
    names = list(dict.fromkeys(label for label in labels if label))
    count = len(labels)
    if not names:
        return f"{count} line{'s' if count > 1 else ''} {'were' if count > 1 else 'was'} removed"
    blocks = "block" if count == 1 else f"{count} blocks"
    return f"the {blocks} of {', '.join(names)} {'was' if count == 1 else 'were'} removed"


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
    """The lock's text: a note for whoever opens it, the ``# key: value`` header and its seal, a blank line, uv's
    body."""
    intro = [f"# mlops_kit lock of {spec.source.name} (stage {spec.stage}): exact versions and sha256 hashes, valid",
             (f"# on Windows, Linux and macOS for Python {header['python']} and later. Do not edit: the digest below "
              "covers every line,"),
             "# a lock edited by hand is refused. Regenerate it with the command below; commit it with the spec."]
    return seal("\n".join([*intro, *(f"# {k}: {v}" for k, v in header.items()), "", body.strip("\n"), ""]))


# ---------------------------------------------------------------------------------------------------- pins


def pins_for_this_platform(lock: Lock, environment: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{name: version}`` of the lock's pins whose markers hold in ``environment`` (default: this process's
    interpreter; pass :func:`mlops_kit.envs.locked_install.marker_environment` of a venv's python for that venv)."""
    env: dict[str, str] = {**cast("dict[str, str]", default_environment()), **(environment or {})}  # all str
    pins: dict[str, Pin] = {}
    for pin in lock.pins:
        if pin.applies(env):
            if pin.name in pins:
                raise _pinned_twice(lock, pins[pin.name], pin, env["sys_platform"], env["python_full_version"])
            pins[pin.name] = pin
    return {name: pin.version for name, pin in pins.items()}


def marker_environments(python: str) -> list[tuple[str, dict[str, str]]]:
    """``(platform, environment)`` for each of :data:`PLATFORMS` and each CPython from ``python`` (a minor) to the
    newest known, at its first and a late patch: what a lock must hold for, checked without network."""
    major, minor = (int(part) for part in python.split("."))
    out = []
    for platform_name, markers in _PLATFORM_MARKERS.items():
        for number in range(minor, max(minor, _NEWEST_MINOR) + 1):
            for patch in (0, 99):
                version = f"{major}.{number}.{patch}"
                out.append((platform_name, {
                    **markers, "implementation_name": "cpython", "platform_python_implementation": "CPython",
                    "implementation_version": version, "python_full_version": version,
                    "python_version": f"{major}.{number}", "platform_release": "", "platform_version": ""}))
    return out


def _refuse_duplicates(lock: Lock) -> None:
    """:class:`BadInput` if two pins of one package both hold on a platform and Python the lock serves (the build
    there would refuse it): only packages pinned more than once (markers forking by Python version) are looked at."""
    by_name: dict[str, list[Pin]] = {}
    for pin in lock.pins:
        by_name.setdefault(pin.name, []).append(pin)
    repeated = [pins for pins in by_name.values() if len(pins) > 1]
    if not repeated:
        return
    for platform_name, env in marker_environments(lock.python):
        for pins in repeated:
            holding = [pin for pin in pins if pin.applies(env)]
            if len(holding) > 1:
                raise _pinned_twice(lock, holding[0], holding[1], platform_name, env["python_version"])


def _pinned_twice(lock: Lock, first: Pin, second: Pin, platform_name: str, python: str) -> BadInput:
    return BadInput(f"{lock.path}: line {second.line}: {second.name} is pinned twice for {platform_name} / Python "
                    f"{python} (lines {first.line} and {second.line}); re-lock with: {lock.refresh}")
