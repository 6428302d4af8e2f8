"""Resolving a spec into its lock (mlops_kit.envs.resolution): real resolutions with uv against the package index.

The slow tests use the session's real locks (helpers_locks.locked) and copies of them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from helpers_locks import OLD_PACKAGING, copy_stage, drop_package, fake_lock, pin, reseal, write_spec
from packaging.version import Version

from mlops_kit.core.errors import BadInput, EnvBuildError
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
    reseal(path)  # whole as far as the digest can tell: the dry run is what catches it
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


def test_upgrade_package_names_must_be_known_to_a_spec_or_its_lock(tmp_path: Path) -> None:
    """A spec's own package, one its lock pins (a transitive one too), what every venv gets: fine for all specs
    given; a name nobody knows is BadInput before anything resolves (uv would ignore it: a silent no-op)."""
    first = write_spec(tmp_path, "a", "3.12", ["six"])
    second = write_spec(tmp_path, "b", "3.12", ["attrs>=25"])
    fake_lock(second, pin("attrs", "25.1.0") + pin("tornado", "6.5.2"))
    resolution.check_upgrade_names([first, second], ["six", "Attrs", "tornado", "pip", "ipykernel"])
    with pytest.raises(BadInput) as info:
        resolution.check_upgrade_names([first, second], ["six", "atrs"])
    assert str(info.value) == (f"--upgrade-package atrs: neither a package of {first.source} or {second.source} nor "
                               "pinned in their locks; did you mean 'attrs'? nothing was locked")
    with pytest.raises(BadInput, match="neither a package of .*a.yaml nor pinned in its lock; nothing was locked"):
        resolution.check_upgrade_names([first], ["tornado"])


@pytest.mark.slow
def test_re_locking_an_edited_or_old_format_lock_rewrites_it_whole_keeping_its_pins(
        locked: dict[str, StageSpec], tmp_path: Path) -> None:
    """The command every refusal names repairs the lock: the removed block comes back, the other pins stay."""
    spec = copy_stage(locked["3.12"], tmp_path)
    path = lockfile.lock_path(spec.source)
    before = lockfile.pins_for_this_platform(lockfile.read_lock(path))
    drop_package(path, "six")
    messages: list[str] = []
    repaired = resolution.write_lock(spec, check_platforms=(), echo=messages.append)
    assert messages[0].startswith(f"rewriting {path}, which is not whole (line ") and "six was removed" in messages[0]
    assert lockfile.pins_for_this_platform(repaired) == before and messages[-1].startswith(f"{path}: updated: +six ")
    text = path.read_text(encoding="utf-8")
    old_format = "".join(line for line in text.splitlines(keepends=True) if not line.startswith(("# digest:", "# blocks:")))
    path.write_text(old_format.replace("# lock-format: 2", "# lock-format: 1"), encoding="utf-8")
    again = resolution.write_lock(spec, check_platforms=(), echo=messages.append)
    assert "lock format 1 was written by an older toolkit" in messages[-3]
    assert lockfile.pins_for_this_platform(again) == before and "same pins, header refreshed" in messages[-1]
    assert lockfile.read_lock(path).header["lock-format"] == lockfile.LOCK_FORMAT
