"""Data lineage of a stage run: the files and folders its parameters named, their sha256, the earlier run of the same
pipeline instance that produced them, and the sha256 of what the run wrote.

Inputs: every parameter value, at any depth of lists and mappings, that is a string naming an existing file or
folder (relative paths resolved against the kernel's working folder) and is neither the output folder nor inside
it. ``output_dir`` itself and secret-named parameters are never inputs (a secret's value is masked; a replay gets
it with ``-p``). A notebook may read other files (hard-coded paths): lineage only knows what its parameters name.

When: :func:`new_record` finds the inputs before the run (stat calls only, in the runner); :func:`hash_inputs` hashes
them in the tracking worker right after the run is created, while the kernel starts, so the hashes are of what the
notebook was given and the run's manifest keeps them; :func:`finish` hashes the output folder when the run is
logged (exactly what is uploaded under ``outputs/``) and names the producers.

Hashing: files are streamed in 1 MiB blocks. A folder is the sorted list of its files (relative POSIX paths, so the
digest is the same on Windows and Linux) with each file's size and sha256; its digest is the sha256 of the lines
``<sha256>  <path>`` (what ``sha256sum`` prints). Symlinked folders are followed once (a loop is cut, and said
so). The run's own files (its output folder, executed notebook and companions, the venv, the tracking store) are
left out of an input folder and listed under ``excluded`` (an entry ending in ``*`` is a prefix: ``out/train_out.*``
covers every companion of the executed notebook). A folder of more than :data:`MAX_FILES` files is not hashed (a
warning; a replay reports it as unverifiable), and an unreadable file makes the input an error entry:
nothing is skipped silently.

Producers: an input file whose sha256 equals an output file of an earlier run of the same pipeline instance (same
``mlops_kit.pipeline_key``; for a replay, the same parent run) names that run and its artifact
(``outputs/<path>``); of several, the latest wins (a re-run stage), and of one run's several equal files, the one
with the same name. Content, not paths, decides: GoCD fetches an artifact into another job's folder.

MLflow: each input is one dataset input (``MlflowClient.log_inputs``: the run page's "Datasets"), name
``<parameter>: <file or folder name>``, digest the sha256's first 32 hex digits (MLflow allows 36), source the
file URI, profile ``{size, files, sha256}``; the per-run facts (full sha256, path, parameter, producer) are input
tags, because MLflow shares a dataset per experiment by name and digest. MLflow has no dataset outputs: the output
hashes are in ``lineage/lineage.json`` (the whole record) and the tag ``mlops_kit.outputs.sha256``. This module
imports no mlflow at module level.

The record is typed (:class:`LineageRecord`: its :class:`Input` s, their :class:`FileEntry` s and
:class:`Producer` s, the :class:`Outputs`) and travels as JSON: ``lineage/lineage.json`` and the run manifest hold
:meth:`LineageRecord.to_json` (schema 1, the same keys and order since lineage exists), and
:meth:`LineageRecord.from_json` reads every schema-1 record, so runs recorded by earlier versions still replay.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Iterable, Iterator, Literal, Mapping, Sequence, get_args

from ..core import paths
from ..core.console import Warn
from ..core.redact import MASK, is_secret_name

SCHEMA = 1
ARTIFACT = "lineage/lineage.json"
OUTPUTS_TAG = "mlops_kit.outputs.sha256"
MAX_FILES = 100_000  # an input folder with more files is not hashed (a parameter naming a drive, a home folder...)
_MAX_PATH_TEXT = 4096  # longer strings are text, not paths
_SLOW_SECONDS = 30.0
_Rule = tuple[str, "str | None"]  # (normalized path or folder, file name prefix or None)
Kind = Literal["file", "folder", "missing"]
_KINDS: tuple[str, ...] = get_args(Kind)


# ---------------------------------------------------------------------------------------------------- names


def param_name(path: Sequence[Any]) -> str:
    """``["cfg", "train"]`` -> ``cfg.train``; ``["files", 0]`` -> ``files[0]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def overridable_name(path: Sequence[Any]) -> str:
    """The name ``-p NAME VALUE`` can set for a value at ``path``: the dotted mapping keys before any list index."""
    keys = []
    for part in path:
        if isinstance(part, int):
            break
        keys.append(str(part))
    return ".".join(keys)


