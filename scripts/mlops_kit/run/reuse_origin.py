"""The run a reused stage run copies (its *origin*): found by its reuse key, checked, its results fetched.

Runs in the tracking worker (it imports mlflow). A hit is the latest run of the experiment that

* carries the tag ``mlops_kit.reuse_key`` equal to the key (one tag search: a 10,000-run experiment is not listed),
* is FINISHED (not failed, killed or still running), a stage run that executed (not itself a reuse, not a replay),
* was never replayed with a verdict other than ``reproduced`` (a replay that found it not reproducible, or whose
  notebook failed, proves the key does not pin its result),
* still has all its artifacts: its lineage record, its executed notebook and HTML, and every output file with the
  sha256 its lineage recorded (downloaded into a staging folder and checked there; a mismatch is not a hit).

Otherwise :func:`find` says why in one phrase: the candidate it refused and the reason, or what differs from the
latest FINISHED run of the same stage (:func:`mlops_kit.run.reuse.differences`).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core import paths
from . import lineage, reuse, store, tracking
from .runrecord import REPLAY_OF_TAG, ROLE_TAG, VERDICT_TAG
from .store import Target

_NO_VERDICT = {"interrupted"}  # a replay that did not reach a verdict refutes nothing
COPIED_TAG_PREFIXES = ("mlops_kit.model.",)  # what a notebook registered (a model version): the reuse points at it
_CANDIDATES = 20


@dataclass(frozen=True)
class Origin:
    """The run to reuse and its results, downloaded and checked (local paths in the staging folder)."""

    run_id: str
    start_time: int
    metrics: dict[str, float]
    tags: dict[str, str]  # the origin's tags a reuse copies (COPIED_TAG_PREFIXES)
    executed: str
    html: str | None
    outputs: list[lineage.FileEntry] = field(default_factory=list)  # under ``<staging>/outputs``

    @property
    def date(self) -> str:
        return when(self.start_time)


@dataclass(frozen=True)
class Lookup:
    """What the search found: an origin, or why there is none (one phrase)."""

    origin: Origin | None
    why_not: str = ""


def when(start_time: int) -> str:
    """A run's start as the console shows it (UTC, to the minute)."""
    return datetime.datetime.fromtimestamp(start_time / 1000, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def find(uri: str, target: Target, key: reuse.ReuseKey, stage: str, staging: str) -> Lookup:
    """The origin for ``key`` with its results in ``staging``, or why there is none."""
    with store.guard(uri, "looking for a run to reuse"):
        client = store.client(uri)
        experiment = client.get_experiment_by_name(target.experiment)
        if experiment is None:
            return Lookup(None, f"experiment {target.experiment!r} has no runs yet")
        refused = []
        for run in _search(client, experiment.experiment_id,
                           f"tags.`{reuse.KEY_TAG}` = '{key.digest}' and attributes.status = 'FINISHED'"):
            if not _executed_stage_run(run):
                continue
            why = _refuted(client, experiment.experiment_id, run.info.run_id) or \
                _fetch(client, run, Path(staging))
            if isinstance(why, Origin):
                return Lookup(why)
            refused.append(f"run {run.info.run_id} ({when(run.info.start_time)}) had this key but {why}")
        if refused:
            return Lookup(None, refused[0])
        return Lookup(None, _explain(client, experiment.experiment_id, key, stage, target.experiment))


def _search(client: Any, experiment_id: str, filter_string: str) -> list[Any]:
    return list(client.search_runs([experiment_id], filter_string=filter_string, max_results=_CANDIDATES,
                                   order_by=["attributes.start_time DESC"]))


def _executed_stage_run(run: Any) -> bool:
    tags = run.data.tags
    return tags.get(ROLE_TAG, "stage") == "stage" and not tags.get(reuse.FROM_TAG) and not tags.get(REPLAY_OF_TAG)


def _refuted(client: Any, experiment_id: str, run_id: str) -> str | None:
    """Why a replay disproved the run (its verdict), or None."""
    for replay in _search(client, experiment_id, f"tags.`{REPLAY_OF_TAG}` = '{run_id}'"):
        verdict = replay.data.tags.get(VERDICT_TAG)
        if verdict and verdict != "reproduced" and verdict not in _NO_VERDICT:
            return f"its replay {replay.info.run_id} ended {verdict!r}"
    return None


def _fetch(client: Any, run: Any, staging: Path) -> Origin | str:
    """The run's results downloaded into ``staging`` and checked against its lineage record, or why not."""
    run_id = run.info.run_id
    record = tracking.read_lineage(client, run_id)
    if record is None or record.outputs is None or record.outputs.hashed.sha256 is None:
        return f"its lineage record ({lineage.ARTIFACT}) is missing or has no output hashes"
    names = {item.path for item in client.list_artifacts(run_id)}
    executed = sorted(n for n in names if n.endswith(".ipynb") and "/" not in n)
    if len(executed) != 1:
        return "its executed notebook is missing from its artifacts"
    html = executed[0][:-len(".ipynb")] + ".html"
    local_nb = client.download_artifacts(run_id, executed[0], str(staging))
    local_html = client.download_artifacts(run_id, html, str(staging)) if html in names else None
    expected = record.outputs.hashed.files
    why = _check_outputs(client, run_id, expected, staging) if expected else None
    if why:
        return why
    return Origin(run_id, run.info.start_time, dict(run.data.metrics),
                  {k: v for k, v in run.data.tags.items() if k.startswith(COPIED_TAG_PREFIXES)},
                  local_nb, local_html, list(expected))


def _check_outputs(client: Any, run_id: str, expected: list[lineage.FileEntry], staging: Path) -> str | None:
    """Download ``outputs/`` and compare it file by file with the recorded sha256 (extra files count too)."""
    try:
        folder = Path(client.download_artifacts(run_id, "outputs", str(staging)))
    except Exception:  # noqa: BLE001 - MLflow raises several types for a missing artifact
        return "its outputs/ artifacts are missing"
    found = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
    for entry in expected:
        if entry.path not in found:
            return f"its artifact outputs/{entry.path} is missing"
        if paths.file_sha256(folder / entry.path)[0] != entry.sha256:
            return f"its artifact outputs/{entry.path} does not match the sha256 its run recorded"
    extra = sorted(found - {e.path for e in expected})
    return f"its artifacts hold outputs/{extra[0]}, which its run did not record" if extra else None


def _explain(client: Any, experiment_id: str, key: reuse.ReuseKey, stage: str, experiment: str) -> str:
    """What differs from the latest FINISHED run of the stage (the one a data scientist expected to reuse)."""
    if "'" in stage or "\\" in stage:  # --stage is free text; MLflow's filter has no escape for a quote
        return f"no earlier run of stage {stage!r} compared (a quote in its name)"
    for run in _search(client, experiment_id,
                       f"tags.`mlops_kit.stage` = '{stage}' and attributes.status = 'FINISHED'"):
        if not run.data.tags.get(reuse.KEY_TAG) or run.data.tags.get(REPLAY_OF_TAG):
            continue
        data = tracking.read_artifact_json(client, run.info.run_id, reuse.ARTIFACT)
        try:
            old = reuse.ReuseKey.from_json(data) if data is not None else None
        except ValueError:
            old = None
        return f"{reuse.explain_miss(old, key)} (since run {run.info.run_id}, {when(run.info.start_time)})"
    return f"no earlier FINISHED run of stage {stage!r} in experiment {experiment!r}"
