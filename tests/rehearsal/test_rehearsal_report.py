"""mlops_kit.rehearsal.report: the plan, the summary and the closing note of a rehearsal."""

from __future__ import annotations

import json
from pathlib import Path, PureWindowsPath

import pytest

from helpers import REPO_ROOT, run_script
from helpers_gocd import example_pipeline
from mlops_kit.core import paths
from mlops_kit.rehearsal import report, schedule, settings


def test_dry_run_prints_the_plan_of_the_example() -> None:
    done = run_script("run_pipeline.py", "--dry-run", cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.index("stage ingest") < done.stdout.index("stage features") < done.stdout.index("stage train")
    assert "fetchartifact ingest/ingest srcdir=ingest_outputs dest=inputs" in done.stdout


def test_closing_note_names_the_toolkits_own_mlflow_and_jupyter() -> None:
    """The newcomer copies the line: it must be the mlflow/jupyter installed with requirements.txt."""
    for name in ("mlflow", "jupyter"):
        shown = report._toolkit_command(name, REPO_ROOT)
        assert Path(shown).name == name and (Path(shown) if Path(shown).is_absolute() else REPO_ROOT / shown).is_file()
    assert report._toolkit_command("no-such-tool", REPO_ROOT) == "no-such-tool"


def test_closing_note_links_the_runs_in_mlflows_model_training_view(tmp_path: Path) -> None:
    """MLflow 3's UI opens on its GenAI view, which shows no runs: the note links the experiment's runs page."""
    result = schedule.RunResult("p", 3, "3", "abc", [], tmp_path / "artifacts")
    assert report._runs_page(result) == "#/experiments?workflowType=machine_learning"
    manifest = tmp_path / "artifacts" / "train" / "1" / "train" / "notebooks" / "train_out.mlops_run.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"experiment_id": "7"}), encoding="utf-8")
    assert report._runs_page(result) == "#/experiments/7/runs?workflowType=machine_learning"


def test_the_closing_note_spells_each_path_with_one_separator_on_windows(monkeypatch: pytest.MonkeyPatch) -> None:
    """On Windows it read ``...\\ml-example\\1/<stage>/1/<job>/cruise-output/...``: the paths are built with
    pathlib, so they take the platform's separator throughout."""
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    monkeypatch.setattr(report, "_runs_page", lambda result: "#/experiments")  # reads files: none on this path
    state = PureWindowsPath(r"C:\Users\Jane Doe\ml repo\.pipeline")
    result = schedule.RunResult("ml-example", 1, "1", "abc", [], state / "artifacts" / "ml-example" / "1")  # type: ignore[arg-type]
    local = settings.LocalSettings(source=REPO_ROOT, state_dir=state,  # type: ignore[arg-type]
                                   overrides={"MLFLOW_TRACKING_URI": "http://mlflow:5000"})
    note = report.where_results_are(example_pipeline(), result, local)
    lines = {line.split(":")[0].strip(): line for line in note.splitlines() if ":" in line}
    assert lines["console logs of the jobs"].endswith(
        r"C:\Users\Jane Doe\ml repo\.pipeline\artifacts\ml-example\1\<stage>\1\<job>\cruise-output\console.log")
    assert lines["working copies of the jobs"].endswith(r"C:\Users\Jane Doe\ml repo\.pipeline\work\ml-example\1")
    for name in ("console logs of the jobs", "working copies of the jobs", "artifacts (as GoCD would store them)"):
        assert "/" not in lines[name], lines[name]

