"""mlops_kit.replay.contents: what of a run is compared, what is skipped and why, and the artifact comparers."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest

from mlops_kit.replay import contents
from mlops_kit.replay.contents import CompareContext, Comparer, Held, Row, Skipped


def _held(root: Path, files: dict[str, str], **kw: object) -> Held:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text, encoding="utf-8")
    return Held(params=kw.get("params", {}), tags=kw.get("tags", {}), metrics=kw.get("metrics", {}),  # type: ignore[arg-type]
                artifacts=str(root))


def _artifacts(tmp_path: Path, old: dict[str, str], new: dict[str, str],
               known: dict[str, str] | None = None) -> tuple[list[Row], list[Skipped]]:
    rows: list[Row] = []
    skipped: list[Skipped] = []
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plan = contents.ArtifactPlan(("stage_out",), True, known or {})
    contents.compare_artifacts(_held(tmp_path / "a", old), _held(tmp_path / "b", new), plan,
                               CompareContext(None, 0.0, tmp_path / "s"), rows, skipped)
    return rows, skipped


def test_the_rule_skips_what_differs_per_run_and_compares_the_rest() -> None:
    assert contents.skip_param("venv_name", []) and contents.skip_param("output_dir", [])
    assert contents.skip_param("cfg.files", ["cfg.files"]) and contents.skip_param("cfg.files.x", ["cfg.files"])
    assert contents.skip_param("seed", ["cfg.files"]) is None and contents.skip_param("python_version", []) is None
    assert contents.skip_param("cfg.filesystem", ["cfg.files"]) is None, "a prefix of a name is not the name"
    assert contents.skip_tag("mlflow.user") and contents.skip_tag("GO_PIPELINE_COUNTER")
    assert contents.skip_tag("mlops_kit.stage") is None and contents.skip_tag("nb_tag") is None
    assert contents.skip_metric("system/cpu_utilization_percentage") and contents.skip_metric("loss") is None
    stems = ("train_out",)
    for skipped in ("train_out.ipynb", "train_out.html", "environment/env.json", "lineage/lineage.json",
                    "params/train_out.params.yaml", "replay/report.json"):
        assert contents.skip_artifact(skipped, stems, True), skipped
    for compared in ("stamp.txt", "report.html", "outputs/a.csv", "source/train_out.source.ipynb",
                     "environment.txt", "model/MLmodel"):
        assert contents.skip_artifact(compared, stems, True) is None, compared
    assert contents.skip_artifact("source/x.source.ipynb", stems, has_lineage=False)


def test_values_and_histories_every_step_nan_is_nan() -> None:
    rows: list[Row] = []
    skipped: list[Skipped] = []
    contents.compare_values("param", {"seed": "1", "venv_name": "a", "gone": "x"},
                            {"seed": "2", "venv_name": "b", "new": "y"},
                            lambda n: contents.skip_param(n, []), rows, skipped)
    assert {r.name: r.same for r in rows} == {"seed": False, "gone": False, "new": False}
    assert [(s.name, s.recorded, s.replayed) for s in skipped] == [("venv_name", "a", "b")]
    rows.clear()
    nan = math.nan
    contents.compare_histories(
        {"loss": [(0, 0.5), (1, 0.25), (2, 0.1)], "n": [(0, nan), (1, 1.0)], "steps": [(0, 1.0), (1, 1.0)],
         "one": [(0, 1.0)], "system/cpu": [(0, 3.0), (1, 4.0)]},
        {"loss": [(0, 0.5), (1, 0.3), (2, 0.1)], "n": [(0, nan), (1, 1.0)], "steps": [(0, 1.0), (5, 1.0)],
         "one": [(0, 2.0)], "system/cpu": [(0, 9.0), (1, 9.0)]}, 0.0, rows, skipped)
    by = {r.name: r for r in rows}
    assert not by["loss"].same and by["loss"].recorded == "step 1: 0.25" and by["loss"].replayed == "step 1: 0.3"
    assert by["n"].same and not by["steps"].same and "one" not in by, "a single value: the metrics table's"
    assert skipped[-1].name == "system/cpu"


def test_every_artifact_by_sha256_a_lost_output_by_lineage(tmp_path: Path) -> None:
    known = {"outputs/r.txt": hashlib.sha256(b"r").hexdigest()}
    rows, skipped = _artifacts(tmp_path, {"stamp.txt": "1", "same.txt": "s", "stage_out.ipynb": "t1",
                                          "gone.txt": "g"},
                               {"stamp.txt": "2", "same.txt": "s", "stage_out.ipynb": "t2", "outputs/r.txt": "r"},
                               known)
    by = {r.name: r for r in rows}
    assert not by["stamp.txt"].same and by["same.txt"].same and not by["gone.txt"].same
    assert by["outputs/r.txt"].same and "lineage" in by["outputs/r.txt"].how
    assert [s.name for s in skipped] == ["stage_out.ipynb"]


def test_a_logged_model_outside_the_runs_artifacts_is_listed_as_not_compared(tmp_path: Path) -> None:
    rows: list[Row] = []
    skipped: list[Skipped] = []
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    old, new = Held({}, {}, {}, str(tmp_path / "a"), models={"model": "m-1"}), Held({}, {}, {}, str(tmp_path / "b"))
    contents.compare_artifacts(old, new, contents.ArtifactPlan((), True, {}), CompareContext(None, 0.0, tmp_path),
                               rows, skipped)
    assert [(r.name, r.same) for r in rows] == [("logged model model", False)], "logged by one run only"
    old.models["model"], new.models["model"] = "m-1", "m-2"
    rows.clear()
    contents.compare_artifacts(old, new, contents.ArtifactPlan((), True, {}), CompareContext(None, 0.0, tmp_path),
                               rows, skipped)
    assert rows == [] and [(s.name, s.recorded, s.replayed) for s in skipped] == [("logged model model", "m-1", "m-2")]


def test_a_model_folder_is_one_unit_without_mlflows_run_ids(tmp_path: Path) -> None:
    model = {"model/model.pkl": "weights", "model/MLmodel": "run_id: abc\nmodel_uuid: u1\nflavors: {sklearn: {}}\n"}
    replayed = {"model/model.pkl": "weights", "model/MLmodel": "run_id: def\nmodel_uuid: u2\nflavors: {sklearn: {}}\n"}
    rows, _ = _artifacts(tmp_path, model, replayed)
    assert [(r.name, r.same) for r in rows] == [("model", True)] and rows[0].how.startswith("mlflow model")


def test_a_registered_comparer_takes_its_artifacts_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(contents, "COMPARERS", list(contents.COMPARERS))
    seen = []

    def by_predictions(old: Path | None, new: Path | None, context: CompareContext) -> tuple[bool, str]:
        seen.append((old, new))
        return False, "predictions differ at row 3"

    contents.register(Comparer("model predictions", by_predictions, marker="MLmodel"))
    contents.register(Comparer("parquet rows", lambda a, b, c: (True, "same rows"), pattern="*.parquet"))
    rows, _ = _artifacts(tmp_path, {"model/MLmodel": "x", "t.parquet": "1"}, {"model/MLmodel": "x", "t.parquet": "2"})
    by = {r.name: r for r in rows}
    assert not by["model"].same and by["model"].how == "model predictions: predictions differ at row 3"
    assert by["t.parquet"].same and seen == [(tmp_path / "a" / "model", tmp_path / "b" / "model")]


def test_a_secret_named_param_is_never_compared() -> None:
    """A secret is logged masked, and only when given: a replay given it with -p (the run used the notebook's
    default) must not call that a difference."""
    assert contents.skip_param("dev_token", []) is not None
    assert contents.skip_param("cfg.vault.pw", []) is not None
    assert contents.skip_param("learning_rate", []) is None


def test_a_model_whose_only_the_serialized_file_differs_needs_its_predictions(tmp_path: Path) -> None:
    """Without the replay venv's interpreter the predictions cannot be compared: the skops file's sha256 decides;
    a differing non-serialized file is a difference whatever the predictions would say (none are computed)."""
    old = {"m/model.skops": "zip at 10:00", "m/MLmodel": "run_id: a\n", "m/conda.yaml": "sklearn 1.9"}
    rows, _ = _artifacts(tmp_path, old, {**old, "m/model.skops": "zip at 10:01", "m/MLmodel": "run_id: b\n"})
    assert [(r.name, r.same, r.unit) for r in rows] == [("m", False, True)]
    assert rows[0].how == "mlflow model: differs: model.skops"
    missing_python = CompareContext(tmp_path / "no-such-python", 0.0, tmp_path / "s")
    same, what = contents.compare_model_predictions(tmp_path / "a" / "m", tmp_path / "b" / "m", missing_python)
    assert not same and "could not be predicted" in what and what.startswith("model.skops differ(s)")
    (tmp_path / "b" / "m" / "conda.yaml").write_text("sklearn 1.8", encoding="utf-8")
    same, what = contents.compare_model_predictions(tmp_path / "a" / "m", tmp_path / "b" / "m", missing_python)
    assert (same, what) == (False, "differs: conda.yaml, model.skops")
