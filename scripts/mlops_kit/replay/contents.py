"""Everything a run holds, compared: its params, tags, metric histories and artifacts, the notebook's own included.

A replay is only as good as what it compares: a notebook that logs ``mlflow.log_param("seed", random...)`` or
``mlflow.log_text(str(time.time()), "stamp.txt")`` itself must not be called reproduced. So every param, tag, metric
(its whole history: every step) and artifact (by sha256) of the recorded run is compared with the replay run's,
except what legitimately differs from one run to the next. That is decided by one documented rule (:func:`skip_param`,
:func:`skip_tag`, :func:`skip_artifact`) and each skipped item is listed in the report with the reason.

Artifacts are compared file by file by sha256, unless a registered :class:`Comparer` claims them: a folder holding
its ``marker`` file (an MLflow model's ``MLmodel``) or a file matching its ``pattern`` is then compared as one unit
by its function. Built in: MLflow model folders (every file by sha256, ``MLmodel`` without the run id, model id and
creation time MLflow writes into it; a serialized model that differs — a pickle or skops zip is not byte-stable — is
compared by its predictions on the recorded input example, loaded with the replay venv's mlflow). Add one with
:func:`register` (the newest registered is tried first).
"""

from __future__ import annotations

import fnmatch
import json
import math
import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Mapping, Sequence

import yaml

from ..core import proc, redact
from ..core.paths import file_sha256

Kind = Literal["param", "tag", "metric", "artifact"]
History = list[tuple[int, float]]  # (step, value), in the order MLflow returns them (by step, then time)


@dataclass
class Held:
    """What one run holds, read in the tracking worker (:func:`mlops_kit.replay.recorded.contents`)."""

    params: dict[str, str]
    tags: dict[str, str]
    metrics: dict[str, History]
    artifacts: str  # local folder holding every artifact of the run
    unreadable: list[str] = field(default_factory=list)  # artifacts listed but not downloaded (with why)
    models: dict[str, str] = field(default_factory=dict)  # MLflow 3 logged models of the run: name -> model id


@dataclass
class Row:
    """One compared item: ``same`` False is a difference (exit 8)."""

    kind: Kind
    name: str
    recorded: str | None  # None: the run does not hold it
    replayed: str | None
    same: bool
    how: str = ""  # "sha256", "value", "history of 3 steps", a comparer's kind ...
    unit: bool = False  # a folder (or file) a comparer judged as one unit


@dataclass
class Skipped:
    """One item not compared, and why (the report's table of what was skipped)."""

    kind: Kind
    name: str
    why: str
    recorded: str | None = None
    replayed: str | None = None


# ---------------------------------------------------------------------------------------------------- the rule

# Params the runner logs that describe the replay, not the result (the notebook's own are all compared).
_VOLATILE_PARAMS = {
    "venv_name": "the replay venv's name (the recorded one plus a hash of what defines it); the environment is "
                 "compared in its own row",
    "git_commit": "the checkout the replay ran from; the notebook itself is compared (source/)",
    "git_branch": "the checkout the replay ran from; the notebook itself is compared (source/)",
    "git_dirty": "the checkout the replay ran from; the notebook itself is compared (source/)",
    "notebook": "the path the notebook was run from; the notebook itself is compared (source/)",
    "output_dir": "the replay's own output folder; the files written there are compared (outputs/)",
}
_INPUT_PARAM = "an input's path: the replay points it at its verified copy; its content is compared by sha256 " \
               "(inputs)"
# Tags MLflow or the toolkit set that differ per run by nature; any other tag (the notebook's) is compared.
_RUN_CONTEXT = "who, where and how this run was started (differs per run)"
_VOLATILE_TAGS = {
    "mlflow.user": _RUN_CONTEXT, "mlflow.source.name": _RUN_CONTEXT, "mlflow.source.type": _RUN_CONTEXT,
    "mlflow.source.git.commit": _RUN_CONTEXT, "mlflow.source.git.branch": _RUN_CONTEXT,
    "mlflow.source.git.repoURL": _RUN_CONTEXT, "mlflow.parentRunId": "the run it is nested under",
    "mlflow.log-model.history": "MLflow's record of logged models: run ids and times",
    "mlops_kit.role": "stage for the record, replay for the replay", "mlops_kit.replay_of": "the replay's link",
    "mlops_kit.replay_verdict": "the replay's verdict", "mlops_kit.pipeline_key": "the pipeline instance it ran in",
    "mlops_kit.reuse_key": "the key a later run may reuse it by (a replay's run has none: it is never reused)",
    "mlops_kit.venv": "the venv's path (the replay's own venv)", "mlops_kit.envs.kernel": "the venv's kernel name",
    "mlops_kit.python_source": "where the interpreter was found (the Python patch itself is compared)",
    "mlops_kit.python_build": "which build of the interpreter (the Python patch itself is compared)",
    "mlops_kit.outputs.sha256": "one digest of every output: they are compared file by file (outputs), an MLflow "
                                "model folder as one unit (its serialized model by predictions)",
}
_REGISTRY = "the model registry's facts (version, decision, uris): a replay logs its model but registers nothing"
_VOLATILE_TAG_PREFIXES = {"GO_": "GoCD's variables of the job that ran it",
                          "mlflow.databricks.": _RUN_CONTEXT, "mlops_kit.model.": _REGISTRY}
