"""The MLflow calls of a stage run: open the store, create the run (and its pipeline's parent), log, end it.

Everything here runs in the tracking worker process (:mod:`mlops_kit.run.tracking_worker`), which imports mlflow while the main
process loads papermill and starts the kernel; nothing here imports mlflow at module level. Every failure talking
to the store becomes one :class:`TrackingError` line naming the URI (passwords masked). MLflow's HTTP retries are
cut to seconds (unless ``MLFLOW_HTTP_REQUEST_*`` are set): a dead server must cost seconds, not minutes.

Parent runs: every stage run of a pipeline instance (GoCD's jobs, on any number of agents, and a rehearsal's) carries
the instance's key (tag ``mlops_kit.pipeline_key``) and ends up nested under exactly one parent run, whatever the
timing, without a sleep. The store offers no lock and no unique insert for runs, so:

1. *Candidates.* A stage that finds no parent for its key creates one (role ``pipeline``). Several stages starting
   together may each create one. The **winner** is the active candidate with the smallest run id: every client
   computes the same one from the same read, whatever its clock.
2. *Repair* (:func:`_settle`), at the start of a stage run and again at its end: read the whole family (candidates
   and stage runs of the key, one query), point every stage run at the winner (``mlflow.parentRunId``, allowed on a
   finished run), delete the other candidates, set the parent's status to the family's verdict (any KILLED: KILLED,
   else any FAILED: FAILED, else any still RUNNING: RUNNING, else FINISHED; so never back to FINISHED once a stage
   failed); then **read again**, and stop only when a read shows the family settled (one candidate, every stage run
   under it, its status the verdict). A newly visible candidate simply restarts the repair.

Why it converges, with no sleep (relies on read-your-writes, which MLflow's SQL stores give: ``create_run`` commits
the run with its tags in one transaction, and a write returns once committed; one ``mlflow server``, or several on
one database, is fine; a read replica behind a cache would not be):

* The smallest candidate ever created is never deleted (deleting one takes a read showing a smaller active one), so
  once a candidate exists every read shows one, and candidates are only created by stages whose read came before
  the first creation: finitely many. After the last one, every read names the same winner.
* Every write a stage makes (its run, a candidate, a tag, a deletion, a status, its own end) is followed by a read of
  its own, and a stage returns only after a read showing the family settled. Take the last write to the family: the
  read its writer makes after it sees the final state; that writer wrote nothing more, so that read was settled, so
  the final state is: one parent, every stage run nested, the right status. A slow client only delays its own
  writes; each of them is still followed by its own read, so a late candidate or a stale tag is repaired by the
  stage that wrote it, if by no one else.
* Rounds are bounded (:data:`_MAX_ROUNDS`): a store breaking read-your-writes is one TrackingError, not a loop.

The parent id a stage's manifest records is the parent as that stage last saw it: a stage that finished before a
late candidate won keeps the old id there, while its ``mlflow.parentRunId`` tag (the truth, what the UI shows) was
repaired. ``--log-existing`` settles the family again before it uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

from ..core import console
from ..core.errors import BadInput, ToolkitError, TrackingError
from ..core.redact import redact, strip_credentials
from . import lineage, served_store
from .runrecord import (
    MAX_TAG_VALUE,
    PIPELINE_KEY_TAG,
    ROLE_TAG,
    RunRecord,
    Target,
    clip,
    load_manifest,
    save_manifest,
    sqlite_file,
)

BATCH = 100
_MAX_ROUNDS = 50  # repair rounds before a family that does not settle is an error (see the module docstring)
_PARENT_TAG = "mlflow.parentRunId"
_QUIET_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
# Files from 100 MiB go to the server's object store in 10 MiB parts through presigned URLs, when the server offers
# it (``mlflow server --serve-artifacts`` on S3, GCS or Azure: MLflow asks its /server-info), instead of one PUT the
# server must receive whole and copy on before it answers (MLflow's default threshold is 500 MiB). README: "Team
# server".
_LARGE_UPLOADS = {"MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": str(100 * 1024**2)}
# A runner talking to a database directly holds a connection only while it calls it: its calls come in two bursts
# (start, end) around a notebook that may run for hours, and a pool would keep a connection idle per running stage
# on the team's database meanwhile.
_NO_IDLE_CONNECTIONS = {"MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool"}
_DATABASE_SCHEMES = ("postgresql", "mysql", "mssql", "oracle")

_CLIENTS: dict[str, Any] = {}


@contextlib.contextmanager
def _guard(uri: str, what: str) -> Iterator[None]:
    """Any failure talking to the store becomes one TrackingError line naming the URI (a ToolkitError raised
    inside, e.g. BadInput for a run id the store does not have, already is its own line and keeps its exit code)."""
    try:
        yield
    except ToolkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - mlflow/requests/sqlalchemy raise many types
        reason = redact(" ".join(str(exc).split())[:300]) or type(exc).__name__
        raise TrackingError(f"MLflow tracking store {redact(uri)}: {what} failed: {reason}") from None


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
        raise TrackingError(f"MLflow tracking server {redact(uri)} is unreachable "
                            f"({exc.strerror or exc})") from None


def _client(uri: str) -> Any:
    if uri not in _CLIENTS:
        database = urlsplit(uri).scheme.partition("+")[0] in _DATABASE_SCHEMES
        for name, value in {**_QUIET_RETRIES, **_LARGE_UPLOADS, **(_NO_IDLE_CONNECTIONS if database else {})}.items():
            os.environ.setdefault(name, value)  # the user's own settings win
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stderr is for our lines
        if strip_credentials(uri) != uri:  # MLflow's "View run at <uri>" would print the password
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        import logging

        from mlflow.tracking import MlflowClient

        for noisy in ("mlflow", "alembic"):  # after the import: mlflow sets its own level when imported
            logging.getLogger(noisy).setLevel(logging.WARNING)
        with served_store.opening(uri):  # creating or upgrading a SQLite store's schema: one process at a time
            _CLIENTS[uri] = MlflowClient(tracking_uri=uri)
    return _CLIENTS[uri]


def _experiment_id(client: Any, target: Target) -> str:
    exp = client.get_experiment_by_name(target.experiment)
    if exp is None:
        try:
            return client.create_experiment(target.experiment, artifact_location=target.artifact_location,
                                            tags={"mlflow.experimentKind": "custom_model_development"})
        except Exception:  # noqa: BLE001 - another stage created it meanwhile
            exp = client.get_experiment_by_name(target.experiment)
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise TrackingError(f"MLflow tracking store {redact(target.uri)}: experiment {target.experiment!r} "
                            "is deleted (restore it in the MLflow UI or choose another with --experiment)")
    return exp.experiment_id


def _pause(point: str) -> None:
    """A seam for tests: called at the points where a slow client would pause (``searched``: a stage read the
    family before creating a candidate)."""


@dataclass(frozen=True)
class _Family:
    """One read of a pipeline instance: its active candidate parents (smallest run id first) and its stage runs."""

    parents: list[Any]
    stages: list[Any]

    @property
    def verdict(self) -> str:
        """The parent's status from its stages': a failure stands (KILLED before FAILED), else RUNNING while any
        stage runs, else FINISHED."""
        statuses = {run.info.status for run in self.stages}
        return next((s for s in ("KILLED", "FAILED", "RUNNING", "SCHEDULED") if s in statuses), "FINISHED")


def _read_family(client: Any, experiment_id: str, key: str) -> _Family:
    """Every active run of pipeline instance ``key``, in one query (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}'",
                                  max_results=1000, page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            break
    parents = sorted((r for r in runs if r.data.tags.get(ROLE_TAG) == "pipeline"), key=lambda r: r.info.run_id)
    return _Family(parents, [r for r in runs if r.data.tags.get(ROLE_TAG) != "pipeline"])


