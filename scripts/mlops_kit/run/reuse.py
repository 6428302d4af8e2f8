"""The reuse key of a stage run: everything that can change its result, as one sha256, and why two keys differ.

A stage run may be *reused* (``run_notebook.py --reuse``, ``reuse: true`` in its spec) when an earlier FINISHED run
had the same key: its results are copied instead of executing the notebook again
(:mod:`mlops_kit.run.reuse_origin` finds and fetches that run). The key must therefore cover every cause of a
different result the toolkit can know, and nothing cosmetic:

* ``notebook``: the sha256 of each code cell's source (no outputs, execution counts, ids, metadata, markdown);
* ``parameters``: the effective parameters (params file, then ``-p``) without ``output_dir`` (where, not what) and
  without secret-named ones (a secret is a credential, not an input: a rotated password must not re-train a model);
  a parameter naming an input file or folder enters by its content (``inputs``), not its path, so an artifact GoCD
  fetched into another folder is the same input;
* ``inputs``: each lineage input's sha256 (:mod:`mlops_kit.run.lineage`): the files the parameters name;
* ``environment``: the lock's sha256 when the venv was installed from one, else the sha256 of its sorted freeze;
* ``python``: the interpreter's implementation and full version (``cpython 3.12.4``);
* ``platform``: the OS family and machine architecture (``win32-AMD64``);
* ``schema``: this key's own version (:data:`SCHEMA`): a toolkit that computes it differently never matches.

What the key cannot see: data the notebook reads that no parameter names (a database, a URL, the clock, a file by a
hard-coded path). Such a stage must not opt in (the README says so).

``lineage/reuse_key.json`` holds :meth:`ReuseKey.to_json`: every component with its own digest and the values it
was computed from (parameters as logged: secrets never appear), so a miss can say what changed
(:func:`differences`). This module imports no mlflow.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..core.errors import BadInput
from ..core.redact import is_secret_name
from ..envs import audit
from .lineage import LineageRecord, set_value
from .params import flatten

SCHEMA = 1
KEY_TAG = "mlops_kit.reuse_key"
FROM_TAG = "mlops_kit.reused_from"
ARTIFACT = "lineage/reuse_key.json"
MODE_VAR = "MLOPS_REUSE"  # "never": execute every stage, whatever --reuse or the spec says
MODES = ("auto", "never")  # auto (or unset): each run's --reuse / spec decides
INPUT_VALUE = "<input: by content>"  # a parameter naming an input, in the parameters component


def disabled_by_environment(env: Mapping[str, str] | None = None) -> bool:
    """``MLOPS_REUSE=never`` (a GoCD environment variable, a data scientist's shell) forces execution everywhere;
    any other value than ``auto`` or ``never`` is :class:`BadInput` (exit 2): ``off`` or ``0`` silently reusing
    would be the one wrong answer."""
    value = (os.environ if env is None else env).get(MODE_VAR, "").strip()
    if value and value.lower() not in MODES:
        raise BadInput(f"{MODE_VAR}={value!r}: choose one of {', '.join(MODES)} (never: execute every stage)")
    return value.lower() == "never"


def _sha(data: Any) -> str:
    text = data if isinstance(data, str) else json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@dataclass
class ReuseKey:
    """The key's components (see the module docstring); ``inputs`` is None until the inputs are hashed."""

    cells: list[tuple[int, str]]  # (cell number in the notebook, 1-based; sha256 of a code cell's source)
    parameters: dict[str, Any]  # flat names (a.b) -> value as logged
    environment: dict[str, str]  # {"lock_sha256": ...} or {"freeze_sha256": ...}
    python: str
    platform: str
    inputs: dict[str, str] | None = None  # parameter name -> sha256 of the file or folder
    schema: int = SCHEMA

    def components(self) -> dict[str, str | None]:
        """Each component's own digest (``inputs``: None until hashed)."""
        return {"schema": _sha(str(self.schema)), "notebook": _sha([sha for _, sha in self.cells]),
                "parameters": _sha(self.parameters), "inputs": None if self.inputs is None else _sha(self.inputs),
                "environment": _sha(self.environment), "python": _sha(self.python), "platform": _sha(self.platform)}

    @property
    def digest(self) -> str:
        """The key: the sha256 of the components' digests."""
        if self.inputs is None:
            raise ValueError("the reuse key's inputs are not hashed yet")
        return _sha(self.components())

    def to_json(self) -> dict[str, Any]:
        """``lineage/reuse_key.json`` (and the run manifest's ``reuse_key``): the key, and every component with its
        digest and what it was made from; ``key`` is null while the inputs are not hashed (a manifest)."""
        digests = self.components()
        return {"schema": self.schema, "key": None if self.inputs is None else self.digest, "components": {
            "notebook": {"digest": digests["notebook"],
                         "code_cells": [{"cell": number, "sha256": sha} for number, sha in self.cells]},
            "parameters": {"digest": digests["parameters"], "values": self.parameters},
            "inputs": {"digest": digests["inputs"], "sha256": self.inputs},
            "environment": {"digest": digests["environment"], **self.environment},
            "python": {"digest": digests["python"], "value": self.python},
            "platform": {"digest": digests["platform"], "value": self.platform},
        }}

    @classmethod
    def from_json(cls, data: Any) -> ReuseKey:
        """A key as :meth:`to_json` wrote it; a ValueError says what is wrong (a damaged or newer record)."""
        try:
            parts = data["components"]
            env = {k: str(v) for k, v in parts["environment"].items() if k != "digest"}
            inputs = parts["inputs"]["sha256"]
            return cls([(int(c["cell"]), str(c["sha256"])) for c in parts["notebook"]["code_cells"]],
                       dict(parts["parameters"]["values"]), env, str(parts["python"]["value"]),
                       str(parts["platform"]["value"]),
                       None if inputs is None else {str(k): str(v) for k, v in inputs.items()}, int(data["schema"]))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"not a reuse key record ({type(exc).__name__}: {exc})") from None


