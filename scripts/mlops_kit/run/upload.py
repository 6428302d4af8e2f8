"""Uploading a run later, from its manifest: the store was down during the run, or its runner vanished.

``run_notebook.py --log-existing <name>.mlops_run.json`` (:func:`log_existing`) uploads what the manifest lists,
optionally to another store or experiment (the manifest keeps no credentials: ``--tracking-uri`` may bring them
back). A run that was created before the store went away is completed, never created twice; one that never got
created is created now. Files are looked for where the run wrote them, else next to the manifest (GoCD artifacts
downloaded elsewhere keep names, not folders); a missing HTML copy is rendered again.

A manifest still saying RUNNING whose output is no longer locked belongs to a runner that vanished (``kill -9``, a
power cut, a Windows agent killing the job): its run is ended KILLED (tag ``failure_kind=runner-vanished``), by
``--log-existing`` or by the next run of the same output (:func:`close_vanished_run`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..core import console, paths
from ..core.errors import BadInput, TrackingError
from ..core.redact import redact, strip_credentials
from . import outputs, store, tracking, tracking_worker
from .runrecord import MANIFEST_SUFFIX, RunFile, RunRecord, RunResult, load_manifest, save_manifest


@dataclass(frozen=True)
class UploadRequest:
    """``run_notebook.py --log-existing MANIFEST``: upload a run executed earlier (relative paths: current folder)."""

    manifest: Path
    tracking_uri: str | None = None  # another store, or the same one with its credentials
    experiment: str | None = None


def log_existing(request: UploadRequest) -> RunResult:
    """Upload a run executed earlier (store down at the time), optionally to another store or experiment; a run
    whose runner vanished (manifest still RUNNING, its output no longer locked) is closed as KILLED."""
    manifest = request.manifest
    record = load_manifest(manifest)
    if record.status == "RUNNING" and record.executed_notebook and \
            outputs.runner_alive(outputs.run_files(Path(record.executed_notebook), None, record.run_name)):
        raise BadInput(f"{manifest}: its run is still going (run_notebook.py holds the lock of "
                       f"{record.executed_notebook}); wait for it to end")
    uri = None  # the manifest keeps no credentials: --tracking-uri may bring them back
    if (request.tracking_uri or request.experiment) and not record.logged:  # upload_manifest refuses a logged one
        target = store.resolve_target(request.tracking_uri or record.tracking_uri,
                                      request.experiment or record.experiment)
        same_store = strip_credentials(target.uri) == strip_credentials(record.tracking_uri)
        if not same_store or target.experiment != record.experiment:  # (credentials may come with --tracking-uri)
            record.run_id, record.params_logged = None, False
        record.tracking_uri, record.experiment, record.artifact_location = target.uri, target.experiment, \
            target.artifact_location
        uri = target.uri
        save_manifest(record, manifest)
    result = RunResult.of(upload_manifest(manifest, uri=uri), manifest)
    print(result.summary())
    return result


def close_vanished_run(files: outputs.RunFiles, tracker: tracking_worker.Tracker) -> None:
    """A manifest still RUNNING for this output belongs to a runner that vanished (the caller holds the output's
    lock now): close that run as KILLED, with what it left, before the new run overwrites its files."""
    try:
        old = load_manifest(files.manifest) if files.manifest.is_file() else None
    except BadInput:
        return  # not a manifest we can read: overwritten like any earlier output
    if old is None or old.status != "RUNNING" or old.logged:
        return
    try:
        closed = tracker.call(upload_manifest, files.manifest)
        console.warn(f"closed the earlier run {closed.run_id} of {files.output} as KILLED: its runner vanished")
    except TrackingError as exc:
        kept = files.manifest.with_name(f"{files.output.stem}.vanished-{old.run_id}{MANIFEST_SUFFIX}")
        os.replace(files.manifest, kept)
        console.warn(f"an earlier run of {files.output} was left RUNNING by a runner that vanished and could not be "
                     f"closed ({exc}); its manifest is kept as {kept}: close it with --log-existing")


def upload_manifest(path: Path, *, uri: str | None = None) -> RunRecord:
    """Upload a run from its manifest and mark the manifest logged; ``uri`` (the same store with credentials, or
    another one) replaces the manifest's. Runs wherever mlflow may be imported (the tracking worker, or the
    process of ``--log-existing``)."""
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
        tracking.apply_ids(record, tracking.start_run(record))
        record.params_logged = True
    _render_missing_html(record)
    tracking.finish_run(record)
    record.logged = True
    save_manifest(record, path)
    return record


def _relocate_files(record: RunRecord, near: Path) -> None:
    """Files the manifest lists that are not where the run wrote them are looked for next to the manifest; each one
    found nowhere is a warning. A missing HTML is rendered again next to the notebook (:func:`_render_missing_html`)."""
    moved: dict[str, str] = {}

    def relocated(entries: list[RunFile], wanted: Callable[[Path], bool]) -> list[RunFile]:
        kept = []
        for entry in entries:
            found = _find_near(entry.local, near, wanted)
            if found is None and entry.local != record.html:
                console.warn(f"{entry.local}: listed in the manifest but not found (nor next to it); not logged")
            elif found is not None and found != entry.local:
                moved[entry.local] = found
                entry = RunFile(found, entry.artifact_folder)
            kept.append(entry)
        return kept

    record.files, record.folders = relocated(record.files, Path.is_file), relocated(record.folders, Path.is_dir)
    record.executed_notebook = moved.get(record.executed_notebook or "", record.executed_notebook)
    if record.html in moved:
        record.html = moved[record.html]
    elif record.html and not Path(record.html).exists() and record.executed_notebook:
        html = str(Path(record.executed_notebook).with_suffix(".html"))
        record.files = [RunFile(html, f.artifact_folder) if f.local == record.html else f for f in record.files]
        record.html = html


def _find_near(local: str, near: Path, wanted: Callable[[Path], bool]) -> str | None:
    if wanted(Path(local)):
        return local
    candidate = near / paths.base_name(local)
    return str(candidate) if wanted(candidate) else None


def _render_missing_html(record: RunRecord) -> None:
    """The HTML copy when the run did not get to write it; a notebook nbconvert cannot render only warns."""
    if not (record.executed_notebook and record.html) or Path(record.html).exists() \
            or not Path(record.executed_notebook).is_file():
        return
    from . import html

    html.render_or_warn(Path(record.executed_notebook), Path(record.html))


def _run_exists(record: RunRecord) -> bool:
    """Does the store still have the run the manifest names? Only a clear "no such run" is a no: a server error or
    a timeout is a TrackingError, never a reason to create a duplicate run."""
    if not record.run_id:
        return False
    with store.guard(record.tracking_uri, "looking up the run"):
        client = store.open_client(record.tracking_uri)
        try:
            client.get_run(record.run_id)
        except Exception as exc:
            if getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST":  # a store that was reset: log anew
                return False
            raise
    return True