def _create_parent(client: Any, experiment_id: str, record: RunRecord) -> str:
    """A candidate parent for the record's pipeline instance (see the module docstring)."""
    tags = {PIPELINE_KEY_TAG: record.pipeline_key, ROLE_TAG: "pipeline",
            **{k: v for k, v in record.tags.items() if k.startswith("GO_PIPELINE")}}
    return client.create_run(experiment_id, run_name=record.pipeline_run_name or record.pipeline_key,
                             tags=tags).info.run_id


def _parent_guess(client: Any, experiment_id: str, record: RunRecord) -> str:
    """The parent a new stage run is created under: the winner of one read, or a new candidate."""
    assert record.pipeline_key is not None
    family = _read_family(client, experiment_id, record.pipeline_key)
    _pause("searched")
    return family.parents[0].info.run_id if family.parents else _create_parent(client, experiment_id, record)


def _settle(client: Any, experiment_id: str, record: RunRecord) -> str:
    """Repair the family until one read shows it settled; returns the parent's run id (see the module docstring)."""
    from mlflow.exceptions import MlflowException

    key = record.pipeline_key
    assert key is not None
    for _ in range(_MAX_ROUNDS):
        family = _read_family(client, experiment_id, key)
        if not family.parents:  # only if someone deleted them all (by hand): start again
            _create_parent(client, experiment_id, record)
            continue
        winner = family.parents[0]
        strays = [r for r in family.stages if r.data.tags.get(_PARENT_TAG) != winner.info.run_id]
        if not strays and len(family.parents) == 1 and winner.info.status == family.verdict:
            return winner.info.run_id
        try:
            for run in strays:
                client.set_tag(run.info.run_id, _PARENT_TAG, winner.info.run_id)
            for loser in family.parents[1:]:
                client.delete_run(loser.info.run_id)
            if winner.info.status != family.verdict:
                _set_status(client, winner.info.run_id, family.verdict)
        except MlflowException:  # a run another stage deleted meanwhile: the next read shows why
            continue
    raise TrackingError(f"MLflow tracking store {redact(record.tracking_uri)}: the parent run of {key!r} did not "
                        f"settle after {_MAX_ROUNDS} rounds (does the store return what was just written?)")


