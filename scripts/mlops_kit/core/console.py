"""The one way the toolkit talks to a person: progress and warnings on stderr, the error line, job logs on stdout.

Every line goes through :func:`mlops_kit.redact.redact` first, so a password inside a URL or a connection string
never reaches a terminal or a GoCD job log, whatever message carried it. stdout is kept for results (the venv path
of create_venv, the executed notebook of run_notebook, the rehearsal's log and summary).
"""

from __future__ import annotations

import sys
from typing import Callable

from .redact import redact

Echo = Callable[[str], None]  # a sink for one progress line (create_venv --quiet passes a silent one)
Warn = Callable[[str], None]  # a sink for one warning line (:func:`warn`, or a list's append in tests)


def progress(message: str) -> None:
    """One progress line on stderr."""
    print(redact(message), file=sys.stderr, flush=True)


def warn(message: str) -> None:
    print(f"warning: {redact(message)}", file=sys.stderr, flush=True)


def error(message: str) -> None:
    """The one line a failure prints (what a GoCD log or a terminal shows)."""
    print(f"error: {redact(message)}", file=sys.stderr, flush=True)


def write(text: str) -> None:
    """Raw text on stdout, as it comes (a rehearsal's job log: its lines carry their own newlines)."""
    sys.stdout.write(redact(text))
    sys.stdout.flush()


def silent(_message: str) -> None:
    """An :data:`Echo` that drops everything."""


def tolerate_unprintable() -> None:
    """Never die on a character the console code page cannot show (Windows cp1252 consoles): replace it."""
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="replace")
