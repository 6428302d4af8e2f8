"""mlops_kit.replay.verdict: the rules that turn a replay's comparisons into a verdict and a report."""

from __future__ import annotations

import math

from mlops_kit.replay import verdict
from mlops_kit.replay.contents import Row
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


def test_an_output_inside_a_model_folder_takes_the_folders_verdict() -> None:
    outputs = [verdict.FileRow("mlflow_model/model.skops", "aa", "bb"),
               verdict.FileRow("mlflow_model/MLmodel", "c", "c"), verdict.FileRow("metrics.json", "d", "e")]
    held = [Row("artifact", "outputs/mlflow_model", "present", "present", True, "mlflow model: same predictions",
                unit=True)]
    verdict.judge_outputs_by_units(outputs, held)
    assert [row.same for row in outputs] == [True, True, False]
    assert outputs[0].status == "same as part of outputs/mlflow_model (sha256 differs; mlflow model: same predictions)"
    assert outputs[1].status == "same as part of outputs/mlflow_model (same sha256)"
    held[0].same = False
    verdict.judge_outputs_by_units(outputs, held)
    assert not outputs[0].same and outputs[0].status.startswith("DIFFERENT as part of outputs/mlflow_model")
