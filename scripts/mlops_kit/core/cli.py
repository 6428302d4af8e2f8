"""The edge every entry point goes through: one line per failure, a documented exit code, no traceback, a console
that never raises on a character its code page cannot show (replaced by ``?``), and, on Windows, a Job Object
holding the tool and everything it starts, so a tool killed with TerminateProcess (a GoCD cancel) takes its
kernels and their children with it (:mod:`mlops_kit.core.winjob`; on Linux kernels watch their parent, and a
rehearsal is a child subreaper).

Usage in ``scripts/<tool>.py``::

    def main(argv: list[str] | None = None) -> int:
        return cli.run(_main, argv)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import os
import signal
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from . import console, errors, winjob
from .redact import redact, register_environment


def exit_codes_help() -> str:
    """The ``exit codes:`` block of every ``--help``, from :data:`errors.EXIT_CODES`."""
    return "exit codes:\n" + "".join(f"  {code:<4} {meaning}\n" for code, meaning in errors.EXIT_CODES)


class ArgParser(argparse.ArgumentParser):
    """argparse with exit code 2 and a one-line message naming the tool, plus exit codes in ``--help``."""

    def __init__(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        kwargs.setdefault("epilog", exit_codes_help())
        super().__init__(**kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise errors.BadInput(f"{self.prog}: {message} (see --help)")


def _terminate(_signum: int, _frame: Any) -> None:
    raise errors.Terminated()


def run(main: Callable[[list[str]], int], argv: Sequence[str] | None = None, *,
        on_failure: Callable[[str, int], None] | None = None) -> int:
    """Call ``main(argv)`` and map every failure to one line and an exit code; ``on_failure(line, code)`` is told
    too (a tool whose output is a document, ``doctor.py --json``, still prints one). The secrets of the environment
    are known (masked) from the start."""
    console.tolerate_unprintable()  # a cp1252 console (a Windows agent's pipe) never turns a path into a crash
    refused = winjob.contain_this_process()  # Windows: what the tool starts (kernels too) dies with it, however
    if refused:
        console.warn(refused)
    args = list(sys.argv[1:] if argv is None else argv)
    register_environment(os.environ)  # secure variables and credentials: masked in whatever the tool writes
    previous = _install(signal.SIGTERM, _terminate)
    try:
        return main(args)
    except errors.ToolkitError as exc:
        line, code = (str(exc).splitlines()[0] if str(exc) else type(exc).__name__), exc.exit_code
    except errors.Terminated:
        line, code = "terminated (SIGTERM)", errors.EXIT_TERMINATED
    except KeyboardInterrupt:
        line, code = "interrupted", errors.EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the edge: a bug becomes a log file, not a wall of text
        log = write_crash_log()
        line = f"internal error {type(exc).__name__}: {exc} (traceback saved to {log}; please report it)"
        code = errors.EXIT_INTERNAL
    finally:
        if previous is not None:
            _install(signal.SIGTERM, previous)
    console.error(line)
    if on_failure is not None:
        on_failure(line, code)
    return code


def _install(signum: int, handler: Callable[[int, Any], None]) -> Any:
    """Install a handler where the platform and thread allow it (signals go to the main thread only)."""
    try:
        return signal.signal(signum, handler)
    except (ValueError, OSError):  # not the main thread (a test), or a platform without it
        return None


def write_crash_log() -> Path:
    """The traceback being handled, in a file named in the one line (a bug's report, not the user's screen)."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    fd, name = tempfile.mkstemp(prefix=f"mlops_kit-crash-{stamp}-", suffix=".log")
    with open(fd, "w", encoding="utf-8") as fh:
        fh.write(redact(traceback.format_exc()))  # an exception's message may hold a secret
    return Path(name)
