"""The stage spec (``specs/<stage>.yaml``): strict parsing into a typed record.

Every problem becomes a :class:`~mlops_kit.errors.BadInput` whose one line names the file and the field, so a
typo in a GoCD job fails in a second with a readable message instead of half-way through an install.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import json
import re
import urllib.parse
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence, TypeVar

import yaml
from packaging.requirements import InvalidRequirement, Requirement
from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import Version

from ..core import paths
from ..core.errors import BadInput
from ..core.redact import redact
from ..core.userfile import read_input

REQUIRED_FIELDS = ("stage", "python_version", "venv_name", "packages", "kernel_display_name")
OPTIONAL_FIELDS = ("index_url", "extra_index_urls", "description", "reuse")
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_STAGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")
_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL", *(f"COM{i}" for i in range(1, 10)), *(f"LPT{i}" for i in range(1, 10))}
_VERSION_TEXT = re.compile(r"^3\.\d{1,2}(\.\d{1,3})?$")
OLDEST_STAGE_PYTHON = (3, 8)  # older CPythons have no ipykernel/uv support worth building on



@dataclass(frozen=True)
class PythonRequest:
    """What the spec asks for: ``3.8`` (any 3.8.x, newest wins), ``3.8.10`` (exactly) or a PEP 440 specifier."""

    text: str
    specifier: SpecifierSet
    exact: Version | None = None

    @property
    def hint_version(self) -> str:
        """A concrete version to put in install hints (``py install 3.8``, ``pyenv install 3.8.10``)."""
        if self.exact is not None or _VERSION_TEXT.match(self.text):
            return self.text
        lows = [s.version for s in self.specifier if s.operator in (">=", "==", "~=", ">")]
        return lows[0] if lows else "3.12"

    def accepts(self, version: tuple[int, int, int]) -> bool:
        if tuple(version[:2]) < OLDEST_STAGE_PYTHON:
            return False
        return self.specifier.contains(Version(".".join(map(str, version))), prereleases=True)


@dataclass(frozen=True)
class StageSpec:
    """A validated stage spec, plus the file it came from (kept verbatim for the audit bundle)."""

    stage: str
    python: PythonRequest
    venv_name: str
    packages: tuple[str, ...]
    kernel_display_name: str
    index_url: str | None = None
    extra_index_urls: tuple[str, ...] = ()
    description: str | None = None
    reuse: bool = False  # run_notebook.py may reuse an earlier run with the same reuse key (not part of the env)
    source: Path = field(default=Path("spec.yaml"), compare=False)
    text: str = field(default="", compare=False, repr=False)

    def content_hash(self) -> str:
        """Hash of what defines the environment (not comments/ordering of the YAML): the venv cache key part."""
        payload = {
            "python_version": self.python.text,
            "packages": sorted(self.packages),
            "index_url": self.index_url,
            "extra_index_urls": list(self.extra_index_urls),
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def load_spec(path: Path | str) -> StageSpec:
    """Read and validate ``path``; raise :class:`BadInput` naming the file and field on any problem."""
    path = Path(path)
    return parse_spec(read_input(path, "spec file"), source=path)


def spec_files(given: Sequence[Path | str]) -> list[Path]:
    """The spec files meant by ``--spec`` arguments: a file as given, a folder's ``*.yaml`` (sorted, not
    recursive); each file once. A folder without specs is :class:`BadInput`."""
    out: dict[str, Path] = {}
    for entry in map(Path, given):
        found = sorted(entry.glob("*.yaml")) if entry.is_dir() else [entry]
        if not found:
            raise BadInput(f"{entry}: a folder with no *.yaml stage specs in it")
        for path in found:
            out.setdefault(paths.norm(path), path)
    return list(out.values())


def parse_spec(text: str, *, source: Path) -> StageSpec:
    """Validate YAML ``text`` of a spec; ``source`` is only used in messages and kept on the record."""
    data = load_yaml_mapping(text, source=source, what="spec")
    _check_keys(data, source)
    err = _field_error(source)
    return StageSpec(
        stage=_name(data, "stage", _STAGE_NAME, err),
        python=parse_python_request(_text(data, "python_version", err), err),
        venv_name=_venv_name(data, err),
        packages=_packages(data, err),
        kernel_display_name=_text(data, "kernel_display_name", err),
        index_url=_index_url(_optional_text(data, "index_url", err), "index_url", err),
        extra_index_urls=tuple(_index_url(u, "extra_index_urls", err)
                               for u in _optional_list(data, "extra_index_urls", err)),
        description=_optional_text(data, "description", err),
        reuse=_optional_bool(data, "reuse", err),
        source=source,
        text=text,
    )


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys (PyYAML would silently keep the last one)."""


