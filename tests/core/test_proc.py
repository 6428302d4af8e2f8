"""mlops_kit.core.proc: programs that cannot start are exit codes 126/127 (never an OSError traceback); a started
command can be stopped with its whole process tree."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import psutil
import pytest
from fakes.taskkill import make_taskkill

from helpers import WINDOWS
from helpers_gocd import PROCESS_TREE, TREE_ROLES
from mlops_kit.core import paths, proc


def not_executable(tmp_path: Path) -> Path:
    path = tmp_path / "python"
    path.write_text("not a program\n")
    path.chmod(0o644)
    return path


def wrong_format(tmp_path: Path) -> Path:
    path = tmp_path / "python.exe"
    path.write_bytes(b"\x00\x01garbage, no shebang, not ELF\n")  # "exec format error" (Windows: not a Win32 app)
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("make", [not_executable, wrong_format])
def test_program_that_cannot_start_is_a_command_error(tmp_path: Path, make, stream: bool) -> None:
    exe = make(tmp_path)
    with pytest.raises(proc.CommandError) as info:
        proc.run([exe, "-c", "pass"], stream=stream, echo=lambda _line: None)
    assert info.value.result.returncode == 126 and str(exe) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("stream", [False, True])
def test_missing_program_is_127(tmp_path: Path, stream: bool) -> None:
    with pytest.raises(proc.CommandError) as info:
        proc.run([tmp_path / "nope"], stream=stream, echo=lambda _line: None)
    assert info.value.result.returncode == 127 and "executable not found" in str(info.value)


@pytest.mark.parametrize("stream", [False, True])
def test_check_false_returns_126_or_127_when_it_cannot_start(tmp_path: Path, stream: bool) -> None:
    """A program that cannot start (not executable, wrong format, missing) gives the shell's codes 126/127 to a
    caller that checks the code itself (a GoCD task), never an exception."""
    for path, code in ((not_executable(tmp_path), 126), (wrong_format(tmp_path), 126), (tmp_path / "nope", 127)):
        done = proc.run([path], check=False, stream=stream, echo=lambda _line: None)
        assert done.returncode == code and str(path) in done.stderr
        started = proc.start([path], echo=lambda _line: None)
        assert isinstance(started, proc.Result) and started.returncode == code


def test_capture_and_stream_real_output() -> None:
    done = proc.run([sys.executable, "-c", "print('hi')"])
    assert (done.returncode, done.stdout.strip()) == (0, "hi")
    lines: list[str] = []
    code = "import sys; print('a'); print('b', file=sys.stderr); sys.exit(3)"
    streamed = proc.run([sys.executable, "-u", "-c", code], stream=True, check=False, echo=lines.append)
    assert streamed.returncode == 3 and [line.strip() for line in lines] == ["a", "b"]


def test_timeout_on_captured_run_and_refused_with_stream() -> None:
    with pytest.raises(proc.CommandError, match="timed out after 0.5s"):
        proc.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    with pytest.raises(ValueError, match="stream=True"):
        proc.run([sys.executable, "-c", "pass"], stream=True, timeout=5)


def _start_tree(tmp_path: Path) -> tuple[proc.Started, list[int], list[str]]:
    script = tmp_path / "tree.py"
    script.write_text(PROCESS_TREE)
    lines: list[str] = []
    started = proc.start([sys.executable, script, tmp_path, "task"], echo=lines.append)
    assert isinstance(started, proc.Started)
    deadline = time.monotonic() + 60
    while not (tmp_path / "grandchild.pid").is_file():
        assert time.monotonic() < deadline and started.popen.poll() is None, lines
        time.sleep(0.05)
    time.sleep(0.2)  # the pid file is written before the grandchild's sleep: let it get there
    pids = [int((tmp_path / f"{role}.pid").read_text()) for role in TREE_ROLES]
    return started, pids, lines


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_kill_tree_ends_descendants_in_other_sessions_too(tmp_path: Path) -> None:
    """A process-group kill would miss the 'kernel' (its own session): the tree is found by parentage."""
    started, pids, lines = _start_tree(tmp_path)
    assert started.wait(stop=lambda: True) is None, "stop() asked: wait returns without an exit code"
    code = started.kill_tree(grace=5)
    # POSIX: SIGTERM, reported as a Java-based agent does (128 + 15); Windows: taskkill /F is TerminateProcess,
    # which leaves exit code 1
    assert code == (1 if WINDOWS else 143)
    assert all(_gone(pid) for pid in pids), [(p, _gone(p)) for p in pids]
    assert sorted(line.split()[0] for line in lines) == ["grandchild", "kernel", "task"]


def test_kill_tree_hard_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "stubborn.py"
    script.write_text("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('x', flush=True); "
                      "time.sleep(600)")
    lines: list[str] = []
    started = proc.start([sys.executable, script], echo=lines.append)
    assert isinstance(started, proc.Started)
    while not lines:
        time.sleep(0.05)
    assert started.kill_tree(grace=0.5) == (1 if WINDOWS else 128 + 9)  # SIGKILL; Windows: taskkill /F, exit 1


def test_kill_tree_on_windows_is_taskkill_tree_force(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The Windows branch, through the paths._PLATFORM seam, against a fake taskkill (tests/fakes/taskkill.py)."""
    log = make_taskkill(tmp_path / "bin")
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path / "bin"), os.environ["PATH"]]))
    started, pids, _ = _start_tree(tmp_path)
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    code = started.kill_tree(grace=5)
    calls = [json.loads(line) for line in log.read_text().splitlines()]
    assert calls == [["/PID", str(pids[0]), "/T", "/F"]]
    assert all(_gone(pid) for pid in pids), [(pid, _gone(pid)) for pid in pids]
    assert code == 128 + 9  # the fake's "forcefully" is SIGKILL; on Windows taskkill /F leaves exit code 1


