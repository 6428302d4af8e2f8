"""A recorded run read back from the tracking store for a replay, and the replay's own runs written there.

Every function here runs in the tracking worker (:mod:`mlops_kit.run.tracking_worker`, started first thing by
replay_run.py, so importing mlflow overlaps the main process's start): module-level functions with plain arguments,
returning plain dataclasses. Artifacts are downloaded into a folder the caller names; nothing else is written locally.

What a replay needs of a stage run, and where it is in MLflow:

* ``environment/``: ``env.json`` (the interpreter's exact version, the installer), ``spec.yaml``, ``pip_freeze.txt``
  and, for a venv installed from a lock, ``spec.lock.txt`` (logged by run_notebook since locks exist);
* ``lineage/lineage.json`` (:mod:`mlops_kit.run.lineage`): the notebook as given (``source/``), the parameters copy
  (``params/<stem>.params.yaml``, secrets masked), the masked names, the kernel's folder, inputs, output hashes;
* its metrics (last values), params and tags.

A run recorded before lineage existed has no ``lineage.json``: :func:`read_run` then brings the executed notebook
(the root ``*.ipynb``, from which the source can be taken back) and the ``outputs/`` folder, hashed here, so the
replay can still compare outputs (see :mod:`mlops_kit.replay.replayer`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import BadInput
from ..core.redact import redact
from ..run import lineage, store, tracking
from ..run.lineage import LineageRecord, Outputs
from ..run.runrecord import MAX_TAG_VALUE, REPLAY_OF_TAG, ROLE_TAG, VERDICT_TAG
from ..run.store import Target
from .contents import Held

REPORT_JSON = "replay/report.json"
REPORT_TEXT = "replay/report.txt"
_PARENT_TAG = "mlflow.parentRunId"


@dataclass
class RecordedRun:
    """One run as the store holds it; local paths point into the download folder (``None``: not recorded)."""

    run_id: str
    run_name: str
    experiment_id: str
    experiment: str
    status: str
    start_time: int
    tags: dict[str, str]
    params: dict[str, str]
    metrics: dict[str, float]
    folder: str
    environment: str | None = None  # the downloaded environment/ folder
    lineage: LineageRecord | None = None
    source: str | None = None  # the notebook as given
    params_file: str | None = None  # the parameters copy (masked)
    executed: str | None = None  # the executed notebook (runs recorded before lineage only)
    outputs: Outputs | None = None  # lineage's output record (hashed here for old runs)

    @property
    def role(self) -> str:
        return self.tags.get(ROLE_TAG, "stage")

    @property
    def stage(self) -> str:
        return self.tags.get("mlops_kit.stage") or self.params.get("stage") or self.run_name


def _get_run(client: Any, uri: str, run_id: str) -> Any:
    try:
        return client.get_run(run_id)
    except Exception as exc:  # noqa: BLE001 - MlflowException (not found / bad id) or a transport error
        code = getattr(exc, "error_code", None)
        if code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise BadInput(f"run {run_id!r}: no such run in {redact(uri)} (check the id and --tracking-uri)") \
                from None
        raise


def read_run(uri: str, run_id: str, dest: str) -> RecordedRun:
    """The run and what a replay needs of it (see the module docstring), downloaded under ``dest/<run id>``."""
    with store.guard(uri, f"reading run {run_id}"):
        client = store.open_client(uri)
        run = _get_run(client, uri, run_id)
        experiment = client.get_experiment(run.info.experiment_id)
        folder = Path(dest) / run_id
        folder.mkdir(parents=True, exist_ok=True)
        found = RecordedRun(
            run_id=run.info.run_id, run_name=run.info.run_name or "", experiment_id=run.info.experiment_id,
            experiment=experiment.name, status=run.info.status, start_time=run.info.start_time or 0,
            tags=dict(run.data.tags), params=dict(run.data.params), metrics=dict(run.data.metrics),
            folder=str(folder))
        if found.role == "pipeline":
            return found
        found.environment = _download(client, run_id, "environment", folder)
        found.lineage = _read_lineage(client, run_id)
        if found.lineage is not None:
            found.source = _download(client, run_id, found.lineage.source_notebook, folder)
            found.params_file = _download(client, run_id, found.lineage.parameters, folder)
            found.outputs = found.lineage.outputs
        else:
            _read_older(client, found, folder)
    return found


def missing_artifacts_message(run: RecordedRun, missing: list[str]) -> str:
    """Why a run cannot be replayed: artifacts deleted from a run that recorded them (its lineage tag says it did),
    or never recorded by the toolkit version that made it."""
    deleted = run.lineage is not None or lineage.OUTPUTS_TAG in run.tags  # lineage.json was logged with the run
    if run.lineage is None and deleted:
        missing = [lineage.ARTIFACT, *missing]
    names = f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'}"
    if deleted:
        return (f"run {run.run_id} ({run.stage}) cannot be replayed: its artifacts {names} missing (the run "
                "recorded them; deleted from the artifact store?)")
    return f"run {run.run_id} ({run.stage}) cannot be replayed: {names} not recorded (the run predates lineage records)"


def _read_lineage(client: Any, run_id: str) -> lineage.LineageRecord | None:
    """The run's lineage record (None: recorded before lineage existed); one it cannot read is bad input."""
    data = tracking.read_artifact_json(client, run_id, lineage.ARTIFACT)
    if data is None:
        return None
    try:
        return lineage.LineageRecord.from_json(data)
    except ValueError as exc:
        raise BadInput(f"run {run_id}: its {lineage.ARTIFACT} is not a lineage record this replay can read "
                       f"({exc})") from None


