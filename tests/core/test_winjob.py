"""mlops_kit.core.winjob: the Job Object calls, their argument values and order, and their failures, against a fake
kernel32 (tests/fakes/kernel32.py: the ctypes code cannot run here), plus the structures' sizes as winnt.h has them
on 64-bit Windows. The fake's jobs hold real processes, so a rehearsed job's Windows branch runs end to end."""

from __future__ import annotations

import ctypes
import subprocess
import sys
import time

import psutil
import pytest
from fakes.kernel32 import PSEUDO_CURRENT_PROCESS, FakeKernel32

from mlops_kit.core import jobprocesses, paths, proc, winjob


@pytest.fixture()
def kernel32(monkeypatch: pytest.MonkeyPatch) -> FakeKernel32:
    fake = FakeKernel32()
    monkeypatch.setattr(winjob, "_KERNEL32", fake)
    monkeypatch.setattr(winjob, "_CONTAINER", [])
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    return fake


def test_structures_have_the_64_bit_layout_of_winnt_h() -> None:
    assert ctypes.sizeof(winjob.JOBOBJECT_BASIC_LIMIT_INFORMATION) == 64
    assert ctypes.sizeof(winjob.IO_COUNTERS) == 48
    assert ctypes.sizeof(winjob.JOBOBJECT_EXTENDED_LIMIT_INFORMATION) == 144
    assert winjob.JOBOBJECT_BASIC_LIMIT_INFORMATION.LimitFlags.offset == 16
    assert winjob.JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE == 0x2000 and winjob.JOB_OBJECT_EXTENDED_LIMIT_INFORMATION == 9


def test_a_job_is_created_kill_on_close_and_a_process_assigned_then_its_handle_closed(kernel32: FakeKernel32) -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        job = winjob.JobObject(kernel32)
        job.assign(child.pid)
        assert kernel32.calls[:2] == [("CreateJobObjectW", (None, None)),
                                      ("SetInformationJobObject", (job.handle, 9, {"LimitFlags": 0x2000}, 144))]
        (open_call, open_args), (assign_call, assign_args), (close_call, close_args) = kernel32.calls[2:5]
        assert (open_call, open_args) == ("OpenProcess", (0x0100 | 0x0001, False, child.pid))  # SET_QUOTA|TERMINATE
        process_handle = assign_args[1]
        assert (assign_call, assign_args[0]) == ("AssignProcessToJobObject", job.handle)
        assert (close_call, close_args) == ("CloseHandle", (process_handle,))  # the process handle, not the job
        assert job.process_ids() == [child.pid]
        handle = job.handle
        job.close()
        assert kernel32.calls[-1] == ("CloseHandle", (handle,))
        child.wait(timeout=10)  # KILL_ON_JOB_CLOSE: closing the last handle ended it
        # the fake ends it with SIGKILL (-9); on Windows, closing a KILL_ON_JOB_CLOSE job ends its processes with exit
        # code 0 (as TerminateProcess(0) would)
        assert child.returncode == -9
        job.close()  # once only
        assert kernel32.names().count("CloseHandle") == 2
    finally:
        child.kill()
        child.wait()


def test_assign_refused_as_windows_7_refuses_a_nested_job(kernel32: FakeKernel32) -> None:
    kernel32.fail_assign = winjob.ERROR_ACCESS_DENIED
    job = winjob.JobObject(kernel32)
    with pytest.raises(winjob.JobObjectError) as info:
        job.assign(psutil.Process().pid)
    assert (info.value.function, info.value.winerror) == ("AssignProcessToJobObject", 5)
    assert "AssignProcessToJobObject failed (Windows error 5: access denied)" in str(info.value)
    assert kernel32.names()[-2:] == ["AssignProcessToJobObject", "CloseHandle"]  # the process handle still closed


@pytest.mark.parametrize(("failing", "function"), [("fail_create", "CreateJobObjectW"),
                                                   ("fail_set", "SetInformationJobObject")])
def test_a_job_that_cannot_be_made_says_which_call_failed(kernel32: FakeKernel32, failing: str,
                                                          function: str) -> None:
    setattr(kernel32, failing, 1450)  # ERROR_NO_SYSTEM_RESOURCES
    with pytest.raises(winjob.JobObjectError, match=f"{function} failed .Windows error 1450"):
        winjob.JobObject(kernel32)
    if failing == "fail_set":
        assert kernel32.names()[-1] == "CloseHandle"  # the half-made job is let go of