def _construct_unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if not isinstance(key, Hashable):  # [a, b]: 1 or {a: 1}: 2 (PyYAML would raise TypeError here)
            raise yaml.constructor.ConstructorError(None, None, f"unhashable key {_kind(key)}", key_node.start_mark)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def load_yaml_mapping(text: str, *, source: Path, what: str) -> dict[str, Any]:
    """Parse YAML that must be a mapping (specs, params files); errors name the file and the line."""
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise BadInput(f"{source}:{where} invalid YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise BadInput(f"{source}: the {what} must be a YAML mapping (key: value), got {_kind(data)}")
    return data


def _field_error(source: Path) -> Callable[[str, str], BadInput]:
    return lambda name, problem: BadInput(f"{source}: field '{name}': {problem}")


def _check_keys(data: dict[str, Any], source: Path) -> None:
    known = REQUIRED_FIELDS + OPTIONAL_FIELDS
    for key in data:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known fields: {', '.join(known)})"
            raise BadInput(f"{source}: field '{key}': unknown field{hint}")
    for key in REQUIRED_FIELDS:
        if key not in data:
            raise BadInput(f"{source}: field '{key}': missing (required fields: {', '.join(REQUIRED_FIELDS)})")


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "a mapping",
            type(None): "nothing (null)"}.get(type(value), type(value).__name__)


def _text(data: dict[str, Any], name: str, err: Callable[[str, str], BadInput]) -> str:
    value = data[name]
    if name == "python_version" and isinstance(value, (int, float)) and not isinstance(value, bool):
        raise err(name, f"must be a quoted string: YAML read the unquoted value as the number {value} "
                        "(write it with quotes, e.g. python_version: \"3.10\"; unquoted 3.10 becomes 3.1)")
    if not isinstance(value, str):
        raise err(name, f"must be a string, got {_kind(value)}")
    if not value.strip():
        raise err(name, "must not be empty")
    return value.strip()


def _optional_text(data: dict[str, Any], name: str, err: Callable[[str, str], BadInput]) -> str | None:
    return _text(data, name, err) if data.get(name) is not None else None


def _optional_bool(data: dict[str, Any], name: str, err: Callable[[str, str], BadInput]) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise err(name, f"must be true or false, got {_kind(value)} {value!r:.40}")
    return value


def _optional_list(data: dict[str, Any], name: str, err: Callable[[str, str], BadInput]) -> tuple[str, ...]:
    value = data.get(name)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise err(name, "must be a list of non-empty strings")
    return tuple(v.strip() for v in value)


_Url = TypeVar("_Url", bound="str | None")  # an index_url may be absent; each of extra_index_urls is there


def _index_url(value: _Url, name: str, err: Callable[[str, str], BadInput]) -> _Url:
    """An index is one URL (or path) handed to the installer as an option's value, never an option itself."""
    if value is not None and (value.startswith("-") or any(ch.isspace() for ch in value)):
        raise err(name, f"{value!r} must be a single index URL such as https://pypi.org/simple "
                        "(no installer options, no spaces)")
    if value is not None and "@" in urllib.parse.urlsplit(value).netloc:
        # The spec text is copied to audit/spec.yaml, GoCD artifacts and MLflow: a token here would leak.
        raise err(name, f"{redact(value)!r} has a user/password part: put credentials in "
                        "PIP_INDEX_URL / UV_DEFAULT_INDEX (environment, a GoCD secure variable) or a keyring, "
                        "not in a committed spec")
    return value


