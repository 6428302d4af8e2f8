"""What a stage run logs, decided before it runs, and the manifest that keeps it on disk.

Everything is collected in a :class:`RunRecord` first (params already masked, flattened and clipped to what MLflow
accepts; only *named* GoCD variables as tags), written next to the output notebook as
``<output stem>.mlops_run.json``. That manifest is what ``run_notebook.py --log-existing`` uploads when the tracking
server was down during the run (:mod:`mlops_kit.run.upload`), so nothing is lost. Which store and experiment a run
goes to is :mod:`mlops_kit.run.store`'s. This module imports no mlflow: the MLflow calls are
:mod:`mlops_kit.run.tracking`'s.
"""

from __future__ import annotations

import dataclasses
import getpass
import json
import math
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, get_args

from ..core import paths
from ..core.console import Warn
from ..core.errors import BadInput
from ..core.redact import MASK, is_secret_name, redact, redacted, strip_credentials
from ..core.userfile import read_input
from .lineage import LineageRecord
from .params import flatten
from .reuse import ReuseKey
from .store import Target

MANIFEST_SUFFIX = ".mlops_run.json"
METRICS_FILE = "metrics.json"
GOCD_VARS = ("GO_PIPELINE_NAME", "GO_PIPELINE_COUNTER", "GO_PIPELINE_LABEL", "GO_STAGE_NAME", "GO_STAGE_COUNTER",
             "GO_JOB_NAME", "GO_TRIGGER_USER", "GO_SERVER_URL")
GOCD_PREFIXES = ("GO_REVISION",)
PIPELINE_KEY_TAG = "mlops_kit.pipeline_key"
PIPELINE_ORIGIN_VAR = "MLOPS_KIT_PIPELINE_ORIGIN"  # set by run_pipeline.py: which local rehearsal a stage belongs to
ROLE_TAG = "mlops_kit.role"
REPLAY_OF_TAG = "mlops_kit.replay_of"  # a replay's run: the run it replays (replay_run.py)
VERDICT_TAG = "mlops_kit.replay_verdict"  # a replay's verdict, read by the reuse search too
# MLflow's limits (mlflow.utils.validation, 3.x): values longer are refused, keys are restricted.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250
_KEY_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.\- ]")


# --- what gets logged ---------------------------------------------------------------------------------------


