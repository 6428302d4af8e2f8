"""The one helper for running subprocesses: never ``shell=True``, always a list of arguments.

It either captures output (for short queries such as ``python -c ...``) or streams it line by line to the
console (for long installs, so a user or a GoCD log sees progress) while keeping a tail for error messages.

A program that cannot be started is an exit code, as a shell would give it: 127 (not found) or 126 (not executable,
wrong format). With ``check=True`` that is a :class:`CommandError` like any failure; with ``check=False`` the caller
gets the :class:`Result` and decides (a GoCD task then fails like any other; it never aborts the caller).

:func:`start` is for a caller that may have to stop a command early (a rehearsed GoCD job past its timeout): it
returns a :class:`Started` handle whose :meth:`Started.kill_tree` ends the command with every process it started,
the way a GoCD agent cancels a job. That is the one platform branch here, :func:`_end_tree_windows` /
:func:`_end_tree_posix`:

* POSIX: the tree is the command's descendants, listed before anything is signalled (``psutil``, the same set GoCD's
  agent takes with ``ProcessHandle.descendants()``). Listing by parentage, not by process group, matters: Jupyter
  starts kernels in a session of their own (``start_new_session=True``), so a process-group kill would miss them.
  Each gets SIGTERM (GoCD's ``destroy()``), the listing is repeated while they exit (children started meanwhile are
  caught too), and whatever is left after the grace period gets SIGKILL.
* Windows: ``taskkill /PID <pid> /T /F``: the process and all processes started by it, forcefully (GoCD's
  ``destroy()`` is TerminateProcess there; Windows has no SIGTERM a console program would see).

A process that left the tree before the kill (a daemon that detached itself and whose parent exited) is not in it.
Given the :class:`~mlops_kit.core.jobprocesses.JobProcesses` of the job that started the command, the POSIX branch
ends those too, listed with the tree each round; :func:`end_strays` ends them once the job's commands are done.
"""

from __future__ import annotations

import collections
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from . import paths
from .errors import ToolkitError
from .jobprocesses import JobProcesses, reap

_TAIL_LINES = 40
_DRAIN_SECONDS = 5.0  # after a command exited: how long to wait for the end of its output (see Started.wait)
_POLL_SECONDS = 0.1


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
    Raises :class:`CommandError` when ``check`` and the exit code is not 0, a program that cannot be started
    (missing: 127; not executable, wrong format: 126) included; with ``check=False`` those are returned as the
    :class:`Result`. A captured run past its ``timeout`` always raises.
    """
    if stream and timeout is not None:
        raise ValueError("proc.run: timeout is not supported with stream=True")
    args = (str(cmd),) if isinstance(cmd, WindowsCommandLine) else tuple(os.fspath(c) for c in cmd)
    launch = cmd if isinstance(cmd, WindowsCommandLine) else args
    try:
        if stream:
            started = _launch(args, launch, env=env, cwd=cwd, echo=echo or _echo_stderr)
            code = started.wait()
            text = "".join(started.tail)
            return _check(Result(args, code if code is not None else -1, text, text if code else ""), check)
        done = subprocess.run(
            launch, env=dict(env) if env is not None else None, cwd=cwd, capture_output=True,
            text=True, encoding="utf-8", errors="replace", timeout=timeout, stdin=subprocess.DEVNULL,
        )
    except OSError as exc:
        return _check(_not_started(args, exc), check)
    except subprocess.TimeoutExpired as exc:
        raise CommandError(Result(args, -1, "", f"timed out after {exc.timeout:g}s")) from None
    return _check(Result(args, done.returncode, done.stdout, done.stderr), check)


def _not_started(args: tuple[str, ...], exc: OSError) -> Result:
    """What a shell answers for a program it cannot start: 127 not found, 126 anything else (not executable,
    "exec format error", "not a valid Win32 application")."""
    if isinstance(exc, FileNotFoundError):
        return Result(args, 127, "", f"executable not found: {exc.filename or args[0]}")
    return Result(args, 126, "", f"cannot start {args[0]}: {exc}")


def _check(result: Result, check: bool) -> Result:
    if check and result.returncode != 0:
        raise CommandError(result)
    return result


def _echo_stderr(line: str) -> None:
    sys.stderr.write(line)
    sys.stderr.flush()


@dataclass
class Started:
    """A running command whose merged stdout/stderr a reader thread hands to ``echo`` line by line."""

    popen: subprocess.Popen[str]
    args: tuple[str, ...]
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=_TAIL_LINES))
    detached: threading.Event = field(default_factory=threading.Event)
    reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    def wait(self, stop: Callable[[], bool] | None = None) -> int | None:
        """The exit code; ``None`` as soon as ``stop()`` is true while it still runs (the caller then ends it with
        :meth:`kill_tree`). Once the command exited, its output is read to the end, but not for ever: a process it
        left running may hold the pipe open, and after :data:`_DRAIN_SECONDS` of that the output is let go."""
        while True:
            try:
                code = self.popen.wait(timeout=_POLL_SECONDS if stop is not None else None)
                break
            except subprocess.TimeoutExpired:
                if stop is not None and stop():
                    return None
        self._drain()
        return code

    def kill_tree(self, grace: float, job: JobProcesses | None = None) -> int:
        """End the command and every process it started, with the processes ``job`` left behind (see the module
        docstring); returns its exit code as a Java-based agent reports it (128 + signal for a signalled process)."""
        if paths.is_windows():
            _end_tree_windows(self.popen, grace)
        else:
            _end_tree_posix(self.popen, grace, job)
        self._drain()
        code = self.popen.returncode
        return 128 - code if code is not None and code < 0 else code or 0

    def _drain(self) -> None:
        if self.reader is not None:
            self.reader.join(timeout=_DRAIN_SECONDS)
        self.detached.set()  # a reader still blocked on a pipe held by a stray process stops echoing


def start(cmd: Sequence[str | os.PathLike[str]] | WindowsCommandLine, *, env: Mapping[str, str] | None = None,
          cwd: Path | None = None, echo: Callable[[str], None] | None = None,
          job: JobProcesses | None = None) -> Started | Result:
    """Start ``cmd`` (never through a shell), its output streamed to ``echo``; a :class:`Result` with exit code
    127/126 when it cannot be started. With ``job``, the command and everything it starts belong to that job."""
    args = (str(cmd),) if isinstance(cmd, WindowsCommandLine) else tuple(os.fspath(c) for c in cmd)
    launch = cmd if isinstance(cmd, WindowsCommandLine) else args
    if job is not None:
        env = job.environment(os.environ if env is None else env)
    try:
        started = _launch(args, launch, env=env, cwd=cwd, echo=echo or _echo_stderr)
    except OSError as exc:
        return _not_started(args, exc)
    if job is not None:
        job.adopt(started.popen)
    return started


def end_strays(job: JobProcesses, grace: float) -> list[str]:
    """End what ``job`` left running once its commands are done (SIGTERM, SIGKILL after ``grace``); returns a
    description of each (pid and command line) for the job's log."""
    import psutil

    found = job.strays()
    described = []
    for process in found:
        with contextlib.suppress(psutil.Error):
            described.append(f"{process.pid} {format_cmd(process.cmdline())[:120]}")
    if found:
        _end_tree_posix(None, grace, job)
    return described


