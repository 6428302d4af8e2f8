"""The edge every entry point goes through: one line per failure, a documented exit code, no traceback.

Usage in ``scripts/<tool>.py``::

    def main(argv: list[str] | None = None) -> int:
        return cli.run(_main, argv)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Callable, Sequence

from . import errors

EXIT_CODES_HELP = """exit codes:
  0    success
  1    internal error (a bug; the traceback is saved to a log file named in the message)
  2    bad input (spec, params, argument or path): nothing was changed
  3    requested Python interpreter not found
  4    environment build or install failed
  5    notebook failed (cell error, kernel died, timeout); executed notebook still written
  6    MLflow tracking store unreachable or refused the run
  7    a pipeline job failed (run_pipeline)
  130  interrupted (Ctrl-C)
"""


class ArgParser(argparse.ArgumentParser):
    """argparse with exit code 2 and a one-line message naming the tool, plus exit codes in ``--help``."""

    def __init__(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("epilog", EXIT_CODES_HELP)
        super().__init__(**kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise errors.BadInput(f"{self.prog}: {message} (see --help)")


def fail_line(message: str) -> None:
    """Print one error line on stderr (what a GoCD log or a terminal shows)."""
    print(f"error: {message}", file=sys.stderr, flush=True)


def run(main: Callable[[list[str]], int], argv: Sequence[str] | None = None) -> int:
    """Call ``main(argv)`` and map every failure to one line and an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return main(args)
    except errors.ToolkitError as exc:
        fail_line(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        return exc.exit_code
    except KeyboardInterrupt:
        fail_line("interrupted")
        return errors.EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the edge: a bug becomes a log file, not a wall of text
        log = _write_crash_log()
        fail_line(f"internal error {type(exc).__name__}: {exc} (traceback saved to {log}; please report it)")
        return errors.EXIT_INTERNAL


def _write_crash_log() -> Path:
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"mlops_kit-crash-{stamp}-", suffix=".log")
    with open(fd, "w", encoding="utf-8") as fh:
        fh.write(traceback.format_exc())
    return Path(name)
