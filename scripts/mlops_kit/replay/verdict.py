"""The replay's verdict: recorded and replayed results compared, as a table for a person and JSON for the record.

Rules (one place, so the table, the JSON, the tags and the exit code always agree):

* a metric matches when both runs have it and ``|replayed - recorded| <= rtol * |recorded|`` (``--rtol``, default
  0: exact), NaN matching NaN; a metric only one run has is a difference;
* an output file matches when its sha256 is the recorded one; a file only one run wrote is a difference;
* everything else the run holds (:mod:`mlops_kit.replay.contents`) matches too: every param, tag and artifact (by
  sha256, or a registered comparer) and every step of every metric's history, the notebook's own included, except
  what that module's rule skips (listed in the report with the reason);
* the environment matches when the replay venv's freeze equals the recorded freeze, package for package, and the
  interpreter's version is the recorded one;
* an input matches when every file of it has its recorded sha256 (a stage whose inputs differ is not run).

A stage is ``reproduced`` when all of these match; ``not reproduced`` otherwise (exit 8); ``notebook failed`` when
the replayed notebook failed (exit 5); ``not run`` when its inputs could not be given (exit 8). A pipeline is
reproduced when every stage is; otherwise the report names the first stage that is not: where it diverges.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Literal, Mapping

from ..envs import installers
from ..run.lineage import FileEntry
from .contents import Row, Skipped, short

Verdict = Literal["reproduced", "not reproduced", "notebook failed", "not run"]
REPRODUCED: Verdict = "reproduced"
NOT_REPRODUCED: Verdict = "not reproduced"
FAILED: Verdict = "notebook failed"
NOT_RUN: Verdict = "not run"


@dataclass
class MetricRow:
    name: str
    recorded: float | None
    replayed: float | None
    same: bool

    @property
    def difference(self) -> float | None:
        if self.recorded is None or self.replayed is None:
            return None
        if math.isnan(self.recorded) and math.isnan(self.replayed):
            return 0.0
        if self.recorded == self.replayed:
            return 0.0  # (inf - inf would be NaN)
        return self.replayed - self.recorded


@dataclass
class FileRow:
    path: str
    recorded: str | None  # sha256
    replayed: str | None
    unit: str = ""  # the artifact folder a comparer judged as one unit (an MLflow model): its verdict is this row's
    unit_same: bool = False
    unit_how: str = ""  # what the unit's comparer found (shown when this file's own sha256 differs)

    @property
    def status(self) -> str:
        if self.unit and self.recorded is not None and self.replayed is not None:
            sha = "same sha256" if self.recorded == self.replayed else f"sha256 differs; {self.unit_how}"
            return f"{'same' if self.unit_same else 'DIFFERENT'} as part of {self.unit} ({sha})"
        if self.recorded is None:
            return "new (not in the record)"
        if self.replayed is None:
            return "missing (not written by the replay)"
        return "same sha256" if self.recorded == self.replayed else "DIFFERENT sha256"

    @property
    def same(self) -> bool:
        if self.unit:
            return self.unit_same and self.recorded is not None and self.replayed is not None
        return self.recorded is not None and self.recorded == self.replayed


def judge_outputs_by_units(outputs: Iterable[FileRow], held: Iterable[Row]) -> None:
    """An output file inside a folder a comparer judged as a unit (an MLflow model: its serialized model is not
    byte-stable, its predictions are compared) takes that unit's verdict rather than its own sha256's."""
    units = {row.name.removeprefix("outputs/"): row for row in held
             if row.kind == "artifact" and row.unit and row.name.startswith("outputs/")}
    for file in outputs:
        unit = next((name for name in units if file.path.startswith(name + "/")), None)
        if unit is not None:
            file.unit, file.unit_same, file.unit_how = f"outputs/{unit}", units[unit].same, units[unit].how


@dataclass
class InputRow:
    param: str
    path: str
    ok: bool
    status: str  # what was checked, or what is wrong (names the file)
    source: str = ""  # where the replay took it from


@dataclass
class EnvRow:
    python_recorded: str
    python_replayed: str
    packages: int
    differences: list[str]
    built_from: str  # "the recorded lock" / "the recorded freeze"

    @property
    def same(self) -> bool:
        return not self.differences and self.python_recorded == self.python_replayed


@dataclass
class StageReport:
    """One stage run's replay."""

    run_id: str
    stage: str
    verdict: Verdict | Literal[""] = ""  # set by decide(), or FAILED / NOT_RUN by the replay
    replay_run_id: str | None = None
    inputs: list[InputRow] = field(default_factory=list)
    metrics: list[MetricRow] = field(default_factory=list)
    outputs: list[FileRow] = field(default_factory=list)
    environment: EnvRow | None = None
    notes: list[str] = field(default_factory=list)
    held: list[Row] = field(default_factory=list)  # params, tags, metric histories, artifacts (contents)
    skipped: list[Skipped] = field(default_factory=list)  # what was not compared, and why

    def differences(self) -> list[str]:
        """What is not as recorded, one short phrase each (the error line lists them)."""
        out = [f"input {row.param} {row.status}" for row in self.inputs if not row.ok]
        out += [f"metric {row.name} (recorded {_num(row.recorded)}, replayed {_num(row.replayed)})"
                for row in self.metrics if not row.same]
        out += [f"output {row.path} ({row.status})" for row in self.outputs if not row.same]
        out += [f"{row.kind} {row.name} (recorded {short(row.recorded, 24)}, replayed {short(row.replayed, 24)})"
                for row in self.held if not row.same]
        if self.environment is not None and not self.environment.same:
            out.append("environment (" + "; ".join(self.environment.differences[:3] or ["Python version"]) + ")")
        return out

    def decide(self) -> None:
        """The verdict from the rows (a failed or not-run stage keeps its verdict)."""
        if self.verdict in (FAILED, NOT_RUN):
            return
        self.verdict = NOT_REPRODUCED if self.differences() else REPRODUCED


