"""MLflow tracking of one notebook run: where to log, what to log, and a manifest to log it later.

Where: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the current folder (made
absolute, so the kernel and a later ``--log-existing`` find the same file). Experiments this module creates in a
local SQLite store keep their artifacts in ``<folder of mlflow.db>/mlruns/<experiment>``. Experiment:
``--experiment``, else ``MLFLOW_EXPERIMENT_NAME``, else ``GO_PIPELINE_NAME``, else ``mlops_kit``.

What: everything is collected in a :class:`RunRecord` first (params already masked, flattened and clipped to what
MLflow accepts; only *named* GoCD variables as tags), written next to the output notebook as
``<output stem>.mlops_run.json``. That manifest is what :func:`log_existing` uploads when the tracking server was
down during the run, so nothing is lost.

Speed: importing mlflow and opening a SQLite store takes longer than running a small notebook, so
:class:`Tracker` does the MLflow work in one helper process (a plain ``python -c`` child, started first) while
papermill loads and the kernel starts; nothing here imports mlflow at module level. The helper runs with
``MLFLOW_DISABLE_TELEMETRY=true`` unless set otherwise (an audited job does not report usage), and fewer HTTP
retries than MLflow's default (a dead server costs seconds, not minutes) unless ``MLFLOW_HTTP_REQUEST_*`` are set.

Parent runs: the first stage of a pipeline instance creates the parent (tag ``mlops_kit.pipeline_key``); stages
starting at the same moment (parallel GoCD jobs) converge on one parent, see :func:`_parent_run`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import getpass
import json
import math
import os
import pickle
import re
import socket
import struct
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit, urlunsplit

from . import proc
from .errors import BadInput, TrackingError
from .inputs import read_input
from .params import flatten, is_secret, MASK

_PLATFORM = sys.platform  # seam: tests patch it to exercise the Windows branch
DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "mlops_kit"
MANIFEST_SUFFIX = ".mlops_run.json"
METRICS_FILE = "metrics.json"
GOCD_VARS = ("GO_PIPELINE_NAME", "GO_PIPELINE_COUNTER", "GO_PIPELINE_LABEL", "GO_STAGE_NAME", "GO_STAGE_COUNTER",
             "GO_JOB_NAME", "GO_TRIGGER_USER", "GO_SERVER_URL")
GOCD_PREFIXES = ("GO_REVISION",)
PIPELINE_KEY_TAG = "mlops_kit.pipeline_key"
PIPELINE_ORIGIN_VAR = "MLOPS_KIT_PIPELINE_ORIGIN"  # set by run_pipeline.py: which local rehearsal a stage belongs to
ROLE_TAG = "mlops_kit.role"
# MLflow's limits (mlflow.utils.validation, 3.x): values longer are refused, keys are restricted.
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
MAX_KEY = 250
BATCH = 100
SETTLE_SECONDS = 0.5  # after creating a parent run: time for a stage started at the same moment to show up
_FAILED_STATES = ("FAILED", "KILLED")
_URL_PASSWORD = re.compile(r"(://[^/:@\s]+:)[^/\s]*@")
_KEY_BAD_CHARS = re.compile(r"[^A-Za-z0-9_.\- ]")
_QUIET_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}


@dataclass(frozen=True)
class Target:
    """Resolved tracking store and experiment."""

    uri: str
    experiment: str
    artifact_location: str | None = None  # for experiments we create in a local SQLite store


def resolve_target(uri: str | None, experiment: str | None, *, env: Mapping[str, str] | None = None,
                   cwd: Path | None = None) -> Target:
    """Apply the documented precedence; a relative SQLite path becomes absolute (relative to ``cwd``)."""
    env = os.environ if env is None else env
    uri = (uri or env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI).strip()
    name = (experiment or env.get("MLFLOW_EXPERIMENT_NAME") or env.get("GO_PIPELINE_NAME") or DEFAULT_EXPERIMENT)
    if not name.strip():
        raise BadInput("--experiment: the experiment name must not be empty")
    location = None
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        db = Path(uri[len("sqlite:///"):])
        db = Path(os.path.abspath((cwd or Path.cwd()) / db))
        uri = "sqlite:///" + db.as_posix()
        location = (db.parent / "mlruns" / _slug(name)).as_uri()
    elif "://" not in uri and not uri.startswith(("databricks", "file:")):
        raise BadInput(f"--tracking-uri {hide_password(uri)!r}: expected a URI such as http://host:5000 or sqlite:///mlflow.db")
    return Target(uri=uri, experiment=name.strip(), artifact_location=location)


def hide_password(text: str) -> str:
    """Every ``scheme://user:password@host`` in ``text`` shown as ``scheme://user:********@host`` (for logs and
    messages: a tracking URI may carry credentials)."""
    return _URL_PASSWORD.sub(r"\1********@", text)


def without_credentials(uri: str) -> str:
    """``http://user:pass@host/x`` -> ``http://host/x``: what the manifest (a published GoCD artifact) keeps.
    Uploading later takes ``--tracking-uri`` again, or MLflow's MLFLOW_TRACKING_USERNAME/PASSWORD variables."""
    parts = urlsplit(uri)
    if "@" not in parts.netloc:
        return uri
    return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "experiment"


