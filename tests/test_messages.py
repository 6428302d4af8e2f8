"""End to end, issue 17.15: the messages of three failures say what is wrong (not something else).

A run whose artifacts were deleted is not a run that "predates lineage records"; ``replay_run.py ""`` says the run
id is empty; a notebook logging with mlflow only from a module it imports, on the local default store, gets the
README's hint (mention mlflow in a cell) in its error.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import pytest

from helpers import run_script
from helpers_notebook import NOTEBOOKS, one_error_line, run_nb

pytestmark = pytest.mark.slow


def test_deleted_artifacts_of_a_new_run_are_named_missing_not_predating_lineage(tmp_path: Path,
                                                                                venv_small: Path) -> None:
    uri = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    done = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "chain_make.ipynb"), "--output",
                  str(tmp_path / "out" / "make_out.ipynb"), "--tracking-uri", uri, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    run_id = json.loads((tmp_path / "out" / "make_out.mlops_run.json").read_text(encoding="utf-8"))["run_id"]
    artifacts = next((tmp_path / "mlruns").glob(f"*/{run_id}/artifacts"))
    shutil.rmtree(artifacts)  # an over-eager clean-up of the artifact store
    artifacts.mkdir()
    done = run_script("replay_run.py", run_id, "--tracking-uri", uri, "--workdir", str(tmp_path / "w"), cwd=tmp_path)
    line = one_error_line(done.stderr)
    assert done.returncode == 2 and "predates" not in line, line
    assert "missing" in line and "deleted from the artifact store?" in line
    for name in ("lineage/lineage.json", "environment/env.json", "environment/pip_freeze.txt"):
        assert name in line, line


@pytest.mark.parametrize("run_id", ["", "   "])
def test_an_empty_run_id_is_named_so_and_nothing_is_created(tmp_path: Path, run_id: str) -> None:
    done = run_script("replay_run.py", run_id, cwd=tmp_path)
    line = one_error_line(done.stderr)
    assert done.returncode == 2 and "the run id is empty" in line and "--workdir" not in line, line
    assert list(tmp_path.iterdir()) == [], "no store, no replay folder for a run id that is not there"


def test_mlflow_used_only_from_an_imported_module_gets_the_readme_hint(tmp_path: Path, venv_mlflow: Path) -> None:
    """No cell mentions it, so the local store is not served: the venv's mlflow-skinny meets ``sqlite:///`` and
    fails with MLflow's store-registry error; the run's error says what to do."""
    (tmp_path / "helper_mod.py").write_text("import mlflow\n\n\ndef log():\n    mlflow.log_metric('m', 1.0)\n",
                                            encoding="utf-8")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("import helper_mod\nhelper_mod.log()")]
    nbformat.write(nb, str(tmp_path / "nb.ipynb"))
    output = tmp_path / "out" / "nb_out.ipynb"
    done = run_nb("--venv", str(venv_mlflow), "--notebook", str(tmp_path / "nb.ipynb"), "--output", str(output),
                  cwd=tmp_path)
    assert done.returncode == 5, done.stderr[-3000:]
    line = one_error_line(done.stderr)
    assert "UnsupportedModelRegistryStoreURIException" in line, "MLflow's own error stays first"
    assert "mention mlflow in a code cell" in line and "# logs with mlflow" in line, line
