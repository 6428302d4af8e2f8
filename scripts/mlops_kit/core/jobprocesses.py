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
* **Windows** (no subreaper; an environment is not inherited by force): a Job Object per job
  (:mod:`mlops_kit.core.winjob`, ``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE``). :meth:`JobProcesses.adopt` assigns each
  command the job starts; what it starts from then on joins the job too, whatever its parentage, so a daemon whose
  parent exited is still there. A cancel ends the tree with ``taskkill /T`` (what GoCD does) and then terminates the
  job; :meth:`JobProcesses.close` lets go of it, and Windows ends what is still in it. A command that starts
  children in the instant before it is assigned leaves those out (Popen gives no suspended start); a Windows 7 job
  that refuses nesting leaves the job to ``taskkill /T`` alone (said once in the job's log).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
import uuid
from typing import TYPE_CHECKING, Any, Iterator, Mapping

from . import paths, winjob

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
        self._job: winjob.JobObject | None = None  # Windows: created with the first command
        self.problem: str | None = None  # why the Job Object could not be used (said once in the job's log)

    def environment(self, env: Mapping[str, str]) -> dict[str, str]:
        """``env`` for a process of this job: its cookie added (after any the caller had, for a rehearsal run
        inside another job, so the outer job still finds them)."""
        outer = env.get(COOKIE_VARIABLE, "").split()
        return {**env, COOKIE_VARIABLE: " ".join([*outer, self.cookie])}

    def adopt(self, popen: subprocess.Popen[Any]) -> None:
        """A command this job started (ended through its own handle); on Windows it joins the job's Job Object."""
        self._started[popen.pid] = popen
        if paths.is_windows() and self.problem is None:
            try:
                self._job = self._job or winjob.new_job()
                if self._job is not None:
                    self._job.assign(popen.pid)
            except winjob.JobObjectError as exc:
                self.problem = f"no Job Object for this job ({exc}): taskkill /T alone ends its processes"

    def terminate(self) -> bool:
        """Windows: end every process in the job's Job Object now; False when there is none."""
        if self._job is None:
            return False
        with contextlib.suppress(winjob.JobObjectError):
            self._job.terminate()
        return True

    def close(self) -> None:
        """The job is over: let go of its Job Object (Windows then ends anything still in it)."""
        if self._job is not None:
            self._job.close()
            self._job = None

    def strays(self) -> list[Any]:
        """The job's processes that are no longer in the tree of a command it started: orphans re-parented to this
        process (Linux, as subreaper), anywhere among this user's processes (other POSIX systems), or in the job's
        Job Object (Windows)."""
        import psutil

        if paths.is_windows():
            return self._job_strays()
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


    def _job_strays(self) -> list[Any]:
        import psutil

        found = []
        for pid in self._job.process_ids() if self._job is not None else []:
            started = self._started.get(pid)
            if pid != os.getpid() and (started is None or started.poll() is not None):
                with contextlib.suppress(psutil.Error):
                    found.append(psutil.Process(pid))
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