def leaves(values: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    """Every (key path, value) of nested mappings and lists, leaves only."""
    if isinstance(values, Mapping):
        for key, value in values.items():
            yield from leaves(value, (*path, key))
    elif isinstance(values, (list, tuple)):
        for index, value in enumerate(values):
            yield from leaves(value, (*path, index))
    else:
        yield path, values


def masked_names(masked: Mapping[str, Any]) -> list[str]:
    """The ``-p`` names whose recorded values are masked (a secret name, or a secret inside the text), sorted."""
    names = {overridable_name(path) for path, value in leaves(masked)
             if isinstance(value, str) and MASK in value}
    return sorted(names)


def get_value(values: Any, path: Sequence[Any]) -> Any:
    for part in path:
        values = values[part]
    return values


def set_value(values: Any, path: Sequence[Any], new: Any) -> None:
    """Replace the value at ``path`` (which exists) in nested mappings and lists."""
    get_value(values, path[:-1])[path[-1]] = new


# ---------------------------------------------------------------------------------------------------- the record


def _check(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    """``value`` when it has the JSON type a schema-1 record gives ``what``; else a ValueError naming ``what``."""
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ValueError(f"{what}: expected {getattr(kind, '__name__', 'another type')}, found {value!r:.60}")
    return value


@dataclass
class Producer:
    """The earlier run whose output had a file's content, and that output as an artifact path."""

    run_id: str
    artifact: str  # outputs/<path>

    def to_json(self) -> dict[str, Any]:
        return {"run_id": self.run_id, "artifact": self.artifact}

    @classmethod
    def from_json(cls, data: Any) -> Producer:
        _check(data, dict, "producer")
        return cls(_check(data.get("run_id"), str, "producer.run_id"),
                   _check(data.get("artifact"), str, "producer.artifact"))


@dataclass
class FileEntry:
    """One hashed file: its path (relative POSIX for a folder's file, the name for a file), size, sha256."""

    path: str
    size: int
    sha256: str
    producer: Producer | None = None  # named once the run is logged (inputs only)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "size": self.size, "sha256": self.sha256}
        if self.producer is not None:
            out["producer"] = self.producer.to_json()
        return out

    @classmethod
    def from_json(cls, data: Any) -> FileEntry:
        _check(data, dict, "file")
        producer = data.get("producer")
        return cls(_check(data.get("path"), str, "file.path"), _check(data.get("size", 0), int, "file.size"),
                   _check(data.get("sha256"), str, "file.sha256"),
                   Producer.from_json(producer) if producer else None)


@dataclass
class Tree:
    """What hashing one file or folder found (``sha256`` None: not hashed, and ``error`` says why)."""

    kind: Kind
    sha256: str | None
    size: int
    files: list[FileEntry]
    excluded: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "sha256": self.sha256, "size": self.size,
                               "files": [f.to_json() for f in self.files]}
        if self.excluded:
            out["excluded"] = self.excluded
        if self.error:
            out["error"] = self.error
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Tree:
        if data.get("kind") not in _KINDS:
            raise ValueError(f"kind: expected one of {', '.join(_KINDS)}, found {data.get('kind')!r:.60}")
        sha = data.get("sha256")
        return cls(data["kind"], None if sha is None else _check(sha, str, "sha256"),
                   _check(data.get("size", 0), int, "size"),
                   [FileEntry.from_json(f) for f in _check(data.get("files", []), list, "files")],
                   [str(p) for p in _check(data.get("excluded", []), list, "excluded")],
                   None if data.get("error") is None else str(data["error"]))


@dataclass
class Input:
    """A parameter naming an existing file or folder: where it pointed, then (``hashed``) what it held."""

    param: list[str | int]  # the key path in the parameters: ["cfg", "files", 0]
    value: Any  # the parameter's value as given
    path: str  # absolute
    hashed: Tree | None = None  # None until :func:`hash_inputs`

    @property
    def name(self) -> str:
        return param_name(self.param)

    def to_json(self) -> dict[str, Any]:
        return {"param": list(self.param), "value": self.value, "path": self.path,
                **(self.hashed.to_json() if self.hashed is not None else {})}

    @classmethod
    def from_json(cls, data: Any) -> Input:
        _check(data, dict, "input")
        param = _check(data.get("param"), list, "input.param")
        if not all(isinstance(p, (str, int)) for p in param):
            raise ValueError(f"input.param: expected names and indexes, found {param!r:.60}")
        return cls(param, data.get("value"), _check(data.get("path"), str, "input.path"),
                   Tree.from_json(data) if "sha256" in data else None)


@dataclass
class Outputs:
    """The run's output folder hashed once the notebook ran (what is uploaded under ``outputs/``)."""

    path: str
    hashed: Tree

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, **self.hashed.to_json()}

    @classmethod
    def from_json(cls, data: Any) -> Outputs:
        _check(data, dict, "outputs")
        return cls(_check(data.get("path", ""), str, "outputs.path"), Tree.from_json(data))


