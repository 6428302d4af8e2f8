"""mlops_kit.replay.replayer: the parts of a replay that need no tracking store (the full replay is in
tests/test_replay_run.py)."""

from __future__ import annotations

import hashlib
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


def test_a_recorded_lock_from_before_seals_is_placed_sealed_and_the_report_says_so(tmp_path: Path) -> None:
    from helpers_locks import fake_lock, pin, write_spec

    from mlops_kit.envs import lockfile

    spec = write_spec(tmp_path / "spec", "stage", "3.12", ["six"])
    sealed = fake_lock(spec, pin("six", "1.17.0"), **{"lock-format": "1"}).read_text(encoding="utf-8")
    recorded = tmp_path / "spec.lock.txt"
    recorded.write_text("".join(line for line in sealed.splitlines(keepends=True)
                                if not line.startswith(("# digest:", "# blocks:"))), encoding="utf-8")
    env = {"lock": {"sha256": hashlib.sha256(recorded.read_bytes()).hexdigest()}}
    notes: list[str] = []
    replayer._place_recorded_lock(recorded, tmp_path / "placed.lock.txt", env, notes)
    assert lockfile.read_lock(tmp_path / "placed.lock.txt").pins[0].version == "1.17.0"
    assert notes and "predates sealed locks" in notes[0]
    notes.clear()
    replayer._place_recorded_lock(recorded, tmp_path / "as-is.lock.txt", {"lock": {"sha256": "0" * 64}}, notes)
    assert (tmp_path / "as-is.lock.txt").read_bytes() == recorded.read_bytes() and not notes