def test_a_missing_process_cannot_be_opened(kernel32: FakeKernel32) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(winjob.JobObjectError, match="OpenProcess failed .Windows error 87"):
        winjob.JobObject(kernel32).assign(child.pid)


def test_every_tool_contains_itself_once(kernel32: FakeKernel32) -> None:
    assert winjob.contain_this_process() is None
    assert kernel32.names() == ["CreateJobObjectW", "SetInformationJobObject", "GetCurrentProcess",
                                "AssignProcessToJobObject"]
    assert kernel32.calls[-1][1][1] == PSEUDO_CURRENT_PROCESS  # the pseudo-handle: nothing to close
    assert winjob.contain_this_process() is None and len(kernel32.calls) == 4  # held for the process's life


def test_a_tool_that_cannot_join_a_job_warns_and_goes_on(kernel32: FakeKernel32,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    from mlops_kit.core import cli

    kernel32.fail_assign = winjob.ERROR_ACCESS_DENIED
    assert cli.run(lambda _argv: 0, []) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: this process cannot join a Job Object (AssignProcessToJobObject failed")
    assert "Windows 7" in err and err.count("\n") == 1
    assert kernel32.names()[-1] == "CloseHandle" and winjob._CONTAINER == []


def test_off_windows_nothing_is_done(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(winjob, "_CONTAINER", [])
    assert winjob.contain_this_process() is None and winjob.new_job() is None and winjob._CONTAINER == []
    monkeypatch.setattr(paths, "_PLATFORM", "win32")  # the seam says Windows, but there is no kernel32 here
    assert winjob.new_job() is None


# ------------------------------------------------------------------------ a rehearsed job's processes (Windows)


def test_a_windows_job_holds_its_commands_and_what_they_leave_behind(kernel32: FakeKernel32, tmp_path) -> None:
    """A task that leaves a process running: found in the job's Job Object, ended with it, the job let go of."""
    job = jobprocesses.JobProcesses()
    flag = tmp_path / "go"
    code = ("import os, subprocess, sys, time\n"
            "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); print(p.pid, flush=True)\n"
            f"while not os.path.exists({str(flag)!r}): time.sleep(0.05)\n")
    lines: list[str] = []
    started = proc.start([sys.executable, "-c", code], echo=lines.append, job=job)
    assert isinstance(started, proc.Started)
    assert kernel32.names()[:5] == ["CreateJobObjectW", "SetInformationJobObject", "OpenProcess",
                                    "AssignProcessToJobObject", "CloseHandle"]
    while not lines:
        time.sleep(0.05)
    leftover = int(lines[0])
    # Windows puts a member's children in the job as they start; the fake sees them when it looks (here, while
    # their parent still runs): from then on the child is the job's, whoever its parent is
    assert sorted(job._job.process_ids()) == sorted([started.pid, leftover])  # type: ignore[union-attr]
    flag.write_text("")
    assert started.wait() == 0
    assert [p.pid for p in job.strays()] == [leftover]
    assert proc.end_strays(job, grace=5)[0].startswith(f"{leftover} ")
    assert ("TerminateJobObject", (job._job.handle, 1)) in kernel32.calls  # type: ignore[union-attr]
    deadline = time.monotonic() + 10
    while psutil.pid_exists(leftover) and psutil.Process(leftover).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    job.close()
    assert kernel32.names()[-1] == "CloseHandle" and job.strays() == []


def test_a_windows_job_without_a_job_object_says_so_once(kernel32: FakeKernel32) -> None:
    kernel32.fail_assign = winjob.ERROR_ACCESS_DENIED
    job = jobprocesses.JobProcesses()
    for _ in range(2):
        started = proc.start([sys.executable, "-c", "pass"], echo=lambda _line: None, job=job)
        assert isinstance(started, proc.Started) and started.wait() == 0
    assert job.problem is not None and "taskkill /T alone ends its processes" in job.problem
    assert kernel32.names().count("AssignProcessToJobObject") == 1  # not retried for every command
