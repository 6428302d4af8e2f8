"""mlops_kit.proc: real programs that cannot be started become one CommandError, never an OSError traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from mlops_kit import proc


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


def test_check_false_still_raises_when_it_cannot_start(tmp_path: Path) -> None:
    with pytest.raises(proc.CommandError):
        proc.run([not_executable(tmp_path)], check=False)


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
