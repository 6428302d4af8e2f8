"""Data lineage of a stage run: the files and folders its parameters named, their sha256, the earlier run of the same
pipeline instance that produced them, and the sha256 of what the run wrote.

Inputs: every parameter value, at any depth of lists and mappings, that is a string naming an existing file or
folder (relative paths resolved against the kernel's working folder) and is neither the output folder nor inside
it. ``output_dir`` itself and secret-named parameters are never inputs (a secret's value is masked; a replay gets
it with ``-p``). A notebook may read other files (hard-coded paths): lineage only knows what its parameters name.

When: :func:`new_record` finds the inputs before the run (stat calls only, in the runner); :func:`hash_inputs` hashes them
in the tracking worker right after the run is created, while the kernel starts, so the hashes are of what the
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
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from ..core.redact import MASK, is_secret_name

SCHEMA = 1
ARTIFACT = "lineage/lineage.json"
OUTPUTS_TAG = "mlops_kit.outputs.sha256"
MAX_FILES = 100_000  # an input folder with more files is not hashed (a parameter naming a drive, a home folder...)
_BLOCK = 1 << 20
_MAX_PATH_TEXT = 4096  # longer strings are text, not paths
_SLOW_SECONDS = 30.0
Warn = Callable[[str], None]
_Rule = tuple[str, "str | None"]  # (normalized path or folder, file name prefix or None)


# ---------------------------------------------------------------------------------------------------- names


def base_name(path: str) -> str:
    """The last part of a path recorded on any platform (a Windows agent's record replayed on Linux too)."""
    return re.split(r"[\\/]", path.rstrip("\\/"))[-1] or path


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


# ---------------------------------------------------------------------------------------------------- hashing


def file_sha256(path: Path) -> tuple[str, int]:
    """(sha256 hex, size) of a file, read in blocks (any size)."""
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def folder_digest(files: Iterable[Mapping[str, Any]]) -> str:
    """The digest of a folder from its file entries (``path``, ``sha256``): ``sha256sum`` lines, sorted by path."""
    lines = "".join(f"{f['sha256']}  {f['path']}\n" for f in sorted(files, key=lambda f: f["path"]))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


@dataclass
class Tree:
    """What hashing one file or folder found: ``kind`` file | folder; ``error`` when it could not be hashed."""

    kind: str
    sha256: str | None
    size: int
    files: list[dict[str, Any]]
    excluded: list[str]
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "sha256": self.sha256, "size": self.size, "files": self.files}
        if self.excluded:
            out["excluded"] = self.excluded
        if self.error:
            out["error"] = self.error
        return out


def hash_tree(path: Path, *, excluded: Sequence[Path | str] = (), max_files: int = MAX_FILES) -> Tree:
    """Hash a file or a folder (see the module docstring); problems are an ``error``, never an exception."""
    if path.is_file():
        try:
            sha, size = file_sha256(path)
        except OSError as exc:
            return Tree("file", None, 0, [], [], f"cannot read {path} ({exc.strerror or exc})")
        return Tree("file", sha, size, [{"path": path.name, "size": size, "sha256": sha}], [])
    if not path.is_dir():
        return Tree("missing", None, 0, [], [], f"{path} does not exist")
    skip = [_skip_rule(str(p)) for p in excluded]
    listed, left_out, problems = _list_folder(path, skip, max_files)
    if len(listed) > max_files:
        return Tree("folder", None, 0, [], left_out, f"{path} holds more than {max_files} files: not hashed")
    files, total = [], 0
    for rel, full in listed:
        try:
            sha, size = file_sha256(full)
        except OSError as exc:
            problems.append(f"cannot read {full} ({exc.strerror or exc})")
            continue
        files.append({"path": rel, "size": size, "sha256": sha})
        total += size
    files.sort(key=lambda f: f["path"])
    return Tree("folder", None if problems else folder_digest(files), total, files, left_out,
                "; ".join(problems[:5]) or None)


def _norm(path: Path | str) -> str:
    return os.path.normcase(os.path.abspath(path))


def _skip_rule(entry: str) -> _Rule:
    """(normalized folder or path, name prefix or None): ``out/train_out.*`` -> (``out``, ``train_out.``)."""
    if entry.endswith("*"):
        folder, _, prefix = entry[:-1].replace("\\", "/").rpartition("/")
        return _norm(folder or "."), os.path.normcase(prefix)
    return _norm(entry), None


def _skipped(path: str, skip: list[_Rule]) -> bool:
    """``path`` is one of ``skip``, or a file named with a prefix rule's prefix in its folder."""
    norm = _norm(path)
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
            full = os.path.join(folder, name)
            real = os.path.realpath(full)
            if _skipped(full, skip):
                left_out.append(full)
            elif real in seen:
                left_out.append(f"{full} (a link back to a folder already hashed)")
            else:
                seen.add(real)
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


# ---------------------------------------------------------------------------------------------------- the record


