"""Static checks of the example notebooks and their params files (fast; they run for real in test_run_pipeline.py).

Every name a params file sets must be declared in the notebook's "parameters" cell (papermill would only warn),
and the defaults must chain so a data scientist can run ingest -> features -> train in order from JupyterLab.
"""

from __future__ import annotations

import ast

import nbformat
import pytest

from helpers import REPO_ROOT
from mlops_kit.envs.spec import load_spec, load_yaml_mapping

STAGES = ("ingest", "features", "train")


def _parameters(stage: str) -> dict[str, object]:
    book = nbformat.read(REPO_ROOT / "notebooks" / f"{stage}.ipynb", as_version=4)
    cells = [c for c in book.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"{stage}: exactly one cell tagged 'parameters'"
    values = {}
    for node in ast.parse(cells[0].source).body:
        assert isinstance(node, ast.Assign), f"{stage}: the parameters cell holds plain assignments only"
        values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


@pytest.mark.parametrize("stage", STAGES)
def test_params_file_sets_only_declared_parameters(stage: str) -> None:
    declared = _parameters(stage)
    assert "output_dir" in declared, "run_notebook.py injects output_dir"
    path = REPO_ROOT / "params" / f"{stage}_params.yaml"
    values = load_yaml_mapping(path.read_text(encoding="utf-8"), source=path, what="params file")
    assert set(values) <= set(declared) - {"output_dir", "input_dir"}
    assert all(type(values[k]) is type(declared[k]) or declared[k] is None for k in values), stage


def test_defaults_chain_from_one_stage_to_the_next() -> None:
    ingest, features, train = (_parameters(s) for s in STAGES)
    assert features["input_dir"] == ingest["output_dir"]
    assert train["input_dir"] == features["output_dir"]


@pytest.mark.parametrize("stage", STAGES)
def test_notebooks_are_committed_without_outputs(stage: str) -> None:
    book = nbformat.read(REPO_ROOT / "notebooks" / f"{stage}.ipynb", as_version=4)
    nbformat.validate(book)
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in book.cells if c.cell_type == "code")


@pytest.mark.parametrize("stage", STAGES)
def test_stage_specs_stay_lean(stage: str) -> None:
    """CI builds these venvs from an empty cache: no heavy extras sneak in. Only train logs to MLflow itself (its
    model, to the registry over the REST API): mlflow-skinny and skops are enough, never the full mlflow."""
    spec = load_spec(REPO_ROOT / "specs" / f"{stage}.yaml")
    names = {p.split(">")[0].split("=")[0].split("<")[0] for p in spec.packages}
    model_logging = {"mlflow-skinny", "skops"} if stage == "train" else set()
    assert spec.stage == stage and len(names - model_logging) <= 3
    assert not names & {"mlflow", "papermill"}, "the full mlflow (a server) or papermill has no place in a stage venv"


def test_notebook_imports_are_in_the_stage_spec() -> None:
    """A new import needs its package in specs/<stage>.yaml (numpy and joblib come with pandas/scikit-learn)."""
    provided = {"ingest": {"pandas", "sklearn"}, "features": {"pandas", "numpy"},
                "train": {"pandas", "sklearn", "matplotlib", "joblib", "mlflow"}}  # mlflow: mlflow-skinny
    stdlib = {"json", "pathlib", "shutil"}
    for stage in STAGES:
        book = nbformat.read(REPO_ROOT / "notebooks" / f"{stage}.ipynb", as_version=4)
        imported = set()
        for cell in (c for c in book.cells if c.cell_type == "code"):
            for node in ast.walk(ast.parse(cell.source)):
                if isinstance(node, ast.Import):
                    imported |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module:
                    imported.add(node.module.split(".")[0])
        assert imported - stdlib <= provided[stage], (stage, imported)