_LOGGED_MODEL = "an MLflow 3 logged model (kept outside the run's artifacts, by its id): compared where the " \
                "notebook also writes it as an output (the example's outputs/mlflow_model: by predictions)"
_SECRET_PARAM = "a secret: logged masked (and only when given), a credential rather than an input"
_VOLATILE_METRIC_PREFIXES = {"system/": "MLflow's system metrics (CPU, memory of the machine)"}


def skip_param(name: str, input_params: Sequence[str]) -> str | None:
    """Why the param ``name`` is not compared, or None (compared)."""
    if name in _VOLATILE_PARAMS:
        return _VOLATILE_PARAMS[name]
    if any(name == top or name.startswith((top + ".", top + "[")) for top in input_params):
        return _INPUT_PARAM
    if any(redact.is_secret_name(part) for part in re.split(r"[.\[\]]+", name) if part):
        return _SECRET_PARAM
    return None


def skip_tag(name: str) -> str | None:
    if name in _VOLATILE_TAGS:
        return _VOLATILE_TAGS[name]
    return next((why for prefix, why in _VOLATILE_TAG_PREFIXES.items() if name.startswith(prefix)), None)


def skip_metric(name: str) -> str | None:
    return next((why for prefix, why in _VOLATILE_METRIC_PREFIXES.items() if name.startswith(prefix)), None)


def skip_artifact(path: str, stems: Sequence[str], has_lineage: bool) -> str | None:
    """Why the artifact ``path`` is not compared, or None. ``stems``: the executed notebook's name (without
    ``.ipynb``) in either run."""
    top = path.split("/", 1)[0]
    if "/" not in path and any(path in (f"{s}.ipynb", f"{s}.html", f"{s}.mlflow_server.log") for s in stems):
        return "the executed notebook, its HTML or its served store's log: timings, paths and ids of this run; " \
               "what it computed is compared through what it logged and wrote"
    reasons = {
        "environment": "env.json holds paths and times; the environment is compared in its own row (Python "
                       "patch, pip freeze)",
        "lineage": "paths and run ids; its inputs and outputs are compared file by file",
        "params": "the parameters copy (output_dir and input paths are the replay's); every parameter is compared "
                  "as an MLflow param",
        "replay": "a replay's own report",
    }
    if "/" in path and top in reasons:
        return reasons[top]
    if top == "source" and not has_lineage:
        return "the recorded run predates lineage: it holds no copy of the notebook as given"
    return None


# ---------------------------------------------------------------------------------------------------- comparers


@dataclass(frozen=True)
class CompareContext:
    """What a comparer may use besides the two artifacts: the replay venv's interpreter (a model is loaded with
    the packages it was made with), the replay's tolerance, a scratch folder."""

    python: Path | None
    rtol: float
    scratch: Path


@dataclass(frozen=True)
class Comparer:
    """Compares one kind of artifact as a unit: ``compare(recorded, replayed, context)`` gets the two local copies
    (a folder or a file; None: that run does not hold it) and returns ``(same, what it found)``."""

    kind: str  # shown in the report ("mlflow model")
    compare: Callable[[Path | None, Path | None, CompareContext], tuple[bool, str]]
    marker: str | None = None  # a folder holding a file of this name is one unit (e.g. "MLmodel")
    pattern: str | None = None  # files whose artifact path matches (fnmatch) are units (e.g. "*.parquet")


COMPARERS: list[Comparer] = []


def register(comparer: Comparer) -> None:
    """Add a comparer; it is tried before those registered earlier (so it may take over a built-in one)."""
    COMPARERS.insert(0, comparer)


def sha256_of(path: Path) -> str:
    return file_sha256(path)[0]


def _files(root: Path) -> dict[str, Path]:
    """Every file under ``root`` by its artifact path (``a/b.txt``)."""
    if not root.is_dir():
        return {}
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


_MLMODEL_VOLATILE = ("run_id", "model_uuid", "utc_time_created", "model_id", "artifact_path", "databricks_runtime")


def _mlmodel_text(path: Path) -> str:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return sha256_of(path)
    if isinstance(data, dict):
        for key in _MLMODEL_VOLATILE:
            data.pop(key, None)
    return yaml.safe_dump(data, sort_keys=True)