def _read_older(client: Any, found: RecordedRun, folder: Path) -> None:
    """A run recorded before lineage: its executed notebook, parameters copy and outputs (hashed here)."""
    top = [a.path for a in client.list_artifacts(found.run_id) if not a.is_dir]
    executed = next((p for p in top if p.endswith(".ipynb")), None)
    if executed is None:
        return
    found.executed = _download(client, found.run_id, executed, folder)
    stem = executed[: -len(".ipynb")]
    found.params_file = _download(client, found.run_id, f"params/{stem}.params.yaml", folder)
    outputs = _download(client, found.run_id, "outputs", folder)
    found.outputs = lineage.hash_outputs(Path(outputs)) if outputs else lineage.hash_outputs(folder / "no-outputs")


def _download(client: Any, run_id: str, path: str | None, folder: Path) -> str | None:
    """``path`` of the run's artifacts downloaded under ``folder``; ``None`` when the run has none there."""
    if not path:
        return None
    try:
        return client.download_artifacts(run_id, path, str(folder))
    except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        return None


def download(uri: str, run_id: str, path: str, dest: str) -> str:
    """An artifact (file or folder) of a run, downloaded under ``dest``; :class:`BadInput` when it is missing."""
    with store.guard(uri, f"downloading {path} of run {run_id}"):
        found = _download(store.open_client(uri), run_id, path, Path(dest))
    if found is None:
        raise BadInput(f"run {run_id}: has no artifact {path!r} (deleted from the artifact store?)")
    return found


def stage_runs(uri: str, parent_run_id: str) -> list[str]:
    """The stage runs nested under a pipeline run, in the order they started (the latest run of a re-run stage)."""
    with store.guard(uri, f"listing the stages of run {parent_run_id}"):
        client = store.open_client(uri)
        parent = _get_run(client, uri, parent_run_id)
        runs = client.search_runs([parent.info.experiment_id], f"tags.`{_PARENT_TAG}` = '{parent_run_id}'",
                                  max_results=1000, order_by=["attributes.start_time ASC"])
    latest: dict[str, Any] = {}
    for run in runs:
        if run.data.tags.get(ROLE_TAG, "stage") != "stage":
            continue
        name = run.data.tags.get("mlops_kit.stage") or run.info.run_name
        latest.pop(name, None)  # re-inserted: the order of the latest run
        latest[name] = run
    return [run.info.run_id for run in latest.values()]


