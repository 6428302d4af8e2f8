"""notebook.execute on a real venv kernel (private kernelspec, no registered kernel), without MLflow."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from helpers_notebook import NOTEBOOKS
from mlops_kit.core import paths
from mlops_kit.core.errors import BadInput, TrackingError
from mlops_kit.envs import kernel
from mlops_kit.run import notebook

pytestmark = pytest.mark.slow


def _nb(tmp_path: Path, params_src: str, *cells: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    first = nbformat.v4.new_code_cell(params_src)
    first.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# test"), first, *[nbformat.v4.new_code_cell(c) for c in cells]]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    return path


def _execution(venv: Path, path: Path, output: Path, **kw: object) -> notebook.Execution:
    base = dict(notebook=path, output=output, parameters={}, kernel_name="nb-test-kernel",
                kernelspec=kernel.kernelspec(venv, "Test (py3.10)"), cwd=output.parent, start_timeout=60)
    base.update(kw)
    return notebook.Execution(**base)  # type: ignore[arg-type]


def _stream(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_runs_on_private_kernelspec_with_env_and_masked_secrets(tmp_path: Path, venv_small: Path) -> None:
    from jupyter_client.kernelspec import KernelSpecManager

    assert "nb-test-kernel" not in KernelSpecManager().find_kernel_specs()  # nothing registered for this user
    path = _nb(tmp_path, 'api_token = ""\nn = 0',
               'import os, sys\nprint("len", len(api_token), "n", n)\nprint("run", os.environ["MLFLOW_RUN_ID"])\n'
               'print("exe", sys.executable)\nprint("cwd", os.getcwd())')
    work = tmp_path / "work"
    work.mkdir()
    output = tmp_path / "new folder" / "out.ipynb"
    ex = _execution(venv_small, path, output, parameters={"api_token": "s3cr3t!", "n": 2},
                    masked_parameters={"api_token": "***", "n": 2}, cwd=work,
                    before_cells=lambda: {"MLFLOW_RUN_ID": "abc123"})
    outcome = notebook.execute(ex, notebook.load_notebook(path))
    assert outcome.ok and outcome.summary().startswith("ok")
    written = nbformat.read(str(output), as_version=4)
    text = _stream(written)
    assert "len 7 n 2" in text and "run abc123" in text and f"exe {paths.venv_python(venv_small)}" in text
    assert f"cwd {work}" in text
    assert "s3cr3t" not in output.read_text() and 'api_token = "***"' in written.cells[2].source
    assert written.metadata.kernelspec["name"] == "nb-test-kernel"
    assert written.metadata.language_info["version"].startswith("3.10.")


def test_failing_cell_index_counts_input_cells(tmp_path: Path, venv_small: Path) -> None:
    output = tmp_path / "out.ipynb"
    ex = _execution(venv_small, NOTEBOOKS / "fails.ipynb", output, parameters={"step": 9})
    outcome = notebook.execute(ex, notebook.load_notebook(NOTEBOOKS / "fails.ipynb"))
    assert (outcome.kind, outcome.cell_index, outcome.ename, outcome.evalue) == ("cell-error", 2, "ValueError",
                                                                                 "boom at step 9")
    assert outcome.execution_count == 4  # params, injected params, first cell, then this one
    assert outcome.as_tags()["failed_cell_index"] == "2"
    written = nbformat.read(str(output), as_version=4)
    assert "papermill-error-cell-tag" in written.cells[0].metadata.tags


def test_cell_timeout(tmp_path: Path, venv_small: Path) -> None:
    output = tmp_path / "out.ipynb"
    ex = _execution(venv_small, NOTEBOOKS / "sleeps.ipynb", output, cell_timeout=2)
    outcome = notebook.execute(ex, notebook.load_notebook(NOTEBOOKS / "sleeps.ipynb"))
    assert outcome.kind == "timeout" and outcome.cell_index == 1 and outcome.ename == "CellTimeoutError"
    assert "CellTimeoutError" in output.read_text()


def test_kernel_that_cannot_start(tmp_path: Path, pythons: dict[str, Path]) -> None:
    """A base interpreter without ipykernel: the notebook is still written, the outcome says why."""
    path = _nb(tmp_path, "x = 1", "print(x)")
    output = tmp_path / "out.ipynb"
    spec = {"argv": [str(pythons["3.10"]), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "broken", "language": "python"}
    ex = _execution(Path("/nonexistent"), path, output, kernelspec=spec, start_timeout=20)
    outcome = notebook.execute(ex, notebook.load_notebook(path))
    assert outcome.kind == "kernel-start" and "ipykernel" in outcome.evalue
    assert output.is_file()


def test_before_cells_failure_aborts_without_output(tmp_path: Path, venv_small: Path) -> None:
    def unreachable() -> dict[str, str]:
        raise TrackingError("MLflow tracking server http://x is unreachable")

    path = _nb(tmp_path, "x = 1", "open('ran.txt', 'w').write('ran')")
    output = tmp_path / "o" / "out.ipynb"
    ex = _execution(venv_small, path, output, before_cells=unreachable, cwd=tmp_path)
    with pytest.raises(TrackingError):
        notebook.execute(ex, notebook.load_notebook(path))
    assert not output.exists() and not (tmp_path / "ran.txt").exists()


def test_load_notebook_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="notebook not found"):
        notebook.load_notebook(tmp_path / "none.ipynb")
    with pytest.raises(BadInput, match="not a notebook file"):
        notebook.load_notebook(tmp_path)
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    with pytest.raises(BadInput, match="not a readable Jupyter notebook"):
        notebook.load_notebook(broken)