def _differing(recorded: Path, replayed: Path) -> tuple[int, list[str]]:
    """(files in the recorded folder, the files that differ: ``MLmodel`` without what MLflow writes anew)."""
    old, new = _files(recorded), _files(replayed)
    differ = []
    for name in sorted(old.keys() | new.keys()):
        a, b = old.get(name), new.get(name)
        if a is None or b is None:
            differ.append(f"{name} only in the {'replay' if a is None else 'record'}")
        elif name == "MLmodel" and _mlmodel_text(a) != _mlmodel_text(b):
            differ.append("MLmodel")
        elif name != "MLmodel" and sha256_of(a) != sha256_of(b):
            differ.append(name)
    return len(old), differ


def compare_model_files(recorded: Path | None, replayed: Path | None, context: CompareContext) -> tuple[bool, str]:
    """An MLflow model folder: every file by sha256, ``MLmodel`` without what MLflow writes anew for each run."""
    if recorded is None or replayed is None:
        return False, "only in the " + ("replay" if recorded is None else "record")
    count, differ = _differing(recorded, replayed)
    if differ:
        return False, "differs: " + ", ".join(differ[:3]) + (" ..." if len(differ) > 3 else "")
    return True, f"{count} file(s) the same (MLmodel without run id, model id and time)"


register(Comparer("mlflow model", compare_model_files, marker="MLmodel"))

# Loads both models with the replay venv's mlflow (the packages the model was made with) and predicts the recorded
# model's input example with each: prints the two predictions as JSON lists.
_PREDICT = r"""
import json, sys
import numpy as np
from mlflow.models import Model
from mlflow.pyfunc import load_model
example = Model.load(sys.argv[1]).load_input_example(sys.argv[1])
print(json.dumps([np.asarray(load_model(p).predict(example)).tolist() for p in sys.argv[1:3]]))
"""
_SERIALIZED = ("*.pkl", "*.skops", "*.joblib", "*.cloudpickle", "*.pickle")


def compare_model_predictions(recorded: Path | None, replayed: Path | None,
                              context: CompareContext) -> tuple[bool, str]:
    """An MLflow model folder whose serialized model differs (a pickle or a skops zip is not byte-stable: zip
    times, memo order): every other file as :func:`compare_model_files` does, and the model by its predictions on
    the recorded model's input example (within ``rtol``), both loaded with the replay venv's mlflow."""
    same, what = compare_model_files(recorded, replayed, context)
    if same or recorded is None or replayed is None or context.python is None:
        return same, what
    differ = _differing(recorded, replayed)[1]
    if not all(any(fnmatch.fnmatch(name, p) for p in _SERIALIZED) for name in differ):
        return same, what
    return _same_predictions(recorded, replayed, context, differ)


