"""The stage lock file format (mlops_kit.envs.lockfile): parsing, malformed lines, the header, freshness, markers.

Hand-written locks (fake hashes, no network); the example specs' committed locks are checked in test_create_venv.py.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import pytest
from helpers_locks import FAKE, fake_lock, pin, write_spec

from mlops_kit.core.errors import BadInput
from mlops_kit.envs import lockfile
from mlops_kit.envs.spec import load_spec


def test_lock_path_and_the_spec_it_belongs_to() -> None:
    assert lockfile.lock_path(Path("specs/train.yaml")) == Path("specs/train.lock.txt")
    assert lockfile.spec_path_for(Path("specs/train.lock.txt")) == Path("specs/train.yaml")


def test_a_lock_parses_into_pins_with_hashes(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    path = fake_lock(spec, pin("six", "1.17.0") + pin("colorama", "0.4.6", "sys_platform == 'win32'", 1))
    lock = lockfile.read_lock(path)
    assert [(p.name, p.version, p.marker, len(p.hashes)) for p in lock.pins] == [
        ("six", "1.17.0", None, 2), ("colorama", "0.4.6", "sys_platform == 'win32'", 1)]
    assert lock.spec_hash == spec.content_hash() and lock.python == "3.12" and len(lock.sha256) == 64
    assert lock.pins[1].line == lock.pins[0].line + 4


@pytest.mark.parametrize("bad, problem", [
    ("<<<<<<< HEAD\n", "expected 'name==version"),
    ("six>=1.16 \\\n    --hash=sha256:" + FAKE + "\n", "expected 'name==version"),
    ("--index-url https://pypi.org/simple\n", "expected 'name==version"),
    ("six==1.17.0\n", "no --hash follows"),
    ("six==1.17.0 \\\n    --hash=sha256:abc\n", "continuation line"),
    ("six==1.17.0 ; sys_platform = 'win32' \\\n    --hash=sha256:" + FAKE + "\n", "Expected"),
    ("six==1.17.0 \\\n    --hash=sha256:" + FAKE + " \\\n", "cut off"),
])
def test_a_malformed_line_is_bad_input_naming_file_and_line(tmp_path: Path, bad: str, problem: str) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    path = fake_lock(spec, pin("attrs", "25.1.0") + bad)
    with pytest.raises(BadInput) as info:
        lockfile.read_lock(path)
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message
    assert f"{path}: line " in message and problem in message, message
    line = int(message.split(": line ")[1].split(":")[0])
    assert path.read_text().splitlines()[line - 1].strip()[:10] in message  # the line it names is the bad one


def test_a_missing_header_field_or_an_unknown_format_is_bad_input(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    with pytest.raises(BadInput, match=r"header field 'spec-hash' missing.*--spec .*stage\.yaml --lock"):
        lockfile.read_lock(fake_lock(spec, pin("six", "1.17.0"), **{"spec-hash": ""}))
    with pytest.raises(BadInput, match="lock format '9'"):
        lockfile.read_lock(fake_lock(spec, pin("six", "1.17.0"), **{"lock-format": "9"}))
    with pytest.raises(BadInput, match="pins no packages"):
        lockfile.read_lock(fake_lock(spec, ""))


def test_a_stale_or_missing_lock_is_one_line_naming_spec_lock_and_command(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    lock = lockfile.lock_path(spec.source)
    command = f"python scripts/create_venv.py --spec {spec.source.as_posix()} --lock"
    with pytest.raises(BadInput) as info:
        lockfile.check_fresh(spec)
    assert str(info.value) == f"{spec.source}: no lock {lock}; create it with: {command}"
    fake_lock(spec, pin("six", "1.17.0"))
    assert lockfile.check_fresh(spec).path == lock
    changed = write_spec(tmp_path, "stage", "3.12", ["six", "attrs"])
    with pytest.raises(BadInput) as info:
        lockfile.check_fresh(changed)
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message
    assert message.startswith(f"{spec.source}: stale lock {lock} (packages or index settings changed")
    assert message.endswith(f"refresh it with: {command}")
    with pytest.raises(BadInput, match=r"python_version changed from '3\.12' to '3\.11'"):
        lockfile.check_fresh(write_spec(tmp_path, "stage", "3.11", ["six", "attrs"]))


def test_check_fresh_takes_milliseconds_on_a_full_size_lock(tmp_path: Path) -> None:
    """A lock the size of the train stage's (about 50 pins, 1,200 lines): a generous ceiling, not a tight bound."""
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    body = "".join(pin(f"pkg{i}", f"1.{i}.0", "sys_platform == 'win32'" if i % 7 == 0 else "", hashes=22)
                   for i in range(50))
    fake_lock(spec, body)
    assert len(lockfile.lock_path(spec.source).read_text().splitlines()) > 1200
    times = []
    for _ in range(20):
        started = time.perf_counter()
        lockfile.check_fresh(load_spec(spec.source))  # the spec's own parse included, as --check-lock does it
        times.append(time.perf_counter() - started)
    print(f"check_fresh: median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
    assert statistics.median(times) < 0.1 and max(times) < 0.5


def test_pins_follow_the_markers_of_the_given_environment(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", ">=3.10,<3.13", ["ipykernel"])
    body = (pin("colorama", "0.4.6", "sys_platform == 'win32'") + pin("appnope", "1.0.0", "sys_platform == 'darwin'")
            + pin("ipykernel", "7.3.0", "python_full_version < '3.11'")
            + pin("ipykernel", "7.4.0", "python_full_version >= '3.11'") + pin("six", "1.17.0"))
    lock = lockfile.read_lock(fake_lock(spec, body, python="3.10"))
    windows_310 = {"sys_platform": "win32", "python_full_version": "3.10.11", "python_version": "3.10"}
    linux_312 = {"sys_platform": "linux", "python_full_version": "3.12.1", "python_version": "3.12"}
    assert lockfile.pins_for_this_platform(lock, windows_310) == {"colorama": "0.4.6", "ipykernel": "7.3.0",
                                                               "six": "1.17.0"}
    assert lockfile.pins_for_this_platform(lock, linux_312) == {"ipykernel": "7.4.0", "six": "1.17.0"}
    overlapping = lockfile.read_lock(fake_lock(spec, pin("six", "1.16.0") + pin("six", "1.17.0")))
    with pytest.raises(BadInput, match="six is pinned twice"):
        lockfile.pins_for_this_platform(overlapping)
