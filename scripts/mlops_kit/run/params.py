"""Notebook parameters: the YAML params file, ``-p NAME VALUE`` overrides, and their MLflow-safe flat form.

A params file is a YAML mapping whose top-level keys become variables of the notebook (papermill injects them
after the cell tagged ``parameters``); nested mappings stay Python dicts in the notebook and are flattened to
``a.b.c`` keys only for MLflow. ``-p NAME VALUE`` parses VALUE as YAML, like papermill's ``-p``/``-y``
(``-p lr 0.1`` is a float, ``-p name "0.1"`` a string, ``-p layers [64,32]`` a list); a dotted NAME such as
``-p train.lr 0.1`` sets one key inside a nested mapping.

``output_dir`` is reserved: the runner injects the run's output folder under that name.
"""

from __future__ import annotations

import keyword
import re
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from ..core.errors import BadInput
from ..core.redact import MASK, is_secret_name
from ..core.userfile import read_input

RESERVED = ("output_dir",)
MAX_FILE_BYTES = 1 << 20  # parameters, not data: a wrong file (a dataset) would take minutes to parse and log
MAX_PARAMS = 1000  # after flattening; MLflow logs each one, the notebook gets each one injected
_NAMED_UNDECLARED = 3  # more undeclared names than this: one warning line, not one per name
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def load_params_file(path: Path | str) -> dict[str, Any]:
    """Read a params YAML file (a mapping, duplicate keys refused); every problem names the file."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError:
        size = 0  # read_input names the problem
    if size > MAX_FILE_BYTES:
        raise BadInput(f"{path}: params file of {size / (1 << 20):.1f} MiB, at most {MAX_FILE_BYTES >> 20} MiB: "
                       "parameters, not data (pass a data file's path as a parameter: lineage records its sha256)")
    text = read_input(path, "params file")
    from ..envs.spec import load_yaml_mapping  # (lazy: the MLflow helper process imports this module too)

    data = load_yaml_mapping(text, source=path, what="params file")
    check_names(data, source=str(path))
    return data


def check_names(params: Mapping[Any, Any], *, source: str) -> None:
    """Top-level names must be Python identifiers (papermill writes ``name = value``) and not reserved."""
    for name in params:
        if not isinstance(name, str) or not _IDENTIFIER.match(name) or keyword.iskeyword(name):
            raise BadInput(f"{source}: parameter {name!r}: not a valid Python variable name "
                           "(letters, digits and '_', not starting with a digit)")
        if name in RESERVED:
            raise BadInput(f"{source}: parameter {name!r}: reserved, the runner injects it "
                           "(use --output-dir to choose the folder)")


def check_count(params: Mapping[str, Any], *, source: str) -> None:
    """At most :data:`MAX_PARAMS` parameters once nested keys are counted one by one (as MLflow gets them)."""
    count = len(flatten(params))
    if count > MAX_PARAMS:
        raise BadInput(f"{source}: {count} parameters (nested keys counted one by one), at most {MAX_PARAMS}: "
                       "parameters, not data (pass a data file's path as a parameter: lineage records its sha256)")


def parse_override(name: str, value: str) -> tuple[tuple[str, ...], Any]:
    """``-p NAME VALUE`` -> (key path, value); VALUE is read as YAML (a bare word stays a string)."""
    path = tuple(name.split("."))
    if not name or not all(_IDENTIFIER.match(part) for part in path) or keyword.iskeyword(path[0]):
        raise BadInput(f"-p {name!r}: NAME must be a Python variable name, optionally dotted into a nested "
                       "mapping (e.g. -p lr 0.1 or -p train.lr 0.1)")
    if path[0] in RESERVED:
        raise BadInput(f"-p {name}: reserved, the runner injects it (use --output-dir)")
    try:
        parsed = yaml.safe_load(value) if value.strip() else value
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        shown = MASK if is_secret_name(name) else repr(value)
        raise BadInput(f"-p {name}: value {shown} is not valid YAML ({problem}); quote it to pass text") from None
    return path, parsed


def merge_overrides(params: Mapping[str, Any], overrides: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Apply ``-p`` overrides (in order) on a copy of ``params``; nested keys create/replace mappings."""
    merged = _deep_copy(params)
    for name, value in overrides:
        path, parsed = parse_override(name, value)
        target = merged
        for part in path[:-1]:
            if not isinstance(target.get(part), dict):
                target[part] = {}
            target = target[part]
        target[path[-1]] = parsed
    return merged


def _deep_copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep_copy(v) for v in value]
    return value


def flatten(params: Mapping[Any, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; lists and scalars are leaves; an empty mapping is a leaf too."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = value
    return flat


def declared_parameters(nb: Any) -> set[str] | None:
    """Names assigned in the notebook's ``parameters`` cell, read by papermill's Python translator (its public
    ``inspect``, what ``papermill --help-notebook`` uses); None when the notebook has no such cell."""
    from papermill.translators import PythonTranslator
    from papermill.utils import find_first_tagged_cell_index

    index = find_first_tagged_cell_index(nb, "parameters")
    if index < 0:
        return None
    return {p.name for p in PythonTranslator.inspect(nb.cells[index])}


def declared_defaults(nb: Any) -> dict[str, Any]:
    """The literal default values of the notebook's ``parameters`` cell (``api_key = "sk-dev"``); an expression
    that is not a literal is left out."""
    import ast

    from papermill.translators import PythonTranslator

    cell = next((c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])), None)
    defaults: dict[str, Any] = {}
    for parameter in PythonTranslator.inspect(cell) if cell is not None else []:
        try:
            defaults[parameter.name] = ast.literal_eval(parameter.default)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return defaults


def undeclared_warnings(nb: Any, passed: Iterable[str], *, notebook: Path) -> list[str]:
    """Warnings for a notebook without a ``parameters`` cell or names it does not declare (``output_dir`` aside)."""
    declared = declared_parameters(nb)
    passed = [name for name in passed if name not in RESERVED]
    if declared is None:
        return [f"{notebook}: no cell tagged 'parameters'; the injected parameters cell goes first "
                "(tag a cell 'parameters' in JupyterLab: Property Inspector > Cell Tags)"]
    unknown = [name for name in passed if name not in declared]
    if len(unknown) > _NAMED_UNDECLARED:
        shown = ", ".join(repr(name) for name in unknown[:_NAMED_UNDECLARED])
        return [f"{notebook}: {len(unknown)} parameters are not declared in its 'parameters' cell (passed anyway): "
                f"{shown} and {len(unknown) - _NAMED_UNDECLARED} more"]
    return [f"{notebook}: parameter {name!r} is not declared in its 'parameters' cell (passed anyway)"
            for name in unknown]


def yaml_text(params: Mapping[str, Any]) -> str:
    """The params as YAML text (used for the masked copy logged to MLflow)."""
    return yaml.safe_dump(dict(params), sort_keys=False, allow_unicode=True, default_flow_style=False)