def _same_predictions(recorded: Path, replayed: Path, context: CompareContext,
                      serialized: list[str]) -> tuple[bool, str]:
    result = proc.run([str(context.python), "-c", _PREDICT, str(recorded), str(replayed)], check=False,
                      timeout=300)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        return False, f"{', '.join(serialized)} differ(s) (sha256) and could not be predicted with: {last}"
    try:
        old, new = json.loads(result.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return False, f"{', '.join(serialized)} differ(s) (sha256); the predictions could not be read"
    flat_old, flat_new = _flat(old), _flat(new)
    if len(flat_old) != len(flat_new) or not all(
            a == b or isinstance(a, float) and isinstance(b, float) and _same_number(a, b, context.rtol)
            for a, b in zip(flat_old, flat_new)):
        return False, f"predictions on the input example differ: {short(str(old))} vs {short(str(new))}"
    return True, (f"{', '.join(serialized)} not byte-identical (sha256), same predictions on the input example "
                  f"({len(flat_old)} value(s)); every other file the same (MLmodel without run id, model id, time)")


def _flat(value: object) -> list[object]:
    return [x for item in value for x in _flat(item)] if isinstance(value, list) else [value]


register(Comparer("mlflow model", compare_model_predictions, marker="MLmodel"))


# ---------------------------------------------------------------------------------------------------- compare


def short(value: str | None, width: int = 40) -> str:
    if value is None:
        return "-"
    value = " ".join(value.split())
    return value if len(value) <= width else value[: width - 3] + "..."


def compare_values(kind: Kind, recorded: Mapping[str, str], replayed: Mapping[str, str],
                   skip: Callable[[str], str | None], rows: list[Row], skipped: list[Skipped]) -> None:
    for name in sorted(recorded.keys() | replayed.keys()):
        a, b = recorded.get(name), replayed.get(name)
        why = skip(name)
        if why is not None:
            skipped.append(Skipped(kind, name, why, a, b))
        else:
            rows.append(Row(kind, name, a, b, a is not None and a == b, "value"))


def _same_number(a: float, b: float, rtol: float) -> bool:
    if math.isnan(a) or math.isnan(b):
        return math.isnan(a) and math.isnan(b)
    return a == b or math.isclose(a, b, rel_tol=rtol, abs_tol=0.0)


def compare_histories(recorded: Mapping[str, History], replayed: Mapping[str, History], rtol: float,
                      rows: list[Row], skipped: list[Skipped]) -> None:
    """Every metric's every step (the last values are in the metrics table; this catches an earlier step)."""
    for name in sorted(recorded.keys() | replayed.keys()):
        a, b = recorded.get(name), replayed.get(name)
        why = skip_metric(name)
        if why is not None:
            skipped.append(Skipped("metric", name, why))
            continue
        if a is None or b is None or len(a) <= 1 and len(b) <= 1:
            continue  # one value (or one run only): the metrics table says it
        steps = [s for s, _ in a] == [s for s, _ in b]
        first = next((i for i, (x, y) in enumerate(zip(a, b)) if not _same_number(x[1], y[1], rtol)), None)
        if steps and first is None:
            rows.append(Row("metric", name, f"{len(a)} steps", f"{len(b)} steps", True, "history"))
        elif first is not None:
            rows.append(Row("metric", name, f"step {a[first][0]}: {a[first][1]!r}",
                            f"step {b[first][0]}: {b[first][1]!r}", False, "history"))
        else:
            rows.append(Row("metric", name, f"{len(a)} steps {[s for s, _ in a][:5]}",
                            f"{len(b)} steps {[s for s, _ in b][:5]}", False, "history"))


@dataclass(frozen=True)
class ArtifactPlan:
    """How two runs' artifacts line up: which are skipped, which a comparer takes, the rest by sha256."""

    stems: tuple[str, ...]
    has_lineage: bool
    known_outputs: Mapping[str, str]  # artifact path -> sha256 lineage recorded (a file deleted from the store)


def _units(paths: Sequence[str]) -> dict[str, Comparer]:
    """Artifact folders (or files) a comparer claims, the deepest marker first."""
    units: dict[str, Comparer] = {}
    for comparer in COMPARERS:
        for path in paths:
            if comparer.marker and posixpath.basename(path) == comparer.marker:
                units.setdefault(posixpath.dirname(path), comparer)
            elif comparer.pattern and fnmatch.fnmatch(path, comparer.pattern):
                units.setdefault(path, comparer)
    return units


def _in_unit(path: str, units: Mapping[str, Comparer]) -> str | None:
    return next((u for u in units if path == u or u == "" or path.startswith(u + "/")), None)


def compare_artifacts(recorded: Held, replayed: Held, plan: ArtifactPlan, context: CompareContext,
                      rows: list[Row], skipped: list[Skipped]) -> None:
    old, new = _files(Path(recorded.artifacts)), _files(Path(replayed.artifacts))
    compared: dict[str, tuple[Path | None, Path | None]] = {}
    for path in sorted(old.keys() | new.keys()):
        why = skip_artifact(path, plan.stems, plan.has_lineage)
        if why is not None:
            skipped.append(Skipped("artifact", path, why))
        else:
            compared[path] = (old.get(path), new.get(path))
    units = _units(list(compared))
    for unit, comparer in units.items():
        base_old, base_new = Path(recorded.artifacts) / unit, Path(replayed.artifacts) / unit
        same, what = comparer.compare(base_old if base_old.exists() else None,
                                      base_new if base_new.exists() else None, context)
        rows.append(Row("artifact", unit or ".", "present" if base_old.exists() else None,
                        "present" if base_new.exists() else None, same, f"{comparer.kind}: {what}", unit=True))
    for path, (a, b) in compared.items():
        if _in_unit(path, units) is not None:
            continue
        sha_a, sha_b = (sha256_of(a) if a else None), (sha256_of(b) if b else None)
        how = "sha256"
        if sha_a is None and path in plan.known_outputs:
            sha_a, how = plan.known_outputs[path], "sha256 (gone from the recorded run's store: lineage's sha256)"
        rows.append(Row("artifact", path, sha_a, sha_b, sha_a is not None and sha_a == sha_b, how))
    for name in sorted(recorded.models.keys() | replayed.models.keys()):
        old_id, new_id = recorded.models.get(name), replayed.models.get(name)
        if old_id is None or new_id is None:  # logged by one run only: a difference; its content is not compared
            rows.append(Row("artifact", f"logged model {name}", old_id, new_id, False, "logged model (by name)"))
        else:
            skipped.append(Skipped("artifact", f"logged model {name}", _LOGGED_MODEL, old_id, new_id))
    for problem in recorded.unreadable + replayed.unreadable:
        skipped.append(Skipped("artifact", problem, "listed by the store but could not be downloaded"))