# --- what gets logged ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GitInfo:
    commit: str = "unknown"
    branch: str = "unknown"
    dirty: str = "unknown"
    root: Path | None = None


def git_info(path: Path) -> GitInfo:
    """Commit, branch and dirty flag of the repo holding ``path``; outside git (or ignored by it, or without git)
    the revision GoCD passes, else "unknown"."""
    folder = path if path.is_dir() else path.parent

    def git(*args: str) -> str | None:
        try:
            result = proc.run(["git", "-C", str(folder), *args], check=False, timeout=30)
        except proc.CommandError:
            return None
        return result.stdout.strip() if result.returncode == 0 else None

    root = git("rev-parse", "--show-toplevel")
    if root is None or git("check-ignore", "-q", str(path)) is not None:
        # not in a repo, or in one that ignores it (a rehearsal's copy under .pipeline/): not that repo's code
        return _gocd_revision(os.environ)
    commit = git("rev-parse", "HEAD") or "unknown"
    branch = git("rev-parse", "--abbrev-ref", "HEAD") or "unknown"
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = "unknown" if status is None else str(bool(status))
    return GitInfo(commit=commit, branch=branch, dirty=dirty, root=Path(root))


def _gocd_revision(env: Mapping[str, str]) -> GitInfo:
    """Outside a checkout (a GoCD fetch-only job, a local rehearsal's copy) the material revision GoCD passes is
    still the commit that ran; the dirty flag cannot be known there."""
    def only(prefix: str) -> str | None:
        values = {v for k, v in env.items() if k.startswith(prefix) and v}
        return values.pop() if len(values) == 1 else None

    commit = env.get("GO_REVISION") or only("GO_REVISION_")
    branch = only("GO_MATERIAL_BRANCH_")
    return GitInfo(commit=commit or "unknown", branch=branch or "unknown")


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
                    warn: Any = None) -> dict[str, str]:
    """System params then flattened notebook params: keys made safe and unique, secrets masked, values clipped."""
    out: dict[str, str] = {}
    for name, value in [*system.items(), *flatten(notebook).items()]:
        key = _unique(safe_key(name), set(out))
        if key != name and warn:
            warn(f"parameter {name!r} is logged to MLflow as {key!r}")
        shown = MASK if is_secret(name) and value is not None else value_text(value)
        out[key] = clip(shown, MAX_PARAM_VALUE)
    return out


def loggable_tags(tags: Mapping[str, Any]) -> dict[str, str]:
    return {safe_key(k): clip(str(v), MAX_TAG_VALUE) for k, v in tags.items() if v is not None}


def read_metrics(output_dir: Path, *, since: float, warn: Any) -> dict[str, float]:
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
    files: list[list[str]] = field(default_factory=list)  # [local file, artifact folder ("" = root)]
    folders: list[list[str]] = field(default_factory=list)  # [local folder, artifact folder]
    executed_notebook: str | None = None
    html: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    status: str = "RUNNING"
    failure: dict[str, str] = field(default_factory=dict)
    start_time: int = field(default_factory=lambda: int(time.time() * 1000))
    end_time: int | None = None
    run_id: str | None = None
    experiment_id: str | None = None
    parent_run_id: str | None = None
    params_logged: bool = False
    logged: bool = False
    schema: int = 1

    @property
    def target(self) -> Target:
        return Target(self.tracking_uri, self.experiment, self.artifact_location)


def manifest_path(output: Path) -> Path:
    return output.with_name(output.stem + MANIFEST_SUFFIX)


