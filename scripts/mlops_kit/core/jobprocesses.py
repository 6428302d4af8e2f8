"""Every process a job started, the ones that outlived their parent included, so that they end with the job.

A task that daemonizes (``sh -c '(setsid sh -c "sleep 1005 &")'``) leaves a process whose parent has exited: it is
no longer a descendant of the task, so a tree found by parentage misses it, and a GoCD agent leaves it running.
:class:`JobProcesses` finds it again, per job:

* **Linux**: the process that runs jobs becomes a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``, see
  :func:`subreaper`): an orphan of any of its descendants is re-parented to it rather than to PID 1, so the orphans
  are among its own children, where they can be found, ended and reaped (``waitpid``: no zombie left).
* **Which job an orphan belongs to**: the environment, which every child inherits. Each job's processes start with
  a cookie of its own in :data:`COOKIE_VARIABLE` (Jenkins' ProcessTreeKiller does the same with its build cookie). A
  session or a process group would not do: ``setsid`` is exactly what a daemon changes, and Jupyter starts kernels
  in a session of their own. Watching the tree would race with a parent that forks and exits in a millisecond. So
  one job's cancel never touches a concurrent job's processes, and an orphan is attributed whatever its session. A
  process that clears its environment *and* daemonizes escapes (it is said in the README).
* **Other POSIX systems** have no subreaper: the cookie is looked for among all of this user's processes.
* **Windows** (no environment inherited by force, no subreaper): a Job Object is the place for it
  (``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE``); :meth:`JobProcesses.adopt` is where a started process would join it.
  Until then ``taskkill /T`` ends the tree by parentage (:mod:`mlops_kit.core.proc`).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import uuid
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from . import paths

if TYPE_CHECKING:
    import subprocess

COOKIE_VARIABLE = "MLOPS_KIT_JOB_COOKIE"
_PR_SET_CHILD_SUBREAPER, _PR_GET_CHILD_SUBREAPER = 36, 37  # <linux/prctl.h>
_subreaper_lock = threading.Lock()
_subreaper_users = 0
_subreaper_before = False


def _prctl(option: int, value: Any) -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return int(libc.prctl(option, value, 0, 0, 0))


def _is_subreaper() -> bool:
    if not paths.is_linux():
        return False
    value = ctypes.c_int(0)
    return _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(value)) == 0 and bool(value.value)


@contextlib.contextmanager
def subreaper() -> Iterator[bool]:
    """This process is a child subreaper while the block runs (Linux only; elsewhere: False, nothing changes).
    Nested and concurrent uses share one flag, restored as it was once the last one ends."""
    global _subreaper_users, _subreaper_before
    if not paths.is_linux():
        yield False
        return
    with _subreaper_lock:
        if _subreaper_users == 0:
            _subreaper_before = _is_subreaper()
            _prctl(_PR_SET_CHILD_SUBREAPER, 1)
        _subreaper_users += 1
    try:
        yield _is_subreaper()
    finally:
        with _subreaper_lock:
            _subreaper_users -= 1
            if _subreaper_users == 0 and not _subreaper_before:
                _prctl(_PR_SET_CHILD_SUBREAPER, 0)


class JobProcesses:
    """The processes of one job: the commands it started (``adopt``) and every process carrying its cookie."""

    def __init__(self) -> None:
        self.cookie = uuid.uuid4().hex
        self._started: dict[int, subprocess.Popen[Any]] = {}

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` for a process of this job: its cookie added (after any the caller had, for a rehearsal run
        inside another job, so the outer job still finds them)."""
        outer = env.get(COOKIE_VARIABLE, "").split()
        return {**env, COOKIE_VARIABLE: " ".join([*outer, self.cookie])}

    def adopt(self, popen: subprocess.Popen[Any]) -> None:
        """A command this job started (ended through its own handle; on Windows, the Job Object's slot)."""
        self._started[popen.pid] = popen

    def strays(self) -> list[Any]:
        """The job's processes that are no longer in the tree of a command it started: orphans re-parented to this
        process (Linux, as subreaper), or anywhere among this user's processes (other POSIX systems)."""
        import psutil

        if paths.is_windows():
            return []
        candidates = psutil.Process().children() if _is_subreaper() else psutil.process_iter()
        found = []
        for process in candidates:
            started = self._started.get(process.pid)
            if process.pid == os.getpid() or (started is not None and started.poll() is None):
                continue  # a command of the job still running: ended through its own handle (its pid, not reused)
            with contextlib.suppress(psutil.Error):
                if self.cookie in process.environ().get(COOKIE_VARIABLE, "").split():
                    found.append(process)
        return found


def reap(processes: Iterator[Any] | list[Any]) -> None:
    """Collect the exit status of those that are this process's own dead children (orphans it adopted as
    subreaper), so they do not stay zombies. Only those: a child's pid cannot be reused before it is reaped, and no
    one else waits for an orphan."""
    import psutil

    me = os.getpid()
    for process in processes:
        with contextlib.suppress(psutil.Error, ChildProcessError, OSError):
            if process.ppid() == me and process.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(process.pid, os.WNOHANG)