@dataclass
class LineageRecord:
    """What a replay needs of a run besides its environment (see the module docstring)."""

    python: str
    notebook: str  # as the repository names it
    source_notebook: str | None  # artifact path of the notebook as given (source/<name>.source.ipynb)
    parameters: str | None  # artifact path of the parameters copy (params/<name>.params.yaml), secrets masked
    masked: list[str]  # the -p names whose recorded values are masked
    cwd: str | None  # the kernel's working folder
    inputs: list[Input]
    excluded: list[str]  # the run's own files, left out of input folders (``*``: a name prefix)
    outputs: Outputs | None = None  # None until :func:`finish`
    schema: int = SCHEMA

    def to_json(self) -> dict[str, Any]:
        """The record as ``lineage/lineage.json`` holds it (schema 1: these keys, in this order)."""
        return {"schema": self.schema, "python": self.python, "notebook": self.notebook,
                "source_notebook": self.source_notebook, "parameters": self.parameters, "masked": self.masked,
                "cwd": self.cwd, "inputs": [i.to_json() for i in self.inputs], "excluded": self.excluded,
                "outputs": None if self.outputs is None else self.outputs.to_json()}

    @classmethod
    def from_json(cls, data: Any) -> LineageRecord:
        """A schema-1 record as written by any version; a ValueError names what is wrong."""
        _check(data, dict, "lineage record")
        if data.get("schema") != SCHEMA:
            raise ValueError(f"schema {data.get('schema')!r}: this mlops_kit reads schema {SCHEMA} (a newer "
                             "version wrote it?)")
        text = (str, type(None))
        outputs = data.get("outputs")
        return cls(str(data.get("python", "")), str(data.get("notebook", "")),
                   _check(data.get("source_notebook"), text, "source_notebook"),
                   _check(data.get("parameters"), text, "parameters"),
                   [str(n) for n in _check(data.get("masked", []), list, "masked")],
                   _check(data.get("cwd"), text, "cwd"),
                   [Input.from_json(i) for i in _check(data.get("inputs", []), list, "inputs")],
                   [str(p) for p in _check(data.get("excluded", []), list, "excluded")],
                   Outputs.from_json(outputs) if outputs is not None else None)


# ---------------------------------------------------------------------------------------------------- hashing


def folder_digest(files: Iterable[FileEntry]) -> str:
    """The digest of a folder from its file entries: ``sha256sum`` lines, sorted by path."""
    lines = "".join(f"{f.sha256}  {f.path}\n" for f in sorted(files, key=lambda f: f.path))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def hash_tree(path: Path, *, excluded: Sequence[Path | str] = (), max_files: int = MAX_FILES) -> Tree:
    """Hash a file or a folder (see the module docstring); problems are an ``error``, never an exception."""
    if path.is_file():
        try:
            sha, size = paths.file_sha256(path)
        except OSError as exc:
            return Tree("file", None, 0, [], [], f"cannot read {path} ({exc.strerror or exc})")
        return Tree("file", sha, size, [FileEntry(path.name, size, sha)], [])
    if not path.is_dir():
        return Tree("missing", None, 0, [], [], f"{path} does not exist")
    skip = [_skip_rule(str(p)) for p in excluded]
    listed, left_out, problems = _list_folder(path, skip, max_files)
    if len(listed) > max_files:
        return Tree("folder", None, 0, [], left_out, f"{path} holds more than {max_files} files: not hashed")
    files, total = [], 0
    for rel, full in listed:
        try:
            sha, size = paths.file_sha256(full)
        except OSError as exc:
            problems.append(f"cannot read {full} ({exc.strerror or exc})")
            continue
        files.append(FileEntry(rel, size, sha))
        total += size
    files.sort(key=lambda f: f.path)
    return Tree("folder", None if problems else folder_digest(files), total, files, left_out,
                "; ".join(problems[:5]) or None)