def save_manifest(record: RunRecord, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    data = dataclasses.asdict(record)
    data["tracking_uri"] = without_credentials(record.tracking_uri)  # published with the job's artifacts
    data["metrics"] = {k: (v if math.isfinite(v) else str(v)) for k, v in record.metrics.items()}
    tmp.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load_manifest(path: Path) -> RunRecord:
    """Read a manifest written by run_notebook; every problem names the file."""
    try:
        data = json.loads(read_input(path, "manifest"))
    except ValueError as exc:
        raise BadInput(f"{path}: not a readable run manifest ({exc})") from None
    names = {f.name for f in dataclasses.fields(RunRecord)}
    if not isinstance(data, dict) or data.get("schema") != 1 or not {"tracking_uri", "params"} <= set(data):
        raise BadInput(f"{path}: not a run manifest written by run_notebook.py (schema 1)")
    data["metrics"] = {k: float(v) for k, v in (data.get("metrics") or {}).items()}
    return RunRecord(**{k: v for k, v in data.items() if k in names})


# --- talking to MLflow -----------------------------------------------------------------------------------------

_CLIENTS: dict[str, Any] = {}


@contextlib.contextmanager
def _guard(uri: str, what: str) -> Iterator[None]:
    """Any failure talking to the store becomes one TrackingError line naming the URI."""
    try:
        yield
    except TrackingError:
        raise
    except Exception as exc:  # noqa: BLE001 - mlflow/requests/sqlalchemy raise many types
        reason = hide_password(" ".join(str(exc).split())[:300]) or type(exc).__name__
        raise TrackingError(f"MLflow tracking store {hide_password(uri)}: {what} failed: {reason}") from None


def preflight(uri: str) -> None:
    """Fail in seconds when an HTTP server is down (MLflow's own retries would take minutes)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=5):
            pass
    except OSError as exc:
        raise TrackingError(f"MLflow tracking server {hide_password(uri)} is unreachable "
                            f"({exc.strerror or exc})") from None


def _client(uri: str) -> Any:
    if uri not in _CLIENTS:
        for name, value in _QUIET_RETRIES.items():
            os.environ.setdefault(name, value)
        if without_credentials(uri) != uri:  # MLflow's "View run at <uri>" would print the password
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        import logging

        from mlflow.tracking import MlflowClient

        for noisy in ("mlflow", "alembic"):  # after the import: mlflow sets its own level when imported
            logging.getLogger(noisy).setLevel(logging.WARNING)
        _CLIENTS[uri] = MlflowClient(tracking_uri=uri)
    return _CLIENTS[uri]


def _experiment_id(client: Any, target: Target) -> str:
    exp = client.get_experiment_by_name(target.experiment)
    if exp is None:
        try:
            return client.create_experiment(target.experiment, artifact_location=target.artifact_location)
        except Exception:  # noqa: BLE001 - another stage created it meanwhile
            exp = client.get_experiment_by_name(target.experiment)
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise TrackingError(f"MLflow tracking store {hide_password(target.uri)}: experiment {target.experiment!r} "
                            "is deleted (restore it in the MLflow UI or choose another with --experiment)")
    return exp.experiment_id


def _find_parents(client: Any, experiment_id: str, key: str) -> list[Any]:
    """Active parent runs of pipeline instance ``key``, in run-id order (the same order for every stage)."""
    query = f"tags.`{PIPELINE_KEY_TAG}` = '{key}' and tags.`{ROLE_TAG}` = 'pipeline'"
    runs = client.search_runs([experiment_id], filter_string=query, max_results=50)
    return sorted(runs, key=lambda r: r.info.run_id)


def _parent_run(client: Any, experiment_id: str, record: RunRecord) -> str:
    """The pipeline instance's parent run: found by tag, else created.

    Two stages starting together may both create one: each waits :data:`SETTLE_SECONDS`, looks again and keeps
    the parent with the smallest run id (no clock involved, so agents with skewed clocks agree); the other
    deletes its own.
    """
    key = record.pipeline_key
    assert key is not None
    parents = _find_parents(client, experiment_id, key)
    if not parents:
        tags = {PIPELINE_KEY_TAG: key, ROLE_TAG: "pipeline",
                **{k: v for k, v in record.tags.items() if k.startswith("GO_PIPELINE")}}
        mine = client.create_run(experiment_id, run_name=record.pipeline_run_name or key, tags=tags).info.run_id
        time.sleep(SETTLE_SECONDS)
        parents = _find_parents(client, experiment_id, key) or [client.get_run(mine)]
        if parents[0].info.run_id != mine:
            client.delete_run(mine)
    if parents[0].info.status not in _FAILED_STATES:  # a failed sibling's verdict stands
        client.update_run(parents[0].info.run_id, status="RUNNING")
    return parents[0].info.run_id


def start_run(record: RunRecord) -> dict[str, str | None]:
    """Create the run (and the pipeline's parent run) and log params and tags; returns the ids."""
    uri = record.tracking_uri
    preflight(uri)
    with _guard(uri, "opening the store"):
        client = _client(uri)
        experiment_id = _experiment_id(client, record.target)
    with _guard(uri, "creating the run"):
        parent = _parent_run(client, experiment_id, record) if record.pipeline_key else None
        tags = {k: v for k, v in record.tags.items() if k != "mlflow.runName"}  # run_name sets it
        tags.update({"mlflow.parentRunId": parent} if parent else {})
        run = client.create_run(experiment_id, start_time=record.start_time, tags=tags, run_name=record.run_name)
        _log_params(client, run.info.run_id, record.params)
    return {"run_id": run.info.run_id, "experiment_id": experiment_id, "parent_run_id": parent}


def _log_params(client: Any, run_id: str, params: Mapping[str, str]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in params.items()]
    for i in range(0, len(items), BATCH):
        client.log_batch(run_id, params=items[i:i + BATCH], synchronous=True)


def finish_run(record: RunRecord) -> None:
    """Upload artifacts and metrics, record the failure, end the run (and update the parent).

    The HTML is the caller's (rendered under its own guard): a notebook nbconvert cannot render must not lose the
    run here."""
    uri = record.tracking_uri
    preflight(uri)
    with _guard(uri, "logging the run"):
        client = _client(uri)
        assert record.run_id is not None
        _log_files(client, record)
        _log_metrics(client, record)
        if record.failure:
            from mlflow.entities import RunTag

            tags = [RunTag(f"mlops_kit.{k}", clip(str(v), MAX_TAG_VALUE)) for k, v in record.failure.items()]
            client.log_batch(record.run_id, tags=tags, synchronous=True)
        client.set_terminated(record.run_id, status=record.status, end_time=record.end_time)
        if record.parent_run_id:
            _end_parent(client, record.parent_run_id, record.status)


def _end_parent(client: Any, parent_id: str, status: str) -> None:
    """The parent takes the stage's status, but never goes from FAILED/KILLED back to FINISHED: a sibling that
    passed after another failed must not hide the failure."""
    if status == "FINISHED" and client.get_run(parent_id).info.status in _FAILED_STATES:
        return
    client.set_terminated(parent_id, status=status)


def _log_files(client: Any, record: RunRecord) -> None:
    assert record.run_id is not None
    for local, folder in record.files:
        if Path(local).is_file():
            client.log_artifact(record.run_id, local, folder or None)
    for local, folder in record.folders:
        if Path(local).is_dir() and any(Path(local).iterdir()):
            client.log_artifacts(record.run_id, local, folder or None)


def _log_metrics(client: Any, record: RunRecord) -> None:
    if not record.metrics:
        return
    from mlflow.entities import Metric

    stamp = record.end_time or int(time.time() * 1000)
    items = [Metric(k, v, stamp, 0) for k, v in record.metrics.items()]
    for i in range(0, len(items), 1000):
        client.log_batch(record.run_id, metrics=items[i:i + 1000], synchronous=True)


def log_existing(path: Path, *, uri: str | None = None) -> RunRecord:
    """Upload a run from its manifest (the run was executed while the tracking store was unreachable); ``uri``
    (the same store with credentials, or another one) replaces the manifest's."""
    record = load_manifest(path)
    if uri is not None:
        record.tracking_uri = uri
    _relocate_files(record, path.parent)
    if record.logged:
        raise BadInput(f"{path}: already logged to {hide_password(record.tracking_uri)} as run {record.run_id}")
    if record.status == "RUNNING":
        raise BadInput(f"{path}: the run never finished (status RUNNING); nothing to upload")
    if not record.params_logged or not _run_exists(record):
        record.params_logged = False
        apply_ids(record, start_run(record))
        record.params_logged = True
    _render_missing_html(record)
    finish_run(record)
    record.logged = True
    save_manifest(record, path)
    return record


def _relocate_files(record: RunRecord, near: Path) -> None:
    """Files the manifest lists that are not where the run wrote them are looked for next to the manifest (GoCD
    artifacts downloaded elsewhere keep names, not folders); each one found nowhere is a warning. A missing HTML
    is rendered again next to the notebook (:func:`_render_missing_html`)."""
    moved: dict[str, str] = {}
    for entries, wanted in ((record.files, Path.is_file), (record.folders, Path.is_dir)):
        for entry in entries:
            found = _find_near(entry[0], near, wanted)
            if found is None and entry[0] != record.html:
                print(f"warning: {entry[0]}: listed in the manifest but not found (nor next to it); not logged",
                      file=sys.stderr, flush=True)
            elif found is not None and found != entry[0]:
                moved[entry[0]], entry[0] = found, found
    record.executed_notebook = moved.get(record.executed_notebook or "", record.executed_notebook)
    if record.html in moved:
        record.html = moved[record.html]
    elif record.html and not Path(record.html).exists() and record.executed_notebook:
        html = str(Path(record.executed_notebook).with_suffix(".html"))
        record.files = [[html, f] if local == record.html else [local, f] for local, f in record.files]
        record.html = html


def _find_near(local: str, near: Path, wanted: Any) -> str | None:
    if wanted(Path(local)):
        return local
    candidate = near / _base_name(local)
    return str(candidate) if wanted(candidate) else None


def _base_name(local: str) -> str:
    """The last part of a path written on any platform (a Windows agent's manifest read on Linux too)."""
    return re.split(r"[\\/]", local.rstrip("\\/"))[-1]


def _render_missing_html(record: RunRecord) -> None:
    """The HTML copy when the run did not get to write it; a notebook nbconvert cannot render only warns."""
    if not (record.executed_notebook and record.html) or Path(record.html).exists() \
            or not Path(record.executed_notebook).is_file():
        return
    from .notebook import render_html

    try:
        render_html(Path(record.executed_notebook), Path(record.html))
    except Exception as exc:  # noqa: BLE001 - a rendering problem must not keep the run from being logged
        reason = " ".join(str(exc).split())[:300]
        print(f"warning: {record.executed_notebook}: HTML rendering failed ({type(exc).__name__}: {reason}); "
              "not logged", file=sys.stderr, flush=True)


def apply_ids(record: RunRecord, ids: Mapping[str, str | None]) -> None:
    record.run_id = ids["run_id"]
    record.experiment_id = ids["experiment_id"]
    record.parent_run_id = ids["parent_run_id"]


def _run_exists(record: RunRecord) -> bool:
    if not record.run_id:
        return False
    preflight(record.tracking_uri)
    with _guard(record.tracking_uri, "looking up the run"):
        client = _client(record.tracking_uri)
        try:
            client.get_run(record.run_id)
        except Exception:  # noqa: BLE001 - RESOURCE_DOES_NOT_EXIST: created on a store that was reset
            return False
    return True


# --- the helper process ------------------------------------------------------------------------------------------

def warm(target: Target) -> None:
    """Import mlflow and open the store (SQLite: create/migrate once) before the run is needed."""
    try:
        preflight(target.uri)
        client = _client(target.uri)
        db = Path(target.uri[len("sqlite:///"):]) if target.uri.startswith("sqlite:///") else None
        if db is None or db.is_file():  # read only: bad input found meanwhile must leave nothing behind
            client.get_experiment_by_name(target.experiment)
    except Exception:  # noqa: BLE001 - start_run meets the same problem and reports it properly
        pass


def warm_finish(uri: str, run_id: str) -> None:
    """Load the artifact store code for the run (first use costs ~0.25 s) while the notebook runs."""
    with contextlib.suppress(Exception):
        from mlflow.entities import Metric, RunTag  # noqa: F401

        _client(uri).list_artifacts(run_id)


_WORK = {"warm": warm, "start": start_run, "warm_finish": warm_finish, "finish": finish_run}
_BOOT = "import sys; sys.path.insert(0, sys.argv[1]); from mlops_kit.tracking import serve; serve()"


def _send(stream: Any, obj: Any) -> None:
    data = pickle.dumps(obj)
    stream.write(struct.pack(">I", len(data)) + data)
    stream.flush()


def _receive(stream: Any) -> Any:
    head = stream.read(4)
    if len(head) < 4:
        raise EOFError
    (size,) = struct.unpack(">I", head)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError
    return pickle.loads(data)  # noqa: S301 - our own child process, over its private pipe


def serve() -> None:
    """The helper process: answer requests (pickled, length-prefixed, on stdin/stdout) in order, then exit.

    Its stdout is reserved for answers: anything a library prints goes to stderr. It imports mlflow before the
    first request arrives, and leaves with ``os._exit`` (tearing mlflow's modules down takes ~0.7 s).
    """
    import signal
    import traceback

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole console: the parent decides
    answer_fd = os.dup(1)
    _binary(answer_fd)
    _binary(0)
    answers = os.fdopen(answer_fd, "wb")
    try:
        os.dup2(2, 1)
    except OSError:  # no usable stderr (e.g. a windowless service): drop stray prints
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    for heavy in ("pandas", "numpy"):  # ~0.45 s of mlflow's import; tracking never needs them (mlflow-skinny
        sys.modules.setdefault(heavy, None)  # runs without them), so they are made unimportable here only
    with contextlib.suppress(Exception):
        import mlflow.tracking  # noqa: F401 - the slow part, done while the parent loads papermill
    while True:
        try:
            name, args = _receive(requests)
        except EOFError:
            break
        if name == "exit":
            break
        try:
            _send(answers, ("ok", _WORK[name](*args)))
        except TrackingError as exc:
            _send(answers, ("tracking", str(exc)))
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which decides
            traceback.print_exc(file=sys.stderr)  # the details for a bug report; the parent shows one line
            _send(answers, ("bug", f"{type(exc).__name__}: {hide_password(' '.join(str(exc).split())[:300])}"))
    answers.close()
    sys.stderr.flush()
    os._exit(0)


def _binary(fd: int) -> None:
    """Pickles must cross the pipe unchanged: no CRLF translation on Windows."""
    if _PLATFORM == "win32":
        import msvcrt

        msvcrt.setmode(fd, os.O_BINARY)  # type: ignore[attr-defined]


class Tracker:
    """MLflow work in one helper process (``python -c``, same on Windows), requests answered in order.

    Started first thing, it imports mlflow while the parent imports papermill and starts the kernel; ``warm``
    then opens the store, so the run exists about when the kernel is ready.
    """

    def __init__(self) -> None:
        import subprocess

        scripts = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ)
        env.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # an audited job does not phone home
        self._proc = subprocess.Popen([sys.executable, "-c", _BOOT, scripts], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, env=env)
        self._sent = 0
        self._received = 0
        self._replies: dict[int, tuple[str, Any]] = {}

    def call(self, name: str, *args: Any) -> "Reply":
        try:
            _send(self._proc.stdin, (name, args))
        except OSError:
            raise TrackingError("the MLflow helper process died (see the messages above)") from None
        self._sent += 1
        return Reply(self, self._sent)

    def _wait(self, number: int) -> Any:
        while number not in self._replies:
            try:
                self._replies[self._received + 1] = _receive(self._proc.stdout)
            except (EOFError, OSError):
                raise TrackingError("the MLflow helper process died (see the messages above)") from None
            self._received += 1
        kind, value = self._replies[number]
        if kind == "tracking":
            raise TrackingError(value)
        if kind == "bug":  # one line (the traceback went to stderr): the run keeps its manifest, see stage_run
            raise TrackingError(f"MLflow helper failed: {value} (traceback above on stderr)")
        return value

    def start(self, record: RunRecord) -> "Reply":
        return self.call("start", record)

    def warm_finish(self, record: RunRecord) -> None:
        """Queue the artifact-store warm-up once the run exists (its answer is read with the next one)."""
        self.call("warm_finish", record.tracking_uri, record.run_id)

    def finish(self, record: RunRecord) -> None:
        self.call("finish", record).result()

    def close(self) -> None:
        """Let the helper exit; one still busy (we gave up: bad input, Ctrl-C) is killed."""
        if self._received < self._sent:
            self._proc.kill()
        else:
            with contextlib.suppress(OSError):
                _send(self._proc.stdin, ("exit", ()))
        for stream in (self._proc.stdin, self._proc.stdout):
            with contextlib.suppress(OSError):
                stream.close()
        try:
            self._proc.wait(timeout=10)
        except Exception:  # noqa: BLE001 - never hang the run on the helper's exit
            self._proc.kill()


@dataclass
class Reply:
    """The answer to one request, read when needed."""

    tracker: Tracker
    number: int

    def result(self) -> Any:
        return self.tracker._wait(self.number)


def describe_user() -> str | None:
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name on some service accounts
        return None
