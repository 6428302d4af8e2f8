"""Windows Job Objects through ``ctypes`` (no pywin32): the processes of a job in one kernel object that ends them
all, grandchildren included, when it is closed or terminated.

Why: a GoCD agent cancels a task with TerminateProcess (or ``taskkill /T``, which follows parentage only), and a
process killed that way cleans nothing up, so a Jupyter kernel's own children, or a daemon whose parent has already
exited, would outlive the job. A job with ``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE`` is closed by Windows when the last
handle to it goes, which happens when the process holding it dies, however it dies; every process in the job is
then ended. Since Windows 8 a process's children join its job automatically, and jobs nest.

Two uses: :func:`contain_this_process` (every entry point, :mod:`mlops_kit.core.cli`: the tool and whatever it
starts, kernels included, end with it) and :class:`JobObject` per rehearsed GoCD job
(:mod:`mlops_kit.core.jobprocesses`: each started command is assigned; a cancel terminates the whole job).

The calls go through one seam, :data:`_KERNEL32` (tests: a fake recording every call), else the real ``kernel32``
on Windows; elsewhere there is nothing to do. The layouts are Microsoft's (winnt.h): on 64-bit Windows
``JOBOBJECT_EXTENDED_LIMIT_INFORMATION`` is 144 bytes.
"""

from __future__ import annotations

import ctypes
from typing import Any

from . import paths

DWORD = ctypes.c_uint32  # not ctypes.wintypes.DWORD: c_ulong, 8 bytes off Windows
LARGE_INTEGER = ctypes.c_int64
SIZE_T = ctypes.c_size_t  # also ULONG_PTR
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
JOB_OBJECT_BASIC_PROCESS_ID_LIST = 3  # JOBOBJECTINFOCLASS values
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION = 9
PROCESS_TERMINATE = 0x0001
PROCESS_SET_QUOTA = 0x0100
ERROR_ACCESS_DENIED = 5
TERMINATED_EXIT_CODE = 1  # what taskkill /F leaves as the exit code, and what TerminateJobObject is given
_MAX_IDS = 4096


class IO_COUNTERS(ctypes.Structure):  # Microsoft's names: the layout checks against winnt.h
    _fields_ = [(name, ctypes.c_uint64) for name in ("ReadOperationCount", "WriteOperationCount",
                                                      "OtherOperationCount", "ReadTransferCount",
                                                      "WriteTransferCount", "OtherTransferCount")]


class JOBOBJECT_BASIC_LIMIT_INFORMATION(ctypes.Structure):
    _fields_ = [("PerProcessUserTimeLimit", LARGE_INTEGER), ("PerJobUserTimeLimit", LARGE_INTEGER),
                ("LimitFlags", DWORD), ("MinimumWorkingSetSize", SIZE_T), ("MaximumWorkingSetSize", SIZE_T),
                ("ActiveProcessLimit", DWORD), ("Affinity", SIZE_T), ("PriorityClass", DWORD),
                ("SchedulingClass", DWORD)]


class JOBOBJECT_EXTENDED_LIMIT_INFORMATION(ctypes.Structure):
    _fields_ = [("BasicLimitInformation", JOBOBJECT_BASIC_LIMIT_INFORMATION), ("IoInfo", IO_COUNTERS),
                ("ProcessMemoryLimit", SIZE_T), ("JobMemoryLimit", SIZE_T), ("PeakProcessMemoryUsed", SIZE_T),
                ("PeakJobMemoryUsed", SIZE_T)]


class JOBOBJECT_BASIC_PROCESS_ID_LIST(ctypes.Structure):
    _fields_ = [("NumberOfAssignedProcesses", DWORD), ("NumberOfProcessIdsInList", DWORD),
                ("ProcessIdList", SIZE_T * _MAX_IDS)]


class JobObjectError(OSError):
    """A kernel32 call failed: ``function`` and Windows' error code (``winerror``)."""

    def __init__(self, function: str, code: int) -> None:
        super().__init__(f"{function} failed (Windows error {code}{': access denied' if code == 5 else ''})")
        self.function, self.winerror = function, code


_KERNEL32: Any = None  # the seam: tests set a fake with the same functions plus last_error()