@dataclass
class Report:
    """The whole replay: one stage, or a pipeline's stages in order."""

    run_id: str
    kind: Literal["stage", "pipeline"]
    name: str
    rtol: float
    stages: list[StageReport] = field(default_factory=list)
    replay_run_id: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def verdict(self) -> Verdict:
        verdicts = [s.verdict for s in self.stages]
        if not verdicts:
            return NOT_RUN
        if FAILED in verdicts:
            return FAILED
        return REPRODUCED if all(v == REPRODUCED for v in verdicts) else NOT_REPRODUCED

    @property
    def first_divergence(self) -> StageReport | None:
        return next((s for s in self.stages if s.verdict != REPRODUCED), None)

    def as_dict(self) -> dict[str, Any]:
        first = self.first_divergence
        return {**dataclasses.asdict(self), "verdict": self.verdict,
                "first_divergence": None if first is None else {"stage": first.stage, "run_id": first.run_id,
                                                                "differences": first.differences()}}


# ---------------------------------------------------------------------------------------------------- compare


def same_number(recorded: float, replayed: float, rtol: float) -> bool:
    if math.isnan(recorded) or math.isnan(replayed):
        return math.isnan(recorded) and math.isnan(replayed)
    return recorded == replayed or math.isclose(recorded, replayed, rel_tol=rtol, abs_tol=0.0)


def compare_metrics(recorded: Mapping[str, float], replayed: Mapping[str, float], rtol: float) -> list[MetricRow]:
    rows = []
    for name in sorted(set(recorded) | set(replayed)):
        a, b = recorded.get(name), replayed.get(name)
        rows.append(MetricRow(name, a, b, a is not None and b is not None and same_number(a, b, rtol)))
    return rows


def compare_files(recorded: Iterable[FileEntry], replayed: Iterable[FileEntry]) -> list[FileRow]:
    """Rows by relative path, from lineage's file entries."""
    old = {f.path: f.sha256 for f in recorded}
    new = {f.path: f.sha256 for f in replayed}
    return [FileRow(path, old.get(path), new.get(path)) for path in sorted(set(old) | set(new))]


def compare_freezes(recorded: str, replayed: str) -> list[str]:
    """The packages that differ (empty: identical), e.g. ``six: recorded 1.16.0, replayed 1.17.0``."""
    old, new = installers.parse_freeze(recorded), installers.parse_freeze(replayed)
    out = []
    for name in sorted(old.keys() | new.keys()):
        if name not in new:
            out.append(f"{name}: recorded {old[name]}, not in the replay")
        elif name not in old:
            out.append(f"{name}: not recorded, replayed {new[name]}")
        elif old[name] != new[name]:
            out.append(f"{name}: recorded {old[name]}, replayed {new[name]}")
    return out


