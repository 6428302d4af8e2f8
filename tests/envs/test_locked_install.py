"""Installing exactly a lock (mlops_kit.envs.locked_install): real installs on two Pythons, with uv and with pip.

The slow tests build venvs on Python 3.10 and 3.12 from the session's real locks (helpers_locks.locked) and compare
their freeze with the lock; a lock is never edited in place, always copied.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest
from helpers_locks import (
    MINORS,
    OLD_PACKAGING,
    build_env,
    copy_stage,
    flip_hashes,
    freeze,
    make_venv,
    reseal,
    write_spec,
)
from packaging.utils import canonicalize_name

from mlops_kit.core.errors import BadInput, EnvBuildError
from mlops_kit.envs import audit, locked_install, lockfile
from mlops_kit.envs.spec import StageSpec


def test_verify_installed_lists_every_difference() -> None:
    freeze = "six==1.16.0\nattrs==25.1.0\npip==25.0\nmypkg @ file:///tmp/mypkg\nPyYAML==6.0\n"
    pins = {"six": "1.17.0", "pip": "25.0", "packaging": "24.2", "mypkg": "1.0", "pyyaml": "6.0.0"}
    assert locked_install.verify_installed(freeze, pins) == [
        "not locked attrs==25.1.0", "mypkg: installed mypkg @ file:///tmp/mypkg, locked 1.0",
        "missing packaging==24.2", "six: installed 1.16.0, locked 1.17.0"]
    assert locked_install.verify_installed("six==1.17.0\n", {"six": "1.17.0"}) == []


def test_the_hash_mismatch_is_found_however_long_the_installer_output() -> None:
    """uv lists every expected hash (dozens for numpy) after the mismatch line: proc keeps only a tail."""
    shown: list[str] = []
    uv_watch = locked_install._HashWatch(shown.append)
    for line in ["Resolved 50 packages\n", "error: Failed to download `numpy==2.5.5`\n",
                 "  cause: Hash mismatch for `numpy==2.5.5`\n", *[f"  sha256:{i:064x}\n" for i in range(60)]]:
        uv_watch(line)
    assert uv_watch.bad == ["numpy==2.5.5"] and len(shown) == 63 and not shown[0].endswith("\n")
    pip_watch = locked_install._HashWatch(lambda _l: None)
    for line in ["Collecting six==1.17.0 from https://x/six.whl\n",
                 "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. ...\n",
                 "    six==1.17.0 from https://x/six-1.17.0-py2.py3-none-any.whl (from -r s.lock.txt (line 9)):\n",
                 "        Expected sha256 00\n", "             Got        47\n"]:
        pip_watch(line)
    assert pip_watch.bad == ["six==1.17.0"]


@pytest.mark.slow
@pytest.mark.parametrize("minor", MINORS)
def test_lock_then_build_gives_a_venv_whose_freeze_is_the_lock(
        minor: str, locked: dict[str, StageSpec], pythons: dict[str, Path], tmp_path: Path) -> None:
    """Through the env builder: exactly the lock, recorded in env.json and copied into the audit bundle; the same
    lock reuses the venv."""
    spec = copy_stage(locked[minor], tmp_path / "specs")
    lock = lockfile.check_fresh(spec)
    assert lock.python == minor and lock.header["index"] == "https://pypi.org/simple"
    lines: list[str] = []
    result = build_env(spec, pythons[minor], tmp_path / "venvs", echo=lines.append)
    record = result.record
    assert result.action == "built" and not any("unpinned" in line for line in lines)
    pins = lockfile.pins_for_this_platform(lock, locked_install.marker_environment(result.python))
    frozen = dict(line.split("==") for line in record.freeze_file.read_text().split())
    assert {canonicalize_name(n): v for n, v in frozen.items()} == pins
    assert pins["packaging"] == OLD_PACKAGING and {"six", "pip", "ipykernel", "ipython"} <= set(pins)
    assert (record.lock.sha256, record.lock.python, record.lock.pins, record.lock.verified, record.lock.removed) == (
        lock.sha256, minor, len(pins), True, [])
    assert record.lock.path == str(lock.path) and record.lock_file.read_bytes() == lock.path.read_bytes()
    assert json.loads(record.env_file.read_text())["lock"]["sha256"] == lock.sha256
    subprocess.run([str(result.python), "-c", "import ipykernel, six, pip"], check=True)
    started = time.perf_counter()
    again = build_env(spec, pythons[minor], tmp_path / "venvs")
    print(f"reuse of a locked venv: {time.perf_counter() - started:.3f}s")
    assert again.action == "reused" and again.record == record


@pytest.mark.slow
def test_a_changed_lock_rebuilds_and_an_explicit_freeze_file_wins_over_the_lock(
        locked: dict[str, StageSpec], pythons: dict[str, Path], tmp_path: Path) -> None:
    spec = copy_stage(locked["3.12"], tmp_path / "specs")
    first = build_env(spec, pythons["3.12"], tmp_path / "venvs")
    path = lockfile.lock_path(spec.source)
    path.write_text(path.read_text().replace("# resolved-at: ", "# resolved-at: 1"))  # same pins, other bytes:
    reseal(path)  # a re-lock that refreshed the header only; still fresh, and another lock
    second = build_env(spec, pythons["3.12"], tmp_path / "venvs")
    assert (second.action, second.reason) == ("rebuilt", f"lock changed ({path})")
    assert second.record.lock.sha256 == lockfile.read_lock(path).sha256 != first.record.lock.sha256
    lines: list[str] = []
    frozen = build_env(spec, pythons["3.12"], tmp_path / "venvs", from_freeze=second.record.freeze_file,
                   echo=lines.append)
    assert frozen.action == "rebuilt" and "no longer installed from a lock" in frozen.reason
    assert f"--from-freeze {second.record.freeze_file} wins over the lock {path}: installing the freeze file's " \
           "pins" in lines
    assert frozen.record.lock is None and frozen.record.from_freeze is not None
    assert not frozen.record.lock_file.exists() and audit.LOCK_TXT not in [p.name for p in frozen.record.bundle]


@pytest.mark.slow
def test_a_seeded_venv_loses_what_is_not_locked_but_keeps_pip(
        locked: dict[str, StageSpec], pythons: dict[str, Path], tmp_path: Path) -> None:
    """``uv venv --seed`` puts setuptools and wheel in a 3.10 venv; ``uv pip sync`` keeps seed packages, so the
    toolkit removes them itself; pip is in the lock and stays (``%pip`` in Jupyter)."""
    venv = make_venv(pythons["3.10"], tmp_path / "venv", seed=True)
    done = locked_install.install_from_lock(locked["3.10"], venv, echo=lambda _m: None)
    assert {"setuptools", "wheel"} <= set(done.removed) and "pip" in done.pins
    assert locked_install.verify_installed(done.freeze, done.pins) == []


@pytest.mark.slow
def test_the_pip_fallback_refuses_a_flipped_hash_then_installs_exactly_the_lock(
        locked: dict[str, StageSpec], pythons: dict[str, Path], tmp_path: Path, pip_cache: Path) -> None:
    """``--installer pip`` (its venv made by ``python -m venv``: pip and, on 3.10, setuptools in it): ``pip install
    --require-hashes --no-deps``. A flipped hash installs nothing (exit 4); the good lock installs, setuptools is
    removed (not locked), the freeze verified. One venv for both (``python -m venv`` is the slow part); the uv
    path is shown through create_venv.py below."""
    stage = copy_stage(locked["3.10"], tmp_path / "stage")
    lock = lockfile.lock_path(stage.source)
    good = lock.read_bytes()
    flip_hashes(lock, "six")
    reseal(lock)  # a whole lock whose hashes are not those of the files the index serves
    venv = tmp_path / "venv"
    subprocess.run([str(pythons["3.10"]), "-m", "venv", str(venv)], check=True, capture_output=True)
    before = freeze(venv, "pip")
    with pytest.raises(EnvBuildError) as info:
        locked_install.install_from_lock(stage, venv, installer="pip", echo=lambda _m: None)
    message = str(info.value)
    assert info.value.exit_code == 4 and "\n" not in message
    assert message.startswith(f"{lock}: hash mismatch for six==1.17.0"), message
    assert freeze(venv, "pip") == before  # nothing installed from the tampered lock
    lock.write_bytes(good)
    done = locked_install.install_from_lock(stage, venv, installer="pip", echo=lambda _m: None)
    assert "setuptools" in done.removed and done.pins["packaging"] == OLD_PACKAGING
    assert locked_install.verify_installed(freeze(venv, "pip"), done.pins) == []


@pytest.mark.slow
def test_a_stale_lock_or_an_older_python_installs_nothing(
        locked: dict[str, StageSpec], pythons: dict[str, Path], tmp_path: Path) -> None:
    stage = copy_stage(locked["3.12"], tmp_path / "stage")
    venv = make_venv(pythons["3.12"], tmp_path / "venv")
    changed = write_spec(tmp_path / "stage", stage.source.stem, "3.12", ["six", "attrs"])
    with pytest.raises(BadInput) as info:
        locked_install.install_from_lock(changed, venv, echo=lambda _m: None)
    assert info.value.exit_code == 2 and "stale lock" in str(info.value) and "--lock" in str(info.value)
    assert freeze(venv) == ""
    old = make_venv(pythons["3.10"], tmp_path / "venv310")
    with pytest.raises(BadInput, match=r"resolved for Python 3\.12 and later, the venv has Python 3\.10"):
        locked_install.install_from_lock(stage, old, echo=lambda _m: None)
    assert freeze(old) == ""