def new_record(values: Mapping[str, Any], *, cwd: Path, output_dir: Path, excluded: Sequence[Path], python: str,
         notebook: str, source_notebook: str | None, parameters: str, masked: Mapping[str, Any]) -> dict[str, Any]:
    """The run's lineage record before it runs: what a replay needs besides the environment, inputs not hashed yet.

    ``values`` are the parameters as logged (secrets masked: those are never inputs); ``source_notebook`` and
    ``parameters`` are the artifact paths of the notebook as given and of the parameters copy."""
    return {"schema": SCHEMA, "python": python, "notebook": notebook, "source_notebook": source_notebook,
            "parameters": parameters, "masked": masked_names(masked), "cwd": str(cwd),
            "inputs": find_inputs(values, cwd=cwd, output_dir=output_dir),
            "excluded": [str(p) for p in excluded], "outputs": None}


def find_inputs(values: Mapping[str, Any], *, cwd: Path, output_dir: Path) -> list[dict[str, Any]]:
    """The parameters naming an existing file or folder outside ``output_dir`` (see the module docstring)."""
    out = []
    for path, value in leaves(values):
        if not path or path[0] == "output_dir" or any(isinstance(p, str) and is_secret_name(p) for p in path):
            continue
        found = _existing_path(value, cwd)
        if found is None or _inside(found, output_dir):
            continue
        out.append({"param": list(path), "value": value, "path": str(found)})
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


def _inside(path: Path, folder: Path) -> bool:
    return Path(_norm(path)).is_relative_to(_norm(folder))


def hash_inputs(record: dict[str, Any], *, warn: Warn) -> None:
    """Hash every planned input not hashed yet (in place); problems become the input's ``error`` and a warning."""
    excluded = [Path(p) for p in record.get("excluded", [])]
    for item in record.get("inputs", []):
        if "sha256" in item:
            continue
        started = time.monotonic()
        tree = hash_tree(Path(item["path"]), excluded=excluded)
        item.update(tree.as_dict())
        name = param_name(item["param"])
        if tree.error:
            warn(f"input {name} ({item['path']}): {tree.error}; a replay cannot verify it")
        elif time.monotonic() - started > _SLOW_SECONDS:
            warn(f"input {name} ({item['path']}): hashing {tree.size / 1e9:.1f} GB took "
                 f"{time.monotonic() - started:.0f}s")


def hash_outputs(output_dir: Path) -> dict[str, Any]:
    """The output folder's files and digest (what the run uploads under ``outputs/``)."""
    tree = hash_tree(output_dir) if output_dir.is_dir() else Tree("folder", folder_digest([]), 0, [], [])
    return {"path": str(output_dir), **tree.as_dict()}


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


def producer_index(runs: Iterable[tuple[str, int, Mapping[str, Any]]]) -> dict[str, list[Produced]]:
    """sha256 -> the output files with that content, latest run first, from (run id, start time, lineage record)."""
    index: dict[str, list[Produced]] = {}
    for run_id, start, record in runs:
        for f in (record.get("outputs") or {}).get("files", []):
            index.setdefault(f["sha256"], []).append(Produced(run_id, start, f["path"]))
    for found in index.values():
        found.sort(key=lambda p: (-p.start_time, p.run_id))
    return index


def name_producers(record: dict[str, Any], index: Mapping[str, Sequence[Produced]]) -> None:
    """Each input file's producer (in place): the latest run with that content; of its files, the same name."""
    for item in record.get("inputs", []):
        for f in item.get("files", []):
            found = index.get(f["sha256"], ())
            if not found:
                continue
            latest = [p for p in found if p.run_id == found[0].run_id]
            best = next((p for p in latest if p.path.rsplit("/", 1)[-1] == f["path"].rsplit("/", 1)[-1]), latest[0])
            f["producer"] = {"run_id": best.run_id, "artifact": best.artifact}


def finish(record: dict[str, Any], output_dir: Path, index: Mapping[str, Sequence[Produced]]) -> None:
    """Complete the record once the notebook ran: output hashes, producers."""
    record["outputs"] = hash_outputs(output_dir)
    name_producers(record, index)


def producers_of(item: Mapping[str, Any]) -> list[str]:
    """The run ids that produced an input's files, in order of first appearance."""
    return list(dict.fromkeys(f["producer"]["run_id"] for f in item.get("files", []) if f.get("producer")))


# ---------------------------------------------------------------------------------------------------- MLflow


def dataset_inputs(record: Mapping[str, Any]) -> list[Any]:
    """The inputs as MLflow dataset inputs (see the module docstring); hashed inputs only."""
    from mlflow.entities import Dataset, DatasetInput, InputTag

    out = []
    for item in record.get("inputs", []):
        if not item.get("sha256"):
            continue
        name = f"{param_name(item['param'])}: {base_name(item['path'])}"
        profile = {"size": item["size"], "files": len(item["files"]), "sha256": item["sha256"]}
        tags = {"mlflow.data.context": "input", "mlops_kit.param": param_name(item["param"]),
                "mlops_kit.path": item["path"], "mlops_kit.sha256": item["sha256"], "mlops_kit.kind": item["kind"]}
        producers = producers_of(item)
        if producers:
            tags["mlops_kit.producer_run_id"] = ",".join(producers)
            every = all(f.get("producer") for f in item["files"])
            tags["mlops_kit.produced"] = "all files" if every else "some files"
        dataset = Dataset(name=name[:500], digest=item["sha256"][:32], source_type="local",
                          source=json.dumps({"uri": Path(item["path"]).as_uri()}), profile=json.dumps(profile))
        out.append(DatasetInput(dataset, tags=[InputTag(k, v[:500]) for k, v in tags.items()]))
    return out
