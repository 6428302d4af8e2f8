"""mlops_kit.rehearsal.report: the plan, the summary and the closing note of a rehearsal."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import REPO_ROOT, run_script
from mlops_kit.rehearsal import engine, report


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
    result = engine.RunResult("p", 3, "3", "abc", [], tmp_path / "artifacts")
    assert report._runs_page(result) == "#/experiments?workflowType=machine_learning"
    manifest = tmp_path / "artifacts" / "train" / "1" / "train" / "notebooks" / "train_out.mlops_run.json"
    manifest.parent.mkdir(parents=True)
    manifest.write_text(json.dumps({"experiment_id": "7"}), encoding="utf-8")
    assert report._runs_page(result) == "#/experiments/7/runs?workflowType=machine_learning"
