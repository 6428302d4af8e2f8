"""mlops_kit.pipeline_report: the plan, the summary and the closing note of a rehearsal."""

from __future__ import annotations

from pathlib import Path

from helpers import REPO_ROOT, run_script
from mlops_kit import pipeline_report


def test_dry_run_prints_the_plan_of_the_example() -> None:
    done = run_script("run_pipeline.py", "--dry-run", cwd=REPO_ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.index("stage ingest") < done.stdout.index("stage features") < done.stdout.index("stage train")
    assert "fetchartifact ingest/ingest srcdir=ingest_outputs dest=inputs" in done.stdout


def test_closing_note_names_the_toolkits_own_mlflow_and_jupyter() -> None:
    """The newcomer copies the line: it must be the mlflow/jupyter installed with requirements.txt."""
    for name in ("mlflow", "jupyter"):
        shown = pipeline_report._toolkit_command(name, REPO_ROOT)
        assert Path(shown).name == name and (Path(shown) if Path(shown).is_absolute() else REPO_ROOT / shown).is_file()
    assert pipeline_report._toolkit_command("no-such-tool", REPO_ROOT) == "no-such-tool"