# ---------------------------------------------------------------------------------------------------- text


def _num(value: float | None) -> str:
    return "-" if value is None else repr(value)


def _short(sha: str | None) -> str:
    return "-" if not sha else sha[:12]


def stage_text(stage: StageReport, rtol: float) -> str:
    """One stage's table (what a person reads; the same facts as the JSON)."""
    replay = f"as run {stage.replay_run_id}" if stage.replay_run_id else "(no replay run)"
    lines = [f"stage {stage.stage}: run {stage.run_id} replayed {replay}: {stage.verdict.upper()}"]
    lines += [f"  note: {note}" for note in stage.notes]
    if stage.inputs:
        lines.append("  inputs")
        width = max(len(r.param) for r in stage.inputs)
        for row in stage.inputs:
            source = f"; from {row.source}" if row.source else ""
            lines.append(f"    {row.param:<{width}}  {'ok ' if row.ok else 'BAD'}  {row.status}{source}")
    if stage.metrics:
        width = max(12, *(len(r.name) for r in stage.metrics))
        tolerance = "exact" if rtol == 0 else f"rtol {rtol:g}"
        lines.append(f"  {'metrics (' + tolerance + ')':<{width + 2}}  {'recorded':>24}  {'replayed':>24}  "
                     f"{'difference':>12}")
        for metric in stage.metrics:
            diff = "-" if metric.difference is None else f"{metric.difference:.3g}"
            mark = "" if metric.same else "  DIFFERENT"
            lines.append(f"    {metric.name:<{width}}  {_num(metric.recorded):>24}  {_num(metric.replayed):>24}  "
                         f"{diff:>12}{mark}")
    if stage.outputs:
        lines.append("  outputs")
        width = max(len(r.path) for r in stage.outputs)
        for file in stage.outputs:
            shown = _short(file.recorded) if file.same else f"recorded {_short(file.recorded)}, replayed " \
                                                            f"{_short(file.replayed)}"
            lines.append(f"    {file.path:<{width}}  {file.status} ({shown})")
    env = stage.environment
    if env is not None:
        python = f"Python {env.python_recorded}" + ("" if env.python_recorded == env.python_replayed
                                                    else f" recorded, {env.python_replayed} replayed")
        freeze = f"freeze identical ({env.packages} packages)" if not env.differences else \
            f"{len(env.differences)} package(s) differ: " + "; ".join(env.differences)
        lines.append(f"  environment: {python}, built from {env.built_from}; {freeze}")
    lines += _held_text(stage)
    return "\n".join(lines)


def _held_text(stage: StageReport) -> list[str]:
    """The params, tags, histories and artifacts compared (the differing ones named), then what was skipped."""
    if not stage.held and not stage.skipped:
        return []
    lines = []
    for kind in ("param", "tag", "metric", "artifact"):
        rows = [r for r in stage.held if r.kind == kind]
        if not rows:
            continue
        differ = [r for r in rows if not r.same]
        noun = "metric histories" if kind == "metric" else f"{kind}s"
        lines.append(f"  {noun}: {len(rows) - len(differ)} of {len(rows)} the same")
        for row in differ:
            lines.append(f"    {row.name}  DIFFERENT ({row.how}): recorded {short(row.recorded)}, replayed "
                         f"{short(row.replayed)}")
    if stage.skipped:
        lines.append("  not compared (differs per run by nature)")
        width = min(40, max(len(s.kind) + 1 + len(s.name) for s in stage.skipped))
        for item in stage.skipped:
            lines.append(f"    {item.kind + ' ' + item.name:<{width}}  {item.why}")
    return lines


def text(report: Report) -> str:
    """The whole report: a pipeline's verdict and first divergence on top, then each stage's table."""
    head = f"replay of {report.kind} run {report.run_id} ({report.name})"
    if report.replay_run_id and report.kind == "pipeline":
        head += f" as run {report.replay_run_id}"
    lines = [f"{head}: {report.verdict.upper()}"]
    first = report.first_divergence
    if report.kind == "pipeline" and first is not None:
        lines.append(f"first divergence: stage {first.stage} ({first.verdict}: "
                     f"{', '.join(first.differences()) or 'see below'})")
    lines += [f"note: {note}" for note in report.notes]
    for stage in report.stages:
        lines += ["", stage_text(stage, report.rtol)]
    return "\n".join(lines) + "\n"