def _set_status(client: Any, run_id: str, status: str) -> None:
    if status in ("RUNNING", "SCHEDULED"):
        client.update_run(run_id, status=status)
    else:
        client.set_terminated(run_id, status=status)


def start_run(record: RunRecord, manifest: str | None = None) -> dict[str, Any]:
    """Create the run (and the pipeline's parent run) and log params and tags; returns the ids. With ``manifest``
    the run's manifest is written the moment the run exists, so a runner killed later never leaves it RUNNING
    without a trace (``--log-existing`` closes it)."""
    uri = record.tracking_uri
    preflight(uri)
    with _guard(uri, "opening the store"):
        client = _client(uri)
        experiment_id = _experiment_id(client, record.target)
    with _guard(uri, "creating the run"):
        key = record.pipeline_key
        tags = {k: v for k, v in record.tags.items() if k != "mlflow.runName"}  # run_name sets it
        if key:
            tags.update({PIPELINE_KEY_TAG: key, _PARENT_TAG: _parent_guess(client, experiment_id, record)})
            tags.setdefault(ROLE_TAG, "stage")
        run = client.create_run(experiment_id, start_time=record.start_time, tags=tags, run_name=record.run_name)
        ids = {"run_id": run.info.run_id, "experiment_id": experiment_id, "parent_run_id": tags.get(_PARENT_TAG)}
        if manifest is not None:  # first thing once the run exists
            apply_ids(record, ids)
            save_manifest(record, Path(manifest))
        ids["parent_run_id"] = _settle(client, experiment_id, record) if key else None
        _log_params(client, run.info.run_id, record.params)
        ids["lineage"] = _hash_inputs(record)  # while the kernel starts: the runner waits for the ids before cell 1
        if manifest is not None:
            apply_ids(record, ids)
            record.params_logged = True
            save_manifest(record, Path(manifest))
    return ids


