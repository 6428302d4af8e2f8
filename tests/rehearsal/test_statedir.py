"""mlops_kit.rehearsal.statedir: counters that only go up, and pruning that never touches a run in progress."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from helpers import SCRIPTS, TOOLKIT_PYTHON
from helpers_gocd import cruise_xml, py_task, stage_xml
from mlops_kit.rehearsal import statedir


def _counter(state: Path, name: str) -> int:
    slot = statedir.claim_run(state, name)
    slot.release()
    return slot.counter


def test_counter_goes_up_per_run_and_state_dir_is_marked(tmp_path: Path) -> None:
    state = tmp_path / ".pipeline"
    assert [_counter(state, "p") for _ in range(3)] == [1, 2, 3]
    assert _counter(state, "other") == 1
    (state / "counters.json").unlink()
    (state / "artifacts" / "p" / "7").mkdir(parents=True)
    assert _counter(state, "p") == 8, "existing run folders are never reused"
    assert (state / "CACHEDIR.TAG").is_file() and (state / ".gitignore").read_text() == "*\n"


def test_keep_prunes_only_old_marked_runs_not_in_progress(tmp_path: Path) -> None:
    state = tmp_path / ".pipeline"
    slots = [statedir.claim_run(state, "p") for _ in range(5)]
    for slot in slots:
        for sub in ("work", "artifacts"):
            (state / sub / "p" / str(slot.counter) / "x").mkdir(parents=True)
    for slot in slots[1:4]:
        slot.release()  # runs 2-4 ended; run 1 (a long concurrent rehearsal) and run 5 are still in progress
    (state / "work" / "p" / "0").mkdir()  # not made by a run with a marker (older tool, or by hand): left alone
    (state / "work" / "p" / "notes.txt").write_text("mine")
    current = statedir.claim_run(state, "p")
    lines: list[str] = []
    assert statedir.prune(state, 2, lines.append) == [("p", 2), ("p", 3), ("p", 4)]
    assert sorted(p.name for p in (state / "work" / "p").iterdir()) == ["0", "1", "5", "notes.txt"]
    assert sorted(p.name for p in (state / "artifacts" / "p").iterdir()) == ["1", "5"]
    assert "--keep 2: removed the working copies and artifacts of p #2, p #3, p #4" in lines[0]
    for slot in (slots[0], slots[4], current):
        slot.release()
    assert statedir.prune(state, 1, lines.append) == [("p", 1), ("p", 5)], "once ended, they go too"
    assert statedir.claim_run(state, "p").counter == 7, "counters never go back"


@pytest.mark.slow
def test_concurrent_rehearsals_with_keep_1_leave_each_other_running(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    xml = cruise_xml(stage_xml("s", py_task("import time; time.sleep(3); open('done', 'w')"),
                               artifacts='<artifact type="build" src="done" />'))
    (repo / "cfg.xml").write_text(xml, encoding="utf-8")
    cmd = [str(TOOLKIT_PYTHON), str(SCRIPTS / "run_pipeline.py"), "--config", str(repo / "cfg.xml"), "--keep", "1"]
    runs = [subprocess.Popen(cmd, cwd=repo, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(3)]
    results = [(r.wait(timeout=120), *r.communicate()) for r in runs]
    assert [code for code, _, _ in results] == [0, 0, 0], results
    counters = sorted(int(re.search(r"counter (\d+)", out).group(1)) for _, out, _ in results)  # type: ignore[union-attr]
    assert counters == [1, 2, 3]