def _name(data: dict[str, Any], name: str, pattern: re.Pattern[str], err: Callable[[str, str], BadInput]) -> str:
    value = _text(data, name, err)
    if not pattern.match(value):
        raise err(name, f"{value!r} must be letters, digits, '_' or '-' (at most 64), starting with a letter or digit")
    return value


def _venv_name(data: dict[str, Any], err: Callable[[str, str], BadInput]) -> str:
    value = _text(data, "venv_name", err)
    if value != data["venv_name"]:  # " ml_x" would silently become another folder than the one written
        raise err("venv_name", f"{data['venv_name']!r} starts or ends with spaces: remove them")
    if not _PLAIN_NAME.match(value) or value.endswith("."):
        raise err("venv_name", f"{value!r} must be a plain folder name (letters, digits, '.', '_', '-'; "
                               "no path separators, drive letters or '..')")
    if value.split(".")[0].upper() in _WINDOWS_RESERVED:
        raise err("venv_name", f"{value!r} is a reserved device name on Windows")
    return value


def _packages(data: dict[str, Any], err: Callable[[str, str], BadInput]) -> tuple[str, ...]:
    value = data["packages"]
    if not isinstance(value, list):
        raise err("packages", f"must be a list of requirements, got {_kind(value)}")
    if not value:
        raise err("packages", "must list at least one package")
    out = []
    for number, entry in enumerate(value, start=1):
        out.append(_requirement(entry, number, err))
    return tuple(out)


def _requirement(entry: Any, number: int, err: Callable[[str, str], BadInput]) -> str:
    if not isinstance(entry, str) or not entry.strip():
        raise err("packages", f"entry {number} must be a non-empty string, got {_kind(entry)}")
    entry = entry.strip()
    if entry.startswith("-"):
        raise err("packages", f"entry {number} {entry!r} is an installer option, not a package "
                              "(put index settings in 'index_url' / 'extra_index_urls')")
    try:
        Requirement(entry)
    except InvalidRequirement as exc:
        raise err("packages", f"entry {number} {entry!r} is not a PEP 508 requirement "
                              f"({str(exc).splitlines()[0]})") from None
    return entry


@functools.cache
def _candidate_versions() -> tuple[Version, ...]:
    """Every version a range could ever pick (3.8.0 ... 3.40.60): one that none satisfies is a typo."""
    return tuple(Version(f"3.{minor}.{patch}") for minor in range(8, 41) for patch in range(61))


def parse_python_request(text: str, err: Callable[[str, str], BadInput] | None = None) -> PythonRequest:
    """Turn ``3.8``, ``3.8.10`` or ``>=3.10,<3.13`` into a :class:`PythonRequest`."""
    err = err or (lambda name, problem: BadInput(f"--python-version: {problem}"))
    if _VERSION_TEXT.match(text):
        if tuple(int(p) for p in text.split(".")[:2]) < OLDEST_STAGE_PYTHON:
            raise err("python_version", f"{text!r} is too old: stage venvs need CPython 3.8 or newer")
        if text.count(".") == 2:
            return PythonRequest(text, SpecifierSet(f"=={text}"), Version(text))
        return PythonRequest(text, SpecifierSet(f"=={text}.*"))
    try:
        specifier = SpecifierSet(text)
    except InvalidSpecifier:
        specifier = None
    if not specifier or not str(specifier):
        raise err("python_version", f"{text!r} is neither a version like \"3.8\" / \"3.8.10\" "
                                    "nor a PEP 440 specifier like \">=3.10,<3.13\"")
    if not any(specifier.contains(v, prereleases=True) for v in _candidate_versions()):
        raise err("python_version", f"{text!r}: no Python version satisfies it (stage Pythons are CPython 3.8 "
                                    "or newer); check the bounds")
    return PythonRequest(text, specifier)