def contents(uri: str, run_id: str, dest: str) -> Held:
    """Everything the run holds, for :mod:`mlops_kit.replay.contents`: params, tags, every metric's history and
    every artifact, downloaded into ``dest`` (an artifact the store lists but cannot give is named, not fatal)."""
    with store.guard(uri, f"reading everything run {run_id} holds"):
        client = store.open_client(uri)
        run = _get_run(client, uri, run_id)
        histories = {key: [(m.step, float(m.value)) for m in sorted(client.get_metric_history(run_id, key),
                                                                     key=lambda m: (m.step, m.timestamp))]
                     for key in run.data.metrics}
        Path(dest).mkdir(parents=True, exist_ok=True)
        unreadable: list[str] = []
        try:
            client.download_artifacts(run_id, "", dest)
        except Exception:  # noqa: BLE001 - one file it cannot give: take the others one by one, name that one
            _download_each(client, run_id, None, Path(dest), unreadable)
        models = _logged_models(client, run)
    return Held(dict(run.data.params), dict(run.data.tags), histories, dest, unreadable, models)


def _logged_models(client: Any, run: Any) -> dict[str, str]:
    """MLflow 3's logged models made by the run (name -> model id); none with an older MLflow or store."""
    try:
        found = client.search_logged_models(experiment_ids=[run.info.experiment_id],
                                            filter_string=f"source_run_id = '{run.info.run_id}'")
    except Exception:  # noqa: BLE001 - AttributeError (MLflow 2) or a store without logged models
        return {}
    return {model.name: model.model_id for model in found}


def _download_each(client: Any, run_id: str, path: str | None, dest: Path, unreadable: list[str]) -> None:
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            _download_each(client, run_id, item.path, dest, unreadable)
        elif _download(client, run_id, item.path, dest) is None:
            unreadable.append(item.path)


def metrics(uri: str, run_id: str) -> dict[str, float]:
    """A run's metrics (last values)."""
    with store.guard(uri, f"reading the metrics of run {run_id}"):
        return dict(_get_run(store.open_client(uri), uri, run_id).data.metrics)


def start_parent(target: Target, replay_of: str, name: str) -> str:
    """The run a pipeline's stage replays are nested under."""
    with store.guard(target.uri, "creating the replay's parent run"):
        client = store.open_client(target.uri)
        tags = {ROLE_TAG: "replay", REPLAY_OF_TAG: replay_of}
        return client.create_run(store.experiment_id(client, target), run_name=name, tags=tags).info.run_id


def log_report(uri: str, run_id: str, verdict: str, report: dict[str, Any], text: str,
               end_status: str | None = None) -> None:
    """The comparison as ``replay/report.json`` and ``replay/report.txt`` and the verdict tag; ``end_status`` ends
    the run (a replay's parent run)."""
    with store.guard(uri, f"logging the replay report to run {run_id}"):
        client = store.open_client(uri)
        client.log_text(run_id, json.dumps(_plain(report), indent=1, ensure_ascii=False), REPORT_JSON)
        client.log_text(run_id, text, REPORT_TEXT)
        client.set_tag(run_id, VERDICT_TAG, verdict)
        if end_status:
            client.set_terminated(run_id, status=end_status)


def end_without_verdict(uri: str, run_id: str, status: str, why: str) -> None:
    """A replay run whose verdict was not reached: ended ``status`` (FAILED or KILLED), saying why."""
    with store.guard(uri, f"ending the replay run {run_id}"):
        client = store.open_client(uri)
        client.set_tag(run_id, "mlops_kit.failure_kind", "replay-interrupted")
        client.set_tag(run_id, "mlops_kit.error_value", why[:MAX_TAG_VALUE])
        client.set_terminated(run_id, status=status)


def _plain(value: Any) -> Any:
    """JSON without NaN/Infinity (not JSON): non-finite numbers as text."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value
