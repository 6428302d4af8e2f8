"""mlops_kit.core.jobprocesses: a job's processes, orphans included, found by the job's cookie and ended with it
(Linux: they come back to the rehearsal, a child subreaper, which reaps them)."""

from __future__ import annotations

import sys
import time

import psutil
import pytest

from helpers_gocd import TEST_TAG, nothing_left_running, tagged_processes
from mlops_kit.core import jobprocesses, paths, proc

LINUX = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a child subreaper is Linux's")


@LINUX
def test_subreaper_is_on_while_used_and_restored_after() -> None:
    assert not jobprocesses._is_subreaper()
    with jobprocesses.subreaper() as outer:
        with jobprocesses.subreaper() as inner:
            assert outer and inner and jobprocesses._is_subreaper()
        assert jobprocesses._is_subreaper(), "still on for the outer user"
    assert not jobprocesses._is_subreaper()


def test_elsewhere_there_is_no_subreaper_and_no_stray_search(monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows (through the platform seam): Job Objects are the way there; nothing here changes the process."""
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    with jobprocesses.subreaper() as on:
        assert on is False
    assert jobprocesses.JobProcesses().strays() == []


def test_a_jobs_cookie_comes_after_an_outer_jobs() -> None:
    """A rehearsal run inside another job's task: the outer job still recognises everything."""
    outer, inner = jobprocesses.JobProcesses(), jobprocesses.JobProcesses()
    env = inner.environment(outer.environment({"A": "1"}))
    assert env == {"A": "1", jobprocesses.COOKIE_VARIABLE: f"{outer.cookie} {inner.cookie}"}


def _orphan(job: jobprocesses.JobProcesses, env: dict[str, str], seconds: str) -> psutil.Process:
    """Start ``sleep <seconds>`` the way a daemon leaves: its parent gone, in a session of its own."""
    started = proc.start(["sh", "-c", f'(setsid sh -c "sleep {seconds} &")'], env=env, job=job,
                         echo=lambda _: None)
    assert isinstance(started, proc.Started) and started.wait() == 0
    deadline = time.monotonic() + 30
    while not (found := tagged_processes(env[TEST_TAG], ["sleep", seconds])):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return found[0]


@LINUX
def test_each_job_finds_and_ends_its_own_orphans_only_and_reaps_them() -> None:
    mine, theirs = jobprocesses.JobProcesses(), jobprocesses.JobProcesses()
    with nothing_left_running() as env, jobprocesses.subreaper():
        my_orphan, their_orphan = _orphan(mine, env, "1007"), _orphan(theirs, env, "1008")
        assert my_orphan.ppid() == their_orphan.ppid() == psutil.Process().pid, "re-parented to the subreaper"
        assert [p.pid for p in mine.strays()] == [my_orphan.pid]
        ended = proc.end_strays(mine, grace=5)
        assert ended == [f"{my_orphan.pid} sleep 1007"]
        with pytest.raises(psutil.NoSuchProcess):  # gone and reaped: not even a zombie is left
            my_orphan.status()
        assert their_orphan.is_running() and [p.pid for p in theirs.strays()] == [their_orphan.pid]
        assert proc.end_strays(theirs, grace=5) == [f"{their_orphan.pid} sleep 1008"]
        assert proc.end_strays(theirs, grace=5) == [], "nothing left"