# ---------------------------------------------------------------------------------------------------- making one


def new_key(nb: Any, masked: Mapping[str, Any], env: audit.EnvRecord, input_params: list[list[str | int]]) -> ReuseKey:
    """The key of a run before its inputs are hashed: ``nb`` the notebook as given, ``masked`` the parameters as
    logged (``output_dir`` included: left out here), ``input_params`` the key paths of the lineage inputs."""
    cells = [(number, _sha(str(cell.source))) for number, cell in enumerate(nb.cells, start=1)
             if cell.cell_type == "code"]
    values = json.loads(json.dumps(dict(masked), default=str))  # a copy, YAML dates as text
    for path in input_params:
        set_value(values, path, INPUT_VALUE)
    kept = {name: value for name, value in flatten(values).items()
            if name.split(".")[0] != "output_dir" and not any(is_secret_name(part) for part in name.split("."))}
    return ReuseKey(cells, kept, environment_of(env), f"{env.python.implementation} {env.python.version}",
                    f"{env.sys_platform or sys.platform}-{platform.machine()}")


def environment_of(env: audit.EnvRecord) -> dict[str, str]:
    """The installed environment: the lock it was installed from, else its freeze (sorted lines)."""
    if env.lock is not None:
        return {"lock_sha256": env.lock.sha256}
    try:
        lines = sorted(line.strip() for line in Path(env.freeze_file).read_text(encoding="utf-8").splitlines()
                       if line.strip() and not line.startswith("#"))
    except OSError:
        lines = sorted(env.packages)
    return {"freeze_sha256": _sha("\n".join(lines))}


def with_inputs(key: ReuseKey, record: LineageRecord) -> str | None:
    """Fill the key's inputs from the hashed lineage record; returns why the key cannot be trusted (an input that
    could not be hashed: too many files, unreadable), else None."""
    hashed: dict[str, str] = {}
    for item in record.inputs:
        if item.hashed is None or item.hashed.sha256 is None:
            return f"input {item.name} ({item.path}) could not be hashed" + \
                (f": {item.hashed.error}" if item.hashed is not None and item.hashed.error else "")
        hashed[item.name] = item.hashed.sha256
    key.inputs = hashed
    return None


# ---------------------------------------------------------------------------------------------------- a miss


def _shown(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, default=str)


def _short(sha: str | None) -> str:
    return sha[:12] if sha else "none"


def differences(old: ReuseKey, new: ReuseKey) -> list[str]:
    """What changed from ``old`` to ``new``, one phrase per cause, in the key's order."""
    if old.schema != new.schema:
        return [f"reuse key schema {old.schema} -> {new.schema} (another toolkit version)"]
    found = _cells_changed(old.cells, new.cells)
    for name in sorted({*old.parameters, *new.parameters}):
        before, after = old.parameters.get(name, _UNSET), new.parameters.get(name, _UNSET)
        if before != after:
            found.append(f"parameter {name}: {_shown(before)} -> {_shown(after)}")
    old_inputs, new_inputs = old.inputs or {}, new.inputs or {}
    for name in sorted({*old_inputs, *new_inputs}):
        if old_inputs.get(name) != new_inputs.get(name):
            found.append(f"input {name} changed (sha256 {_short(old_inputs.get(name))} -> "
                         f"{_short(new_inputs.get(name))})")
    if old.environment != new.environment:
        kinds = {k.split("_")[0] for k in (*old.environment, *new.environment)}
        what = "lock" if kinds == {"lock"} else "freeze" if kinds == {"freeze"} else "lock/freeze"
        found.append(f"environment changed ({what} {_short(next(iter(old.environment.values()), None))} -> "
                     f"{_short(next(iter(new.environment.values()), None))})")
    if old.python != new.python:
        found.append(f"python {old.python.split()[-1]} -> {new.python.split()[-1]}"
                     if old.python.split()[0] == new.python.split()[0] else f"python {old.python} -> {new.python}")
    if old.platform != new.platform:
        found.append(f"platform {old.platform} -> {new.platform}")
    return found


_UNSET = "(unset)"


def _cells_changed(old: list[tuple[int, str]], new: list[tuple[int, str]]) -> list[str]:
    if [s for _, s in old] == [s for _, s in new]:
        return []
    if len(old) != len(new):
        return [f"notebook code changed ({len(old)} -> {len(new)} code cells)"]
    numbers = [str(n) for (_, a), (n, b) in zip(old, new) if a != b]
    return [f"notebook code changed (cell{'s' if len(numbers) > 1 else ''} {', '.join(numbers)})"]


def explain_miss(old: ReuseKey | None, new: ReuseKey) -> str:
    """The phrase after ``no reuse:`` when an earlier run exists."""
    if old is None:
        return "the latest earlier run has no readable reuse key"
    found = differences(old, new)
    return "; ".join(found) if found else "same key"


def read_json(path: Path) -> ReuseKey:
    """A ``reuse_key.json`` file (downloaded from a run); a ValueError when it is not one."""
    try:
        return ReuseKey.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path.name}: unreadable ({exc})") from None
