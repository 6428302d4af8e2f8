"""mlops_kit.replay.replayer: the parts of a replay that need no tracking store (the full replay is in
tests/test_replay_run.py)."""

from __future__ import annotations

from pathlib import Path

import nbformat

from mlops_kit.replay import replayer


def test_the_source_of_an_older_run_is_its_executed_notebook_without_the_injected_cell(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell("alpha = 1", metadata={"tags": ["parameters"]})
    injected = nbformat.v4.new_code_cell("alpha = 2", metadata={"tags": ["injected-parameters"]})
    work = nbformat.v4.new_code_cell("print(alpha)", execution_count=1,
                                     outputs=[nbformat.v4.new_output("stream", text="2\n")])
    nb.cells = [params, injected, work]
    nbformat.write(nb, str(tmp_path / "executed.ipynb"))
    replayer._strip_executed(tmp_path / "executed.ipynb", tmp_path / "source.ipynb")
    source = nbformat.read(str(tmp_path / "source.ipynb"), as_version=4)
    assert [c.source for c in source.cells] == ["alpha = 1", "print(alpha)"]
    assert source.cells[1].outputs == [] and source.cells[1].execution_count is None
