"""A fake ``kernel32`` for the Job Object calls of :mod:`mlops_kit.core.winjob`, built from Microsoft's documentation
(learn.microsoft.com: CreateJobObjectW, SetInformationJobObject, OpenProcess, AssignProcessToJobObject,
QueryInformationJobObject, TerminateJobObject, CloseHandle, GetCurrentProcess; "Job Objects"):

* functions return a handle or a nonzero BOOL on success, ``0`` on failure with the error for ``GetLastError``
  (read here through ``last_error()``, as the real wrapper reads ctypes' saved copy);
* ``GetCurrentProcess`` returns the pseudo-handle ``-1``; ``OpenProcess`` of a pid that does not exist fails with
  ERROR_INVALID_PARAMETER (87);
* ``AssignProcessToJobObject`` fails with ERROR_ACCESS_DENIED (5) for a process already in a job that does not allow
  nesting (Windows 7 and Server 2008 R2: ``fail_assign=5``);
* processes a job member starts belong to the job (Windows 8+: no breakaway): the fake counts a member's
  descendants, as psutil sees them, as members from the moment it looks;
* ``TerminateJobObject`` ends every member, and closing the last handle of a job limited with
  ``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`` does too ("TerminateProcess": here SIGKILL).

Every call is logged in ``calls`` as ``(name, args)``, a structure argument as the fields the test checks.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field
from typing import Any

import psutil

PSEUDO_CURRENT_PROCESS = -1
ERROR_INVALID_PARAMETER = 87


@dataclass
class _Job:
    limit_flags: int = 0
    members: set[int] = field(default_factory=set)
    closed: bool = False


class FakeKernel32:
    def __init__(self, *, fail_create: int = 0, fail_set: int = 0, fail_assign: int = 0) -> None:
        self.fail_create, self.fail_set, self.fail_assign = fail_create, fail_set, fail_assign
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.jobs: dict[int, _Job] = {}
        self.processes: dict[int, int] = {}  # process handle -> pid
        self._next = 0x100
        self._error = 0

    def _handle(self) -> int:
        self._next += 4
        return self._next

    def _fail(self, code: int) -> int:
        self._error = code
        return 0

    def last_error(self) -> int:
        return self._error

    # --- the functions winjob calls ------------------------------------------------------------------------------

    def CreateJobObjectW(self, attributes: Any, name: Any) -> int:
        self.calls.append(("CreateJobObjectW", (attributes, name)))
        if self.fail_create:
            return self._fail(self.fail_create)
        handle = self._handle()
        self.jobs[handle] = _Job()
        return handle

    def SetInformationJobObject(self, job: int, info_class: int, info: Any, size: int) -> int:
        structure = info._obj  # ctypes.byref(structure)
        flags = structure.BasicLimitInformation.LimitFlags
        self.calls.append(("SetInformationJobObject", (job, info_class, {"LimitFlags": flags}, size)))
        if self.fail_set:
            return self._fail(self.fail_set)
        self.jobs[job].limit_flags = flags
        return 1

    def OpenProcess(self, access: int, inherit: bool, pid: int) -> int:
        self.calls.append(("OpenProcess", (access, inherit, pid)))
        if not psutil.pid_exists(pid):
            return self._fail(ERROR_INVALID_PARAMETER)
        handle = self._handle()
        self.processes[handle] = pid
        return handle

    def GetCurrentProcess(self) -> int:
        self.calls.append(("GetCurrentProcess", ()))
        return PSEUDO_CURRENT_PROCESS

    def AssignProcessToJobObject(self, job: int, process: int) -> int:
        self.calls.append(("AssignProcessToJobObject", (job, process)))
        if self.fail_assign:
            return self._fail(self.fail_assign)
        pid = psutil.Process().pid if process == PSEUDO_CURRENT_PROCESS else self.processes[process]
        self.jobs[job].members.add(pid)
        return 1

    def QueryInformationJobObject(self, job: int, info_class: int, info: Any, size: int,
                                  returned: Any) -> int:
        self.calls.append(("QueryInformationJobObject", (job, info_class, size, returned)))
        pids = sorted(self._members(self.jobs[job]))
        listing = info._obj
        listing.NumberOfAssignedProcesses = listing.NumberOfProcessIdsInList = len(pids)
        for index, pid in enumerate(pids):
            listing.ProcessIdList[index] = pid
        assert size == ctypes.sizeof(listing)
        return 1

    def TerminateJobObject(self, job: int, exit_code: int) -> int:
        self.calls.append(("TerminateJobObject", (job, exit_code)))
        self._kill(self.jobs[job])
        return 1

    def CloseHandle(self, handle: int) -> int:
        self.calls.append(("CloseHandle", (handle,)))
        if handle in self.processes:
            del self.processes[handle]
        elif handle in self.jobs:
            job = self.jobs[handle]
            job.closed = True
            if job.limit_flags & 0x2000:  # JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
                self._kill(job)
        return 1

    # --- helpers --------------------------------------------------------------------------------------------

    def _members(self, job: _Job) -> set[int]:
        """The job's processes alive now: those assigned and what they started (which joined the job)."""
        for pid in list(job.members):
            try:
                job.members |= {child.pid for child in psutil.Process(pid).children(recursive=True)}
            except psutil.Error:
                pass
        return {pid for pid in job.members if _alive(pid)}

    def _kill(self, job: _Job) -> None:
        me = psutil.Process().pid
        for pid in self._members(job) - {me}:
            try:
                psutil.Process(pid).kill()
            except psutil.Error:
                pass

    def names(self) -> list[str]:
        return [name for name, _args in self.calls]


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