def _hash_inputs(record: RunRecord) -> dict[str, Any]:
    """The record's inputs hashed (:mod:`mlops_kit.run.lineage`); a record without lineage (an older manifest) stays so."""
    if record.lineage:
        lineage.hash_inputs(record.lineage, warn=console.warn)
    return record.lineage


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
        _log_lineage(client, record)
        _log_metrics(client, record)
        if record.failure:
            from mlflow.entities import RunTag

            tags = [RunTag(f"mlops_kit.{k}", clip(str(v), MAX_TAG_VALUE)) for k, v in record.failure.items()]
            client.log_batch(record.run_id, tags=tags, synchronous=True)
        client.set_terminated(record.run_id, status=record.status, end_time=record.end_time)
        if record.pipeline_key:
            record.parent_run_id = _settle(client, record.experiment_id or _experiment_id(client, record.target),
                                           record)


def _log_files(client: Any, record: RunRecord) -> None:
    assert record.run_id is not None
    for local, folder in record.files:
        if Path(local).is_file():
            client.log_artifact(record.run_id, local, folder or None)
    for local, folder in record.folders:
        if Path(local).is_dir() and any(Path(local).iterdir()):
            client.log_artifacts(record.run_id, local, folder or None)


def _log_lineage(client: Any, record: RunRecord) -> None:
    """The lineage record completed (output hashes, producers) as ``lineage/lineage.json``, the inputs as MLflow
    dataset inputs, the outputs' digest as a tag (see :mod:`mlops_kit.run.lineage`)."""
    if not record.lineage:
        return
    assert record.run_id is not None
    _hash_inputs(record)  # a run whose start did not get to it (uploaded with --log-existing)
    output_dir = next((Path(local) for local, folder in record.folders if folder == "outputs"), None)
    if output_dir is None:
        return
    lineage.finish(record.lineage, output_dir, lineage.producer_index(_earlier_lineages(client, record)))
    client.log_text(record.run_id, json.dumps(record.lineage, indent=1, ensure_ascii=False), lineage.ARTIFACT)
    datasets = lineage.dataset_inputs(record.lineage)
    if datasets:
        _log_inputs(client, record.run_id, datasets)
    if record.lineage["outputs"].get("sha256"):
        client.set_tag(record.run_id, lineage.OUTPUTS_TAG, record.lineage["outputs"]["sha256"])


_INPUT_RETRIES = (0.2, 0.5)  # seconds before the 2nd and 3rd attempt


def _log_inputs(client: Any, run_id: str, datasets: list[Any]) -> None:
    """``log_inputs``, tried again when it fails: MLflow's store looks a dataset up, then inserts it, so runs that
    log the same input content into one experiment at the same moment (parallel agents, several pipeline
    instances) can collide on its unique key; on the next attempt the dataset exists and is only linked."""
    for pause in (*_INPUT_RETRIES, None):
        try:
            client.log_inputs(run_id, datasets=datasets)
            return
        except Exception:  # noqa: BLE001 - the last attempt's error is raised (and becomes exit 6)
            if pause is None:
                raise
            time.sleep(pause)


def _earlier_lineages(client: Any, record: RunRecord) -> list[tuple[str, int, dict[str, Any]]]:
    """(run id, start time, lineage record) of the runs that may have produced this run's inputs: the earlier
    stage runs of its pipeline instance, or of its parent run (a replay's); runs without a record are left out."""
    parent = record.tags.get(_PARENT_TAG)
    if record.pipeline_key:
        runs = _read_family(client, record.experiment_id or _experiment_id(client, record.target),
                            record.pipeline_key).stages
    elif parent:
        runs = list(client.search_runs([record.experiment_id], filter_string=f"tags.`{_PARENT_TAG}` = '{parent}'",
                                       max_results=1000))
    else:
        return []
    found = []
    for run in runs:
        if run.info.run_id == record.run_id or run.info.start_time > record.start_time:
            continue
        data = read_artifact_json(client, run.info.run_id, lineage.ARTIFACT)
        if isinstance(data, dict):
            found.append((run.info.run_id, run.info.start_time, data))
    return found