def _skip_rule(entry: str) -> _Rule:
    """(normalized folder or path, name prefix or None): ``out/train_out.*`` -> (``out``, ``train_out.``)."""
    if entry.endswith("*"):
        folder, _, prefix = entry[:-1].replace("\\", "/").rpartition("/")
        return paths.norm(folder or "."), os.path.normcase(prefix)
    return paths.norm(entry), None


def _skipped(path: str, skip: list[_Rule]) -> bool:
    """``path`` is one of ``skip``, or a file named with a prefix rule's prefix in its folder."""
    norm = paths.norm(path)
    folder, name = os.path.split(norm)
    return any(norm == rule if prefix is None else (folder == rule and name.startswith(prefix))
               for rule, prefix in skip)


def _list_folder(root: Path, skip: list[_Rule], max_files: int) -> tuple[list[tuple[str, Path]], list[str], list[str]]:
    """(relative POSIX path, path) of every file under ``root``, stopping past ``max_files``; the paths left out
    (``skip``, loops) and the problems met."""
    found: list[tuple[str, Path]] = []
    left_out: list[str] = []
    problems: list[str] = []
    seen = {os.path.realpath(root)}
    for folder, dirs, names in os.walk(root, followlinks=True, onerror=lambda e: problems.append(
            f"cannot list {e.filename} ({e.strerror or e})")):
        kept = []
        for name in sorted(dirs):
            sub = os.path.join(folder, name)
            if _skipped(sub, skip):
                left_out.append(sub)
            elif os.path.realpath(sub) in seen:
                left_out.append(f"{sub} (a link back to a folder already hashed)")
            else:
                seen.add(os.path.realpath(sub))
                kept.append(name)
        dirs[:] = kept
        for name in sorted(names):
            full = Path(folder, name)
            if _skipped(str(full), skip):
                left_out.append(str(full))
                continue
            found.append((full.relative_to(root).as_posix(), full))
            if len(found) > max_files:
                return found, left_out, problems
    return found, left_out, problems


# ---------------------------------------------------------------------------------------------------- the run


def new_record(values: Mapping[str, Any], *, cwd: Path, output_dir: Path, excluded: Sequence[Path | str],
               python: str, notebook: str, source_notebook: str | None, parameters: str,
               masked: Mapping[str, Any]) -> LineageRecord:
    """The run's lineage record before it runs: what a replay needs besides the environment, inputs not hashed yet.

    ``values`` are the parameters as logged (secrets masked: those are never inputs); ``source_notebook`` and
    ``parameters`` are the artifact paths of the notebook as given and of the parameters copy."""
    return LineageRecord(python=python, notebook=notebook, source_notebook=source_notebook, parameters=parameters,
                         masked=masked_names(masked), cwd=str(cwd),
                         inputs=find_inputs(values, cwd=cwd, output_dir=output_dir),
                         excluded=[str(p) for p in excluded])


def find_inputs(values: Mapping[str, Any], *, cwd: Path, output_dir: Path) -> list[Input]:
    """The parameters naming an existing file or folder outside ``output_dir`` (see the module docstring)."""
    out = []
    for path, value in leaves(values):
        if not path or path[0] == "output_dir" or any(isinstance(p, str) and is_secret_name(p) for p in path):
            continue
        found = _existing_path(value, cwd)
        if found is None or paths.inside(found, output_dir):
            continue
        out.append(Input(list(path), value, str(found)))
    return out


def _existing_path(value: Any, cwd: Path) -> Path | None:
    if not isinstance(value, str) or not value.strip() or len(value) > _MAX_PATH_TEXT or "\n" in value \
            or MASK in value:
        return None
    try:
        full = Path(os.path.abspath(cwd / Path(os.path.expanduser(value))))
        return full if full.exists() else None
    except (OSError, ValueError):
        return None