class _Kernel32:
    """The real kernel32 with typed signatures; ``last_error`` is the one ctypes saved right after the call."""

    def __init__(self) -> None:
        from ctypes import wintypes

        api = ctypes.WinDLL("kernel32", use_last_error=True)  # type: ignore[attr-defined]
        handle, boolean, pointer = wintypes.HANDLE, wintypes.BOOL, ctypes.c_void_p
        for name, args, result in (
                ("CreateJobObjectW", [pointer, wintypes.LPCWSTR], handle),
                ("SetInformationJobObject", [handle, ctypes.c_int, pointer, DWORD], boolean),
                ("QueryInformationJobObject", [handle, ctypes.c_int, pointer, DWORD, pointer], boolean),
                ("OpenProcess", [DWORD, boolean, DWORD], handle),
                ("AssignProcessToJobObject", [handle, handle], boolean),
                ("TerminateJobObject", [handle, ctypes.c_uint], boolean),
                ("CloseHandle", [handle], boolean),
                ("GetCurrentProcess", [], handle)):
            function = getattr(api, name)
            function.argtypes, function.restype = args, result
            setattr(self, name, function)

    @staticmethod
    def last_error() -> int:
        return ctypes.get_last_error()  # type: ignore[attr-defined]


def _api() -> Any | None:
    if _KERNEL32 is not None:
        return _KERNEL32
    if not paths.is_windows():
        return None
    try:
        return _Kernel32()
    except (AttributeError, OSError):  # the seam says win32 on another system: no kernel32 here
        return None


class JobObject:
    """An anonymous job whose processes all end when it is closed (or this process dies) or terminated."""

    def __init__(self, api: Any) -> None:
        self.api = api
        self.handle = api.CreateJobObjectW(None, None)
        if not self.handle:
            raise JobObjectError("CreateJobObjectW", api.last_error())
        info = JOBOBJECT_EXTENDED_LIMIT_INFORMATION()
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not api.SetInformationJobObject(self.handle, JOB_OBJECT_EXTENDED_LIMIT_INFORMATION, ctypes.byref(info),
                                           ctypes.sizeof(info)):
            code = api.last_error()
            self.close()
            raise JobObjectError("SetInformationJobObject", code)

    def assign(self, pid: int) -> None:
        """Put process ``pid`` (and what it starts from now on) in the job."""
        process = self.api.OpenProcess(PROCESS_SET_QUOTA | PROCESS_TERMINATE, False, pid)
        if not process:
            raise JobObjectError("OpenProcess", self.api.last_error())
        try:
            self._assign(process)
        finally:
            self.api.CloseHandle(process)

    def assign_current(self) -> None:
        """Put this process in the job (its pseudo-handle needs no closing)."""
        self._assign(self.api.GetCurrentProcess())

    def _assign(self, process: Any) -> None:
        if not self.api.AssignProcessToJobObject(self.handle, process):
            raise JobObjectError("AssignProcessToJobObject", self.api.last_error())

    def process_ids(self) -> list[int]:
        """The processes in the job now (empty when Windows will not say)."""
        listing = JOBOBJECT_BASIC_PROCESS_ID_LIST()
        if not self.api.QueryInformationJobObject(self.handle, JOB_OBJECT_BASIC_PROCESS_ID_LIST, ctypes.byref(listing),
                                                  ctypes.sizeof(listing), None):
            return []
        return [int(listing.ProcessIdList[i]) for i in range(min(listing.NumberOfProcessIdsInList, _MAX_IDS))]

    def terminate(self, exit_code: int = TERMINATED_EXIT_CODE) -> None:
        """End every process in the job now (as TerminateProcess does: exit code 1, nothing cleaned up)."""
        if self.handle and not self.api.TerminateJobObject(self.handle, exit_code):
            raise JobObjectError("TerminateJobObject", self.api.last_error())

    def close(self) -> None:
        """Let go of the job: Windows ends whatever is still in it (KILL_ON_JOB_CLOSE)."""
        if self.handle:
            self.api.CloseHandle(self.handle)
            self.handle = None


def new_job() -> JobObject | None:
    """A job for a rehearsed GoCD job's processes; ``None`` off Windows."""
    api = _api()
    return JobObject(api) if api is not None else None


_CONTAINER: list[JobObject] = []  # this process's own job, held (never closed) for as long as it lives


def contain_this_process() -> str | None:
    """Put this process in a job that ends everything it started when it dies, however it dies (a GoCD cancel's
    TerminateProcess). Returns a warning when that is not possible (Windows 7 refuses to nest a job: the processes
    it starts may then outlive it), else ``None``; does nothing off Windows or when already done."""
    api = _api()
    if api is None or _CONTAINER:
        return None
    try:
        job = JobObject(api)
    except JobObjectError as exc:
        return f"no Job Object for this process ({exc}): processes it starts may outlive it if it is killed"
    try:
        job.assign_current()
    except JobObjectError as exc:
        job.close()
        return (f"this process cannot join a Job Object ({exc}; already in a job that does not allow nesting, as on "
                "Windows 7): processes it starts may outlive it if it is killed")
    _CONTAINER.append(job)
    return None
