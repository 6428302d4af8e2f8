"""Asking another interpreter (a candidate Python, a stage venv's) a question: a small script run in it.

The script runs isolated (``python -I -c``: no user site, no ``PYTHON*`` variables, no current folder on
``sys.path``), so what the answer says is the interpreter's own, and prints one JSON object on its last line.
Every way this can go wrong (the interpreter is gone, cannot start, hangs past the timeout, exits non-zero,
prints no JSON object) is one :class:`ProbeFailed` with the reason; each caller decides what that means (a
candidate skipped, a venv rebuilt, a build stopped).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..core import proc


class ProbeFailed(Exception):
    """The interpreter gave no answer; ``str()`` says why (the command, its exit code and output's tail)."""


def ask(python: Path | str, script: str, *, timeout: float) -> dict[str, Any]:
    """Run ``script`` in ``python`` and return the JSON object it printed last; :class:`ProbeFailed` otherwise."""
    try:
        result = proc.run([os.fspath(python), "-I", "-c", script], check=False, timeout=timeout)
    except proc.CommandError as exc:  # past the timeout
        raise ProbeFailed(str(exc)) from None
    if result.returncode != 0:  # a missing or unstartable program is 127/126 here
        raise ProbeFailed(str(proc.CommandError(result)))
    lines = result.stdout.strip().splitlines()
    try:
        answer = json.loads(lines[-1]) if lines else None
    except ValueError:
        answer = None
    if not isinstance(answer, dict):
        raise ProbeFailed(f"{python} printed no JSON answer (last line: {(lines or [''])[-1][:80]!r})")
    return answer
