"""Resolving a spec into its lock (mlops_kit.envs.resolution): real resolutions with uv against the package index.

The slow tests use the session's real locks (helpers_locks.locked) and copies of them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers_locks import OLD_PACKAGING, copy_stage, drop_package, write_spec
from packaging.version import Version

from mlops_kit.core.errors import EnvBuildError
from mlops_kit.envs import installers, lockfile, resolution
from mlops_kit.envs.installers import IndexSettings
from mlops_kit.envs.spec import StageSpec, parse_python_request


def test_the_python_a_lock_is_resolved_for() -> None:
    cases = {"3.12": "3.12", "3.10.13": "3.10", ">=3.10,<3.13": "3.10", "<3.13": "3.8", "~=3.11": "3.11",
             "==3.11.*": "3.11"}
    for text, minor in cases.items():
        assert resolution.lock_python(parse_python_request(text)) == minor, text


def test_the_resolution_is_universal_hashed_and_never_downloads_a_python(tmp_path: Path) -> None:
    cmd = resolution.compile_command("train.yaml", tmp_path / "out.txt", "3.12", upgrade_packages=["numpy", "pandas"])
    assert cmd[1:5] == ["pip", "compile", "train.yaml", "--output-file"]
    for flag in ("--universal", "--generate-hashes", "--no-header", "--no-config"):
        assert flag in cmd
    assert cmd[cmd.index("--python-version") + 1] == "3.12" and "--python" in cmd  # no interpreter hunt/download
    assert "--emit-index-url" not in cmd and "--upgrade" not in cmd
    assert cmd[-4:] == ["--upgrade-package", "numpy", "--upgrade-package", "pandas"]


def test_the_resolution_ignores_ambient_resolver_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UV_RESOLUTION", "lowest")
    assert "UV_RESOLUTION" not in resolution._resolution_env(None) and "UV_RESOLUTION" in installers.installer_env(
        "uv", IndexSettings())


def test_an_unreachable_index_with_credentials_writes_nothing_and_leaks_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    index = IndexSettings("https://user:s3cret@127.0.0.1:9/simple", (), "environment")
    with pytest.raises(EnvBuildError) as info:
        resolution.write_lock(spec, index=index, echo=lambda _m: None)
    assert "s3cret" not in str(info.value) and "resolving for Python 3.12 failed" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage.yaml"]


@pytest.mark.slow
def test_the_lock_carries_windows_only_dependencies_and_installs_for_windows(
        locked: dict[str, StageSpec], tmp_path: Path) -> None:
    lock = lockfile.read_lock(lockfile.lock_path(locked["3.12"].source))
    colorama = [p for p in lock.pins if p.name == "colorama"]
    assert colorama and colorama[0].marker == "sys_platform == 'win32'" and colorama[0].hashes
    assert "colorama" not in lockfile.pins_for_this_platform(lock, {"sys_platform": "linux"})
    result = subprocess.run([installers.uv_bin(), "pip", "install", "--dry-run", "--python-platform", "windows",
                             "--python-version", "3.12", "--require-hashes", "--target", str(tmp_path / "target"),
                             "-r", str(lock.path)], check=False, capture_output=True, text=True)
    assert result.returncode == 0 and "colorama==" in result.stderr, result.stderr
    for platform_name in lockfile.PLATFORMS:
        resolution.check_installable(lock.path, platform_name, "3.12")


@pytest.mark.slow
def test_the_platform_check_catches_a_lock_missing_a_windows_dependency(
        locked: dict[str, StageSpec], tmp_path: Path) -> None:
    stage = copy_stage(locked["3.12"], tmp_path)
    path = lockfile.lock_path(stage.source)
    drop_package(path, "colorama")
    assert "colorama" not in path.read_text() and lockfile.read_lock(path)
    resolution.check_installable(path, "linux", "3.12")
    with pytest.raises(EnvBuildError, match="does not install on windows .*colorama"):
        resolution.check_installable(path, "windows", "3.12")


@pytest.mark.slow
def test_relock_keeps_other_pins_and_upgrade_package_moves_only_that_one(
        locked: dict[str, StageSpec], tmp_path: Path) -> None:
    first = copy_stage(locked["3.12"], tmp_path)
    before = lockfile.pins_for_this_platform(lockfile.read_lock(lockfile.lock_path(first.source)))
    spec = write_spec(tmp_path, first.source.stem, "3.12", ["six", "packaging", "attrs"])  # unpin, add one
    messages: list[str] = []
    lock = resolution.write_lock(spec, check_platforms=(), echo=messages.append)  # platform checks: tested above
    after = lockfile.pins_for_this_platform(lock)
    assert after.pop("attrs") and after == before  # packaging stays at the old pin although newer ones exist
    assert messages[-1].startswith(f"{lock.path}: updated: +attrs ")
    upgraded = lockfile.pins_for_this_platform(resolution.write_lock(spec, upgrade_packages=["packaging"],
                                                             check_platforms=(), echo=lambda _m: None))
    assert Version(upgraded.pop("packaging")) > Version(OLD_PACKAGING)
    assert {k: v for k, v in after.items() if k != "packaging"} == {k: v for k, v in upgraded.items()
                                                                    if k != "attrs"}
    data = lock.path.read_bytes()
    resolution.write_lock(spec, check_platforms=(), echo=messages.append)
    assert lock.path.read_bytes() == data and "unchanged" in messages[-1]  # no churn in git
    assert lockfile.check_fresh(spec)


@pytest.mark.slow
def test_index_credentials_reach_neither_the_lock_nor_its_header(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    index = IndexSettings("https://user:s3cret@pypi.org/simple", (), "environment")
    lock = resolution.write_lock(spec, index=index, check_platforms=(), echo=lambda _m: None)
    assert "s3cret" not in lock.path.read_text() and lock.header["index"] == "https://***@pypi.org/simple"
