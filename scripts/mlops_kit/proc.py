"""The one helper for running subprocesses: never ``shell=True``, always a list of arguments.

It either captures output (for short queries such as ``python -c ...``) or streams it line by line to the
console (for long installs, so a user or a GoCD log sees progress) while keeping a tail for error messages.
"""

from __future__ import annotations

import collections
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from .errors import ToolkitError

_TAIL_LINES = 40


@dataclass(frozen=True)
class Result:
    """What a finished command returned."""

    cmd: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str


class CommandError(ToolkitError):
    """A command exited non-zero; the message shows the command, its code and the end of its output."""

    def __init__(self, result: Result, *, exit_code: int | None = None) -> None:
        self.result = result
        if exit_code is not None:
            self.exit_code = exit_code
        output = (result.stderr or result.stdout).strip().splitlines()
        tail = " | ".join(line.strip() for line in output[-3:] if line.strip())
        head = f"command failed (exit {result.returncode}): {format_cmd(result.cmd)}"
        super().__init__(head + (f": {tail}" if tail else ""))


class WindowsCommandLine(str):
    """A complete command line handed to CreateProcess as is (Windows only). It exists for one case:
    ``cmd /s /c "<command line>"``, how a GoCD Windows agent runs a task, whose outer quotes list2cmdline cannot
    express. Still no ``shell=True``: cmd.exe is named explicitly and the caller quotes every argument."""


def format_cmd(cmd: Sequence[str | os.PathLike[str]]) -> str:
    """Render a command for messages, quoting arguments that contain spaces."""
    return subprocess.list2cmdline([os.fspath(c) for c in cmd])


def run(
    cmd: Sequence[str | os.PathLike[str]] | WindowsCommandLine,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float | None = None,
    stream: bool = False,
    echo: Callable[[str], None] | None = None,
) -> Result:
    """Run ``cmd`` (a list, never through a shell) and return its :class:`Result`.

    ``stream=True`` copies the merged stdout/stderr to ``echo`` (default: our stderr) line by line as it comes,
    so long installs show progress; the returned ``stdout`` then holds the last lines only. ``timeout`` applies
    to captured runs only: a streamed run (an install) goes on as long as it needs, its output shows progress.
    Raises :class:`CommandError` when ``check`` and the exit code is not 0; a program that cannot be started
    (missing: 127; not executable, wrong format: 126) raises it too.
    """
    if stream and timeout is not None:
        raise ValueError("proc.run: timeout is not supported with stream=True")
    args = (str(cmd),) if isinstance(cmd, WindowsCommandLine) else tuple(os.fspath(c) for c in cmd)
    launch = cmd if isinstance(cmd, WindowsCommandLine) else args
    try:
        if stream:
            return _check(_run_streaming(args, launch, env=env, cwd=cwd, echo=echo or _echo_stderr), check)
        done = subprocess.run(
            launch, env=dict(env) if env is not None else None, cwd=cwd, capture_output=True,
            text=True, encoding="utf-8", errors="replace", timeout=timeout, stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError as exc:
        raise CommandError(Result(args, 127, "", f"executable not found: {exc.filename or args[0]}")) from None
    except OSError as exc:  # not executable, "exec format error", "not a valid Win32 application", ...
        raise CommandError(Result(args, 126, "", f"cannot start {args[0]}: {exc}")) from None
    except subprocess.TimeoutExpired as exc:
        raise CommandError(Result(args, -1, "", f"timed out after {exc.timeout:g}s")) from None
    return _check(Result(args, done.returncode, done.stdout, done.stderr), check)


def _check(result: Result, check: bool) -> Result:
    if check and result.returncode != 0:
        raise CommandError(result)
    return result


def _echo_stderr(line: str) -> None:
    sys.stderr.write(line)
    sys.stderr.flush()


def _run_streaming(
    args: tuple[str, ...], launch: tuple[str, ...] | str, *, env: Mapping[str, str] | None, cwd: Path | None,
    echo: Callable[[str], None],
) -> Result:
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    with subprocess.Popen(
        launch, env=dict(env) if env is not None else None, cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace",
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            echo(line)
            tail.append(line)
        code = child.wait()
    text = "".join(tail)
    return Result(args, code, text, text if code else "")