def gocd_context(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Only the named GoCD variables (and ``GO_REVISION*``); secure variables never match these names."""
    env = os.environ if env is None else env
    found = {name: env[name] for name in GOCD_VARS if env.get(name)}
    found.update({k: v for k, v in sorted(env.items()) if k.startswith(GOCD_PREFIXES) and v})
    return found


def pipeline_key(env: Mapping[str, str] | None = None) -> str | None:
    """``<GO_PIPELINE_NAME>/<GO_PIPELINE_COUNTER>``: stages sharing it are nested under one parent run.

    A local rehearsal (run_pipeline.py) adds its origin (``MLOPS_KIT_PIPELINE_ORIGIN``): its counters start at 1
    in every clone, so without it a rehearsal logged to the team's server would join GoCD's run of that number.
    """
    env = os.environ if env is None else env
    name, counter = env.get("GO_PIPELINE_NAME"), env.get("GO_PIPELINE_COUNTER")
    if not name or not counter:
        return None
    origin = env.get(PIPELINE_ORIGIN_VAR)
    return re.sub(r"[^A-Za-z0-9_.\-/ #]", "_", f"{name}/{counter}" + (f" {origin}" if origin else ""))


def safe_key(key: str) -> str:
    """A key MLflow accepts: letters, digits, ``_ . - space`` only, not a path trick, at most 250 characters."""
    key = _KEY_BAD_CHARS.sub("_", str(key)).strip()
    if not key or key == "." or key.startswith(".."):
        key = f"_{key}"
    return key[:MAX_KEY]


def _unique(key: str, taken: set[str]) -> str:
    if key not in taken:
        return key
    n = 2
    while f"{key[:MAX_KEY - 6]}_{n}" in taken:
        n += 1
    return f"{key[:MAX_KEY - 6]}_{n}"


def clip(value: str, limit: int) -> str:
    """Clip to MLflow's limit, marking the cut so nobody mistakes it for the full value."""
    if len(value) <= limit:
        return value
    marker = f"...[truncated {len(value) - limit + 40} chars]"
    return value[:limit - len(marker)] + marker


def value_text(value: Any) -> str:
    """How a parameter value is shown in MLflow (JSON for lists/dicts, Python's text otherwise)."""
    if isinstance(value, (list, dict)):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def loggable_params(system: Mapping[str, Any], notebook: Mapping[str, Any],
                    warn: Warn | None = None) -> dict[str, str]:
    """System params then flattened notebook params: keys made safe and unique, secrets masked, values clipped."""
    out: dict[str, str] = {}
    for name, value in [*system.items(), *flatten(notebook).items()]:
        key = _unique(safe_key(name), set(out))
        if key != name and warn:
            warn(f"parameter {name!r} is logged to MLflow as {key!r}")
        shown = MASK if is_secret_name(name) and value is not None else redact(value_text(value))
        out[key] = clip(shown, MAX_PARAM_VALUE)
    return out


def loggable_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {safe_key(k): clip(redact(str(v)), MAX_TAG_VALUE) for k, v in tags.items() if v is not None}


def read_metrics(output_dir: Path, *, since: float, warn: Warn) -> dict[str, float]:
    """``<output_dir>/metrics.json`` ({"name": number}, nested mappings flattened) written during this run."""
    path = output_dir / METRICS_FILE
    try:
        if path.stat().st_mtime < since - 2:
            warn(f"{path}: older than this run, not logged as metrics (write it from the notebook)")
            return {}
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        warn(f"{path}: not readable as JSON ({exc}); no metrics logged from it")
        return {}
    if not isinstance(data, dict):
        warn(f"{path}: expected a JSON object {{\"name\": number}}; no metrics logged from it")
        return {}
    metrics: dict[str, float] = {}
    for name, value in flatten(data).items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            warn(f"{path}: metric {name!r} is not a number ({value_text(value)[:60]}); skipped")
            continue
        metrics[_unique(safe_key(name), set(metrics))] = float(value)
    return metrics


# --- the record / manifest -----------------------------------------------------------------------------------

RunStatus = Literal["RUNNING", "FINISHED", "FAILED", "KILLED"]  # MLflow's RunStatus names, as the manifest keeps them
RUN_STATUSES: tuple[str, ...] = get_args(RunStatus)


@dataclass(frozen=True)
class RunFile:
    """A local file (or folder) the run logs, and the artifact folder it goes to (``""``: the run's root)."""

    local: str
    artifact_folder: str = ""

    def to_json(self) -> list[str]:
        """As the manifest keeps it (schema 1): ``[local, artifact folder]``."""
        return [self.local, self.artifact_folder]

    @classmethod
    def from_json(cls, data: Any) -> RunFile:
        if not (isinstance(data, list) and len(data) == 2 and all(isinstance(part, str) for part in data)):
            raise ValueError(f"expected [local path, artifact folder], found {data!r:.80}")
        return cls(data[0], data[1])


@dataclass
class RunRecord:
    """Everything one run logs; saved as the manifest so a run can be uploaded later."""

    tracking_uri: str
    experiment: str
    run_name: str
    params: dict[str, str]
    tags: dict[str, str]
    artifact_location: str | None = None
    pipeline_key: str | None = None
    pipeline_run_name: str | None = None
    files: list[RunFile] = field(default_factory=list)
    folders: list[RunFile] = field(default_factory=list)  # logged whole (the output folder: "outputs")
    executed_notebook: str | None = None
    html: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    status: RunStatus = "RUNNING"
    failure: dict[str, str] = field(default_factory=dict)
    start_time: int = field(default_factory=lambda: int(time.time() * 1000))
    end_time: int | None = None
    run_id: str | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None
    params_logged: bool = False
    logged: bool = False
    lineage: LineageRecord | None = None  # None: not recorded (a record made before lineage existed)
    ended_by_caller: bool = False  # a replay's run: left RUNNING when finished, ended once its verdict is logged
    reuse_key: ReuseKey | None = None  # None: a replay's run, or a record made before reuse existed
    schema: int = 1

    @property
    def target(self) -> Target:
        return Target(self.tracking_uri, self.experiment, self.artifact_location)

    def folder(self, artifact_folder: str) -> Path | None:
        """The local folder logged as ``artifact_folder`` (``outputs``: the run's output folder), if any."""
        return next((Path(f.local) for f in self.folders if f.artifact_folder == artifact_folder), None)


@dataclass(frozen=True)
class RunResult:
    """How a run ended, as the runner prints it and a replay reads it (without reading the manifest back)."""

    run_id: str | None
    status: RunStatus
    logged: bool
    experiment: str
    tracking_uri: str
    executed_notebook: Path | None
    manifest: Path

    @classmethod
    def of(cls, record: RunRecord, manifest: Path) -> RunResult:
        return cls(record.run_id, record.status, record.logged, record.experiment, record.tracking_uri,
                   Path(record.executed_notebook) if record.executed_notebook else None, manifest)

    def summary(self) -> str:
        """The line naming the MLflow run (password in the URI masked)."""
        return (f"MLflow run {self.run_id} ({self.status}) in experiment {self.experiment!r} "
                f"at {redact(self.tracking_uri)}")


def manifest_path(output: Path) -> Path:
    """The manifest of the run writing ``output``: ``<output stem>.mlops_run.json`` next to it."""
    return output.with_name(output.stem + MANIFEST_SUFFIX)


def save_manifest(record: RunRecord, path: Path) -> None:
    """The record as JSON (schema 1: the fields in order, files as ``[local, folder]`` pairs), no credentials."""
    data: dict[str, Any] = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    data["tracking_uri"] = strip_credentials(record.tracking_uri)  # published with the job's artifacts
    data["files"] = [f.to_json() for f in record.files]
    data["folders"] = [f.to_json() for f in record.folders]
    data["metrics"] = {k: (v if math.isfinite(v) else str(v)) for k, v in record.metrics.items()}
    data["lineage"] = record.lineage.to_json() if record.lineage is not None else {}
    if not record.ended_by_caller:  # only a replay's manifest has it: every other one reads as before it existed
        del data["ended_by_caller"]
    if record.reuse_key is None:
        del data["reuse_key"]
    else:
        data["reuse_key"] = record.reuse_key.to_json()
    for texts in ("params", "tags", "failure"):  # what a notebook's values can reach (an error message); not paths
        data[texts] = redacted(data[texts])
    paths.write_json_atomic(path, data, indent=1)


def load_manifest(path: Path) -> RunRecord:
    """Read a manifest written by run_notebook (any version writing schema 1); every problem names the file and
    the field."""
    try:
        data = json.loads(read_input(path, "manifest"))
    except ValueError as exc:
        raise BadInput(f"{path}: not a readable run manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("schema") != 1 or not {"tracking_uri", "params"} <= set(data):
        raise BadInput(f"{path}: not a run manifest written by run_notebook.py (schema 1)")
    typed = {"files": lambda v: [RunFile.from_json(f) for f in v or []],
             "folders": lambda v: [RunFile.from_json(f) for f in v or []],
             "metrics": lambda v: {k: float(m) for k, m in (v or {}).items()},
             "lineage": lambda v: LineageRecord.from_json(v) if v else None,
             "reuse_key": lambda v: ReuseKey.from_json(v) if v else None,
             "status": _status}
    for name, read in typed.items():
        if name in data:
            try:
                data[name] = read(data[name])
            except (ValueError, TypeError, AttributeError) as exc:
                raise BadInput(f"{path}: field {name!r}: {exc}") from None
    names = {f.name for f in dataclasses.fields(RunRecord)}
    return RunRecord(**{k: v for k, v in data.items() if k in names})


def _status(value: Any) -> RunStatus:
    if value not in RUN_STATUSES:
        raise ValueError(f"expected one of {', '.join(RUN_STATUSES)}, found {value!r:.40}")
    return value


def current_user() -> str | None:
    """The account running the tool; ``None`` when it has no name (some service accounts)."""
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - getpass raises OSError, KeyError or ImportError depending on the platform
        return None
