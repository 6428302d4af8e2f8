"""Asking another interpreter (mlops_kit.envs.probe): the answer, and every way of getting none, as ProbeFailed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from helpers import TOOLKIT_PYTHON
from mlops_kit.envs import probe


def test_the_answer_is_the_last_json_line_printed_by_the_isolated_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/nowhere")  # -I: the interpreter's own view, not the caller's variables
    script = "import json, sys; print('noise'); print(json.dumps({'isolated': sys.flags.isolated, 'path': sys.path}))"
    answer = probe.ask(TOOLKIT_PYTHON, script, timeout=60)
    assert answer["isolated"] == 1 and "/nowhere" not in answer["path"]


@pytest.mark.parametrize(("script", "reason"), [
    ("import sys; sys.exit(3)", "exit 3"),
    ("import sys; sys.stderr.write('boom'); sys.exit(1)", "boom"),
    ("print('not json')", "printed no JSON answer (last line: 'not json')"),
    ("print('[1, 2]')", "printed no JSON answer"),
    ("pass", "printed no JSON answer (last line: '')"),
])
def test_an_interpreter_that_gives_no_answer_is_probe_failed_saying_why(script: str, reason: str) -> None:
    with pytest.raises(probe.ProbeFailed, match="^.*" + reason.replace("(", r"\(").replace(")", r"\)")):
        probe.ask(sys.executable, script, timeout=60)


def test_a_missing_interpreter_or_one_that_hangs_is_probe_failed(tmp_path: Path) -> None:
    with pytest.raises(probe.ProbeFailed, match="exit 127"):
        probe.ask(tmp_path / "no-python", "pass", timeout=60)
    with pytest.raises(probe.ProbeFailed, match=r"timed out after 0\.5s"):
        probe.ask(sys.executable, "import time; time.sleep(30)", timeout=0.5)