def _launch(args: tuple[str, ...], launch: tuple[str, ...] | str, *, env: Mapping[str, str] | None,
            cwd: Path | None, echo: Callable[[str], None]) -> Started:
    popen = subprocess.Popen(
        launch, env=dict(env) if env is not None else None, cwd=cwd, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, text=True, encoding="utf-8", errors="replace",
    )
    started = Started(popen, args)
    started.reader = threading.Thread(target=_pump, args=(started, echo), daemon=True, name=f"output-{popen.pid}")
    started.reader.start()
    return started


def _pump(started: Started, echo: Callable[[str], None]) -> None:
    stream = started.popen.stdout
    assert stream is not None
    with stream:
        for line in stream:
            if started.detached.is_set():
                return
            started.tail.append(line)
            echo(line)


# ---------------------------------------------------------------------------------------- ending a process tree


def _end_tree_windows(popen: subprocess.Popen[Any], grace: float) -> None:
    """``taskkill /T /F``: the process and the processes it started, at once (exit 128: already gone)."""
    try:
        result = run(["taskkill", "/PID", str(popen.pid), "/T", "/F"], check=False, timeout=max(grace, 30))
    except CommandError as exc:  # taskkill itself hung: at least the command goes (below)
        result = exc.result
    if result.returncode not in (0, 128):
        _echo_stderr(f"taskkill /PID {popen.pid} /T /F failed ({result.returncode}): "
                     f"{(result.stdout + result.stderr).strip()}\n")
    try:
        popen.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        popen.kill()
        popen.wait()


def _end_tree_posix(popen: subprocess.Popen[Any] | None, grace: float, job: JobProcesses | None) -> None:
    """SIGTERM to the command and its descendants (listed first), to the job's strays and theirs, also to any
    started meanwhile, SIGKILL to what is left after ``grace`` seconds. Each process gets each signal once: a second
    SIGTERM would interrupt the clean-up the first one started. The command itself is our child: signalled and
    reaped through ``popen``; strays adopted by this process (a subreaper) are reaped here."""
    tree: dict[int, Any] = {}
    sent: set[tuple[int, int]] = set()
    sig = signal.SIGTERM
    deadline = time.monotonic() + grace
    while _signal_tree(popen, tree, sig, sent, job):
        time.sleep(_POLL_SECONDS)
        if time.monotonic() >= deadline:
            sig = signal.SIGKILL
    if popen is not None:
        popen.wait()
    reap(list(tree.values()))


def _signal_tree(popen: subprocess.Popen[Any] | None, tree: dict[int, Any], sig: int, sent: set[tuple[int, int]],
                 job: JobProcesses | None) -> bool:
    """Add the job's strays, the descendants of the command and of every process already in ``tree`` (one that
    lost its parent meanwhile stays known), send ``sig`` to those not sent it yet; False when nothing is left
    running."""
    import psutil

    for stray in job.strays() if job is not None else ():
        tree.setdefault(stray.pid, stray)
    for pid in [*([popen.pid] if popen is not None else []), *tree]:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process(pid).children(recursive=True):
                tree.setdefault(child.pid, child)
    running = [child for child in tree.values() if _running(child)]
    for child in running:
        if (child.pid, sig) not in sent:
            sent.add((child.pid, sig))
            with contextlib.suppress(psutil.Error):
                child.send_signal(sig)
    if popen is not None and popen.poll() is None:
        if (popen.pid, sig) not in sent:
            sent.add((popen.pid, sig))
            popen.send_signal(sig)
        return True
    return bool(running)


def _running(process: Any) -> bool:
    """Alive and not a zombie (a zombie is dead, waiting for its parent to read its exit code)."""
    import psutil

    try:
        return bool(process.is_running()) and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