def read_artifact_json(client: Any, run_id: str, path: str) -> Any:
    """A run's JSON artifact, or ``None`` when it has none (a run recorded before it existed) or it is not JSON."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mlops_kit-artifact-") as tmp:
        try:
            local = client.download_artifacts(run_id, path, tmp)
            return json.loads(Path(local).read_text(encoding="utf-8"))
        except Exception:  # noqa: BLE001 - missing (MLflow raises several types), unreadable or not JSON
            return None


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
        raise BadInput(f"{path}: already logged to {redact(record.tracking_uri)} as run {record.run_id}")
    if record.status == "RUNNING":  # its runner vanished (the caller made sure): end the run, never leave it RUNNING
        record.status, record.end_time = "KILLED", int(path.stat().st_mtime * 1000)
        record.failure = {"failure_kind": "runner-vanished",
                          "error_value": "the runner stopped before ending the run (killed, or its machine went down)"}
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
                console.warn(f"{entry[0]}: listed in the manifest but not found (nor next to it); not logged")
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
    from .notebook import render_html_or_warn

    render_html_or_warn(Path(record.executed_notebook), Path(record.html))


def apply_ids(record: RunRecord, ids: Mapping[str, Any]) -> None:
    record.run_id = ids["run_id"]
    record.experiment_id = ids["experiment_id"]
    record.parent_run_id = ids["parent_run_id"]
    if ids.get("lineage"):  # the inputs' hashes, made in the worker (start_run)
        record.lineage = ids["lineage"]


def _run_exists(record: RunRecord) -> bool:
    if not record.run_id:
        return False
    preflight(record.tracking_uri)
    with _guard(record.tracking_uri, "looking up the run"):
        client = _client(record.tracking_uri)
        try:
            client.get_run(record.run_id)
        except Exception as exc:
            if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":  # a store that was reset: log anew
                return False
            raise  # anything else (a server error, a timeout) is not a "no": never create a duplicate run
    return True


# --- warm-ups: run in the worker while the main process loads papermill and runs the notebook --------------------


def warm(target: Target) -> None:
    """Import mlflow and open the store (SQLite: create/migrate once) before the run is needed."""
    try:
        preflight(target.uri)
        client = _client(target.uri)
        db = sqlite_file(target.uri)
        if db is None or db.is_file():  # read only: bad input found meanwhile must leave nothing behind
            client.get_experiment_by_name(target.experiment)
    except Exception:  # noqa: BLE001 - start_run meets the same problem and reports it properly
        pass


def warm_finish(uri: str, run_id: str) -> None:
    """Load the artifact store code for the run (first use costs ~0.25 s) while the notebook runs."""
    with contextlib.suppress(Exception):
        from mlflow.entities import Metric, RunTag  # noqa: F401

        _client(uri).list_artifacts(run_id)


# --- for the worker calls of other modules (mlops_kit.replay.recorded: a replay reads runs and writes its own) ----------


def open_client(uri: str) -> Any:
    """The shared MlflowClient of ``uri`` (quiet retries), after the seconds-long reachability check."""
    preflight(uri)
    return _client(uri)


def guard(uri: str, what: str) -> contextlib.AbstractContextManager[None]:
    """Any failure talking to the store becomes one TrackingError line naming the URI and ``what``."""
    return _guard(uri, what)


def experiment_id(client: Any, target: Target) -> str:
    """The target's experiment, created like run_notebook creates it (artifacts next to a local SQLite store)."""
    return _experiment_id(client, target)