def hash_inputs(record: LineageRecord, *, warn: Warn) -> None:
    """Hash every planned input not hashed yet (in place); problems become the input's ``error`` and a warning."""
    excluded = [Path(p) for p in record.excluded]
    for item in record.inputs:
        if item.hashed is not None:
            continue
        started = time.monotonic()
        tree = item.hashed = hash_tree(Path(item.path), excluded=excluded)
        if tree.error:
            warn(f"input {item.name} ({item.path}): {tree.error}; a replay cannot verify it")
        elif time.monotonic() - started > _SLOW_SECONDS:
            warn(f"input {item.name} ({item.path}): hashing {tree.size / 1e9:.1f} GB took "
                 f"{time.monotonic() - started:.0f}s")


def hash_outputs(output_dir: Path) -> Outputs:
    """The output folder's files and digest (what the run uploads under ``outputs/``)."""
    tree = hash_tree(output_dir) if output_dir.is_dir() else Tree("folder", folder_digest([]), 0, [], [])
    return Outputs(str(output_dir), tree)


# ---------------------------------------------------------------------------------------------------- producers


@dataclass(frozen=True)
class Produced:
    """One output file of an earlier run: where its content can be downloaded."""

    run_id: str
    start_time: int
    path: str  # relative to the run's output folder

    @property
    def artifact(self) -> str:
        return f"outputs/{self.path}"


def producer_index(runs: Iterable[tuple[str, int, LineageRecord]]) -> dict[str, list[Produced]]:
    """sha256 -> the output files with that content, latest run first, from (run id, start time, lineage record)."""
    index: dict[str, list[Produced]] = {}
    for run_id, start, record in runs:
        for f in record.outputs.hashed.files if record.outputs is not None else ():
            index.setdefault(f.sha256, []).append(Produced(run_id, start, f.path))
    for found in index.values():
        found.sort(key=lambda p: (-p.start_time, p.run_id))
    return index


def name_producers(record: LineageRecord, index: Mapping[str, Sequence[Produced]]) -> None:
    """Each input file's producer (in place): the latest run with that content; of its files, the same name."""
    for item in record.inputs:
        for f in item.hashed.files if item.hashed is not None else ():
            found = index.get(f.sha256, ())
            if not found:
                continue
            latest = [p for p in found if p.run_id == found[0].run_id]
            best = next((p for p in latest if p.path.rsplit("/", 1)[-1] == f.path.rsplit("/", 1)[-1]), latest[0])
            f.producer = Producer(best.run_id, best.artifact)


def finish(record: LineageRecord, output_dir: Path, index: Mapping[str, Sequence[Produced]]) -> None:
    """Complete the record once the notebook ran: output hashes, producers."""
    record.outputs = hash_outputs(output_dir)
    name_producers(record, index)


def producers_of(item: Input) -> list[str]:
    """The run ids that produced an input's files, in order of first appearance."""
    files = item.hashed.files if item.hashed is not None else []
    return list(dict.fromkeys(f.producer.run_id for f in files if f.producer is not None))


# ---------------------------------------------------------------------------------------------------- MLflow


def file_uri(path: str) -> str:
    """The file URI of an absolute path recorded on any platform (a Windows agent's manifest may be uploaded from a
    Linux machine, and the other way round); a path absolute on neither stays as it is."""
    for flavour in (PurePosixPath, PureWindowsPath):
        if flavour(path).is_absolute():
            return flavour(path).as_uri()
    return path


def dataset_inputs(record: LineageRecord) -> list[Any]:
    """The inputs as MLflow dataset inputs (see the module docstring); hashed inputs only."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    out = []
    for item in record.inputs:
        tree = item.hashed
        if tree is None or not tree.sha256:
            continue
        name = f"{item.name}: {paths.base_name(item.path)}"
        profile = {"size": tree.size, "files": len(tree.files), "sha256": tree.sha256}
        tags = {"mlflow.data.context": "input", "mlops_kit.param": item.name, "mlops_kit.path": item.path,
                "mlops_kit.sha256": tree.sha256, "mlops_kit.kind": tree.kind}
        producers = producers_of(item)
        if producers:
            tags["mlops_kit.producer_run_id"] = ",".join(producers)
            every = all(f.producer for f in tree.files)
            tags["mlops_kit.produced"] = "all files" if every else "some files"
        dataset = Dataset(name=name[:500], digest=tree.sha256[:32], source_type="local",
                          source=json.dumps({"uri": file_uri(item.path)}), profile=json.dumps(profile))
        out.append(DatasetInput(dataset, tags=[InputTag(k, v[:500]) for k, v in tags.items()]))
    return out
