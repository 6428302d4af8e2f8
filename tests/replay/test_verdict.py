"""mlops_kit.replay.verdict: the rules that turn a replay's comparisons into a verdict and a report."""

from __future__ import annotations

import math

from mlops_kit.replay import verdict
from mlops_kit.run.lineage import FileEntry


def test_metrics_match_exactly_or_within_rtol_nan_matches_nan() -> None:
    rows = verdict.compare_metrics({"a": 1.0, "b": math.nan, "c": 100.0, "d": 1.0, "gone": 1.0},
                                         {"a": 1.0, "b": math.nan, "c": 100.0001, "d": 2.0, "new": 3.0}, 1e-6)
    assert {r.name: r.same for r in rows} == {"a": True, "b": True, "c": True, "d": False, "gone": False,
                                              "new": False}
    assert not verdict.compare_metrics({"c": 100.0}, {"c": 100.0001}, 0.0)[0].same, "exact by default"


def test_a_stage_verdict_and_the_first_divergence_of_a_pipeline() -> None:
    good = verdict.StageReport("r1", "ingest", metrics=verdict.compare_metrics({"m": 1}, {"m": 1}, 0))
    bad = verdict.StageReport("r2", "train", outputs=verdict.compare_files(
        [FileEntry("model.pkl", 1, "x")], [FileEntry("model.pkl", 1, "y")]))
    for stage in (good, bad):
        stage.decide()
    report = verdict.Report("p", "pipeline", "ml #1", 0.0, [good, bad])
    assert (good.verdict, bad.verdict, report.verdict) == ("reproduced", "not reproduced", "not reproduced")
    assert report.first_divergence is bad and "output model.pkl (DIFFERENT sha256)" in bad.differences()
    assert "first divergence: stage train" in verdict.text(report)
    assert verdict.compare_freezes("six==1.16.0\npip==24.0\n", "six==1.17.0\npip==24.0\nx==1\n") == \
        ["six: recorded 1.16.0, replayed 1.17.0", "x: not recorded, replayed 1"]
