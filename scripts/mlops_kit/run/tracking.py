"""The MLflow calls of a stage run: create the run (and its pipeline's parent), log, end it.

Everything here runs in the tracking worker process (:mod:`mlops_kit.run.tracking_worker`), which imports mlflow
while the main process loads papermill and starts the kernel; nothing here imports mlflow at module level. The
store is opened through :mod:`mlops_kit.run.store` (one client per URI, retries cut to seconds, every failure one
:class:`TrackingError` line naming the URI, passwords masked).

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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..core import console
from ..core.errors import TrackingError
from ..core.redact import redact
from . import lineage, reuse, store
from .runrecord import MAX_TAG_VALUE, PIPELINE_KEY_TAG, ROLE_TAG, RunRecord, clip, save_manifest

BATCH = 100
_MAX_ROUNDS = 50  # repair rounds before a family that does not settle is an error (see the module docstring)
_PARENT_TAG = "mlflow.parentRunId"


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


@dataclass(frozen=True)
class Started:
    """A run just created: its ids and, hashed in the tracking worker while the kernel started, its inputs."""

    run_id: str
    experiment_id: str
    parent_run_id: str | None
    lineage: lineage.LineageRecord | None = None


def start_run(record: RunRecord, manifest: str | None = None) -> Started:
    """Create the run (and the pipeline's parent run), log params and tags, hash the inputs. With ``manifest`` the
    run's manifest is written the moment the run exists, so a runner killed later never leaves it RUNNING without
    a trace (``--log-existing`` closes it)."""
    uri = record.tracking_uri
    store.preflight(uri)
    with store.guard(uri, "opening the store"):
        client = store.client(uri)
        experiment_id = store.experiment_id(client, record.target)
    with store.guard(uri, "creating the run"):
        key = record.pipeline_key
        tags = {k: v for k, v in record.tags.items() if k != "mlflow.runName"}  # run_name sets it
        if key:
            tags.update({PIPELINE_KEY_TAG: key, _PARENT_TAG: _parent_guess(client, experiment_id, record)})
            tags.setdefault(ROLE_TAG, "stage")
        run = client.create_run(experiment_id, start_time=record.start_time, tags=tags, run_name=record.run_name)
        if manifest is not None:  # first thing once the run exists
            apply_ids(record, Started(run.info.run_id, experiment_id, tags.get(_PARENT_TAG)))
            save_manifest(record, Path(manifest))
        parent = _settle(client, experiment_id, record) if key else None
        _log_params(client, run.info.run_id, record.params)
        _hash_inputs(record)  # while the kernel starts: the runner waits for the run before cell 1
        started = Started(run.info.run_id, experiment_id, parent, record.lineage)
        if manifest is not None:
            apply_ids(record, started)
            record.params_logged = True
            save_manifest(record, Path(manifest))
    return started


def _hash_inputs(record: RunRecord) -> None:
    """The record's inputs hashed (:mod:`mlops_kit.run.lineage`); a record without lineage (an older manifest)
    stays so."""
    if record.lineage is not None:
        lineage.hash_inputs(record.lineage, warn=console.warn)


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
    store.preflight(uri)
    with store.guard(uri, "logging the run"):
        client = store.client(uri)
        assert record.run_id is not None
        _log_files(client, record)
        _log_lineage(client, record)
        _log_reuse_key(client, record)
        _log_metrics(client, record)
        if record.failure:
            from mlflow.entities import RunTag

            tags = [RunTag(f"mlops_kit.{k}", clip(str(v), MAX_TAG_VALUE)) for k, v in record.failure.items()]
            client.log_batch(record.run_id, tags=tags, synchronous=True)
        if not (record.ended_by_caller and record.status == "FINISHED"):  # a replay ends it after its verdict
            client.set_terminated(record.run_id, status=record.status, end_time=record.end_time)
        if record.pipeline_key:
            record.parent_run_id = _settle(client, record.experiment_id or store.experiment_id(client, record.target),
                                           record)


def _log_files(client: Any, record: RunRecord) -> None:
    assert record.run_id is not None
    for file in record.files:
        if Path(file.local).is_file():
            client.log_artifact(record.run_id, file.local, file.artifact_folder or None)
    for folder in record.folders:
        if Path(folder.local).is_dir() and any(Path(folder.local).iterdir()):
            client.log_artifacts(record.run_id, folder.local, folder.artifact_folder or None)


def _log_lineage(client: Any, record: RunRecord) -> None:
    """The lineage record completed (output hashes, producers) as ``lineage/lineage.json``, the inputs as MLflow
    dataset inputs, the outputs' digest as a tag (see :mod:`mlops_kit.run.lineage`)."""
    recorded_lineage = record.lineage
    if recorded_lineage is None:
        return
    assert record.run_id is not None
    _hash_inputs(record)  # a run whose start did not get to it (uploaded with --log-existing)
    output_dir = record.folder("outputs")
    if output_dir is None:
        return
    lineage.finish(recorded_lineage, output_dir, lineage.producer_index(_earlier_lineages(client, record)))
    text = json.dumps(recorded_lineage.to_json(), indent=1, ensure_ascii=False)
    client.log_text(record.run_id, text, lineage.ARTIFACT)
    datasets = lineage.dataset_inputs(recorded_lineage)
    if datasets:
        _log_inputs(client, record.run_id, datasets)
    if recorded_lineage.outputs is not None and recorded_lineage.outputs.hashed.sha256:
        client.set_tag(record.run_id, lineage.OUTPUTS_TAG, recorded_lineage.outputs.hashed.sha256)


def _log_reuse_key(client: Any, record: RunRecord) -> None:
    """The run's reuse key (:mod:`mlops_kit.run.reuse`) as ``lineage/reuse_key.json`` and the tag a later run
    searches for, logged before the run ends: a FINISHED run carries it. A key whose inputs could not be hashed
    is not logged (such a run is never reused)."""
    key = record.reuse_key
    if key is None or record.lineage is None or record.run_id is None:
        return
    if key.inputs is None and reuse.with_inputs(key, record.lineage) is not None:
        return
    client.log_text(record.run_id, json.dumps(key.to_json(), indent=1, ensure_ascii=False), reuse.ARTIFACT)
    client.set_tag(record.run_id, reuse.KEY_TAG, key.digest)


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


def _earlier_lineages(client: Any, record: RunRecord) -> list[tuple[str, int, lineage.LineageRecord]]:
    """(run id, start time, lineage record) of the runs that may have produced this run's inputs: the earlier
    stage runs of its pipeline instance, or of its parent run (a replay's); runs without a record are left out."""
    parent = record.tags.get(_PARENT_TAG)
    if record.pipeline_key:
        runs = _read_family(client, record.experiment_id or store.experiment_id(client, record.target),
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
        earlier = read_lineage(client, run.info.run_id)
        if earlier is not None:
            found.append((run.info.run_id, run.info.start_time, earlier))
    return found


def read_lineage(client: Any, run_id: str) -> lineage.LineageRecord | None:
    """A run's ``lineage/lineage.json``; None when it has none (a run recorded before lineage) or it is not a
    schema-1 record (a newer toolkit's, or damaged: such a run names no producer)."""
    data = read_artifact_json(client, run_id, lineage.ARTIFACT)
    try:
        return None if data is None else lineage.LineageRecord.from_json(data)
    except ValueError:
        return None


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


def apply_ids(record: RunRecord, started: Started) -> None:
    """What :func:`start_run` made (in the tracking worker) copied into the runner's record."""
    record.run_id = started.run_id
    record.experiment_id = started.experiment_id
    record.parent_run_id = started.parent_run_id
    if started.lineage is not None:  # the inputs' hashes, made in the worker
        record.lineage = started.lineage
        if record.reuse_key is not None and record.reuse_key.inputs is None:
            reuse.with_inputs(record.reuse_key, record.lineage)  # the key the run is tagged with at its end


# --- warm-ups: run in the worker while the main process loads papermill and runs the notebook --------------------


def warm_finish(uri: str, run_id: str) -> None:
    """Load the artifact store code for the run (first use costs ~0.25 s) while the notebook runs."""
    with contextlib.suppress(Exception):
        from mlflow.entities import Metric, RunTag  # noqa: F401

        store.client(uri).list_artifacts(run_id)