def test_kill_tree_on_windows_then_terminates_the_job_object(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With the job that started it: taskkill /T as GoCD does, then the Job Object ends what left the tree."""
    from fakes.kernel32 import FakeKernel32

    from mlops_kit.core import jobprocesses, winjob

    log = make_taskkill(tmp_path / "bin")
    monkeypatch.setenv("PATH", os.pathsep.join([str(tmp_path / "bin"), os.environ["PATH"]]))
    kernel32 = FakeKernel32()
    monkeypatch.setattr(winjob, "_KERNEL32", kernel32)
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    job = jobprocesses.JobProcesses()
    started = proc.start([sys.executable, "-c", "import time; time.sleep(60)"], echo=lambda _line: None, job=job)
    assert isinstance(started, proc.Started)
    started.kill_tree(grace=5, job=job)
    assert [json.loads(line) for line in log.read_text().splitlines()] == [["/PID", str(started.pid), "/T", "/F"]]
    assert kernel32.names()[-1] == "TerminateJobObject" and kernel32.calls[-1][1][1] == 1  # exit code 1, as taskkill


def test_a_finished_command_whose_leftover_holds_the_pipe_does_not_hang(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """A task that leaves a background process holding its output: the task's end is not held up for ever."""
    monkeypatch.setattr(proc, "_DRAIN_SECONDS", 0.5)
    code = ("import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']); "
            "print(p.pid, flush=True)")
    lines: list[str] = []
    started = proc.start([sys.executable, "-c", code], echo=lines.append)
    assert isinstance(started, proc.Started)
    begin = time.monotonic()
    assert started.wait() == 0
    assert time.monotonic() - begin < 20
    psutil.Process(int(lines[0])).kill()


# ------------------------------------------------------------------------------ the child environment (issue 22)


def test_children_get_utf8_unless_the_user_chose_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONUTF8", raising=False)
    monkeypatch.delenv("PYTHONIOENCODING", raising=False)
    probe = [sys.executable, "-c",
             "import sys; print(sys.flags.utf8_mode, sys.stdout.encoding); print('café ✓ 日本')"]
    done = proc.run(probe, env={"PATH": os.environ["PATH"], "LANG": "C", "LC_ALL": "C"})
    assert done.stdout.splitlines() == ["1 utf-8", "café ✓ 日本"]
    env = proc.child_environment({"PYTHONUTF8": "0", "PYTHONIOENCODING": "latin-1"})
    assert (env["PYTHONUTF8"], env["PYTHONIOENCODING"]) == ("0", "latin-1")
    assert proc.child_environment({})["PYTHONUTF8"] == "1" and proc.utf8_defaults({"PYTHONUTF8": ""}) == \
        {"PYTHONIOENCODING": "utf-8"}


def test_windows_names_are_case_insensitive(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    env = proc.child_environment({"PythonUtf8": "0", "Path": "C:\\Windows"})
    assert "PYTHONUTF8" not in env and env["PythonUtf8"] == "0" and env["PYTHONIOENCODING"] == "utf-8"


def test_a_service_account_s_children_keep_uv_out_of_its_profile(monkeypatch: pytest.MonkeyPatch,
                                                                 tmp_path: Path) -> None:
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    monkeypatch.setenv("USERPROFILE", "C:\\Windows\\system32\\config\\systemprofile")
    monkeypatch.setenv("ProgramData", str(tmp_path))
    monkeypatch.delenv("UV_CACHE_DIR", raising=False)
    assert proc.child_environment({})["UV_CACHE_DIR"] == str(tmp_path / "mlops_kit" / "uv-cache")
    assert proc.child_environment({"uv_cache_dir": "D:\\cache"})["uv_cache_dir"] == "D:\\cache"
    assert "UV_CACHE_DIR" not in proc.child_environment({"uv_cache_dir": "D:\\cache"})


def test_a_rehearsed_task_gets_the_environment_exactly_as_given(tmp_path: Path) -> None:
    lines: list[str] = []
    code = "import os; print(sorted(k for k in os.environ if k.startswith('PYTHONIO')))"
    started = proc.start([sys.executable, "-c", code],
                         env={"PATH": os.environ["PATH"]}, echo=lines.append)
    assert not isinstance(started, proc.Result) and started.wait() == 0
    assert lines == ["[]\n"]
