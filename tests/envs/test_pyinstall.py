"""Automatic Python install: plan per platform, real runs of fake installers, then real discovery + verification."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fakes.installers import calls, catalog_of, make_installer, version_of

from helpers import POSIX_FAKES
from mlops_kit.core import paths
from mlops_kit.core.errors import EXIT_PYTHON_NOT_FOUND, PythonNotFound
from mlops_kit.envs import pyinstall
from mlops_kit.envs.pyinstall import install_python, install_target, survey
from mlops_kit.envs.spec import parse_python_request

WINGET_FLAGS = ["--exact", "--source", "winget", "--silent", "--scope", "user", "--accept-package-agreements",
                "--accept-source-agreements"]


def req(text: str):
    return parse_python_request(text)


pytestmark = [pytest.mark.usefixtures("fresh_interpreter_cache"), POSIX_FAKES]


@pytest.fixture()
def catalog(pythons: dict[str, Path]) -> dict[str, str]:
    return catalog_of(pythons)


@pytest.fixture()
def log(tmp_path: Path) -> Path:
    return tmp_path / "installer-calls.jsonl"


@pytest.fixture()
def bindir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH holds only this folder; no real pyenv Python is visible (PYENV_ROOT points at an empty tmp folder)."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv-root"))
    return folder


@pytest.fixture()
def windows(bindir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Both seams say win32; %SystemDrive% is a tmp folder (Chocolatey installs to %SystemDrive%\\Python3XY)."""
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    for name in ("PYENV_ROOT", "PYENV", "PYENV_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SystemDrive", str(tmp_path / "C"))
    return bindir


def installs(log: Path) -> list[list[str]]:
    """Recorded command lines except read-only queries (``py -0p``, ``pyenv install --list``)."""
    return [c for c in calls(log) if c[1:2] != ["-0p"] and c[2:3] != ["--list"]]


def pyenv_win_bin(home: Path) -> Path:
    return home / ".pyenv" / "pyenv-win" / "bin"


# ---------------------------------------------------------------------------------------------------- plans


def test_windows_plan_order_and_command_lines_for_a_minor(windows: Path, isolated_home: Path, catalog, log,
                                                          pythons: dict[str, Path], monkeypatch) -> None:
    for kind in ("pymanager", "winget", "choco"):
        make_installer(kind, windows, catalog, log)
    pyenv_bin = pyenv_win_bin(isolated_home)
    make_installer("pyenv-win", pyenv_bin, catalog, log)
    monkeypatch.setenv("PATH", os.pathsep.join([str(windows), str(pyenv_bin)]))
    newest_312 = version_of(pythons["3.12"])

    plan = survey(req("3.12")).methods

    assert [m.name for m in plan] == ["Python install manager", "winget", "pyenv-win", "Chocolatey"]
    assert [list(m.argv) for m in plan] == [
        [str(windows / "pymanager"), "install", "--yes", "3.12"],
        [str(windows / "winget"), "install", "--id", "Python.Python.3.12", *WINGET_FLAGS],
        [str(pyenv_bin / "pyenv"), "install", "--quiet", newest_312],  # minor resolved from `pyenv install --list`
        [str(windows / "choco"), "install", "python312", "--yes", "--no-progress"],
    ]
    assert installs(log) == []  # planning installs nothing


def test_windows_plan_for_an_exact_patch(windows: Path, isolated_home: Path, catalog, log, monkeypatch) -> None:
    for kind in ("pymanager", "winget", "choco"):
        make_installer(kind, windows, catalog, log)
    make_installer("pyenv-win", pyenv_win_bin(isolated_home), catalog, log)
    monkeypatch.setenv("PATH", os.pathsep.join([str(windows), str(pyenv_win_bin(isolated_home))]))

    plan = {m.name: list(m.argv[1:]) for m in survey(req("3.10.13")).methods}

    assert plan == {
        "Python install manager": ["install", "--yes", "3.10.13"],
        "winget": ["install", "--id", "Python.Python.3.10", *WINGET_FLAGS, "--version", "3.10.13"],
        "pyenv-win": ["install", "--quiet", "3.10.13"],
        "Chocolatey": ["install", "python310", "--yes", "--no-progress", "--version", "3.10.13"],
    }
    assert calls(log) == []  # an exact version needs no `pyenv install --list`


def test_posix_plan_is_pyenv_with_a_resolved_patch(bindir: Path, catalog, log, pythons: dict[str, Path]) -> None:
    make_installer("pyenv", bindir, catalog, log)
    make_installer("winget", bindir, catalog, log)  # not a POSIX installer: ignored
    (method,) = survey(req("3.11")).methods
    assert (method.name, list(method.argv)) == ("pyenv", [str(bindir / "pyenv"), "install", "-s",
                                                          version_of(pythons["3.11"])])
    assert calls(log) == [["pyenv", "install", "--list"]]


@pytest.mark.parametrize(("text", "target"), [("3.10", "3.10"), ("3.10.13", "3.10.13"), (">=3.10,<3.13", "3.12"),
                                              ("~=3.9.0", "3.9"), (">=3.8", "3.14"), ("<3.12.2,>=3.12", "3.12")])
def test_install_target(text: str, target: str) -> None:
    assert install_target(req(text)) == target


def test_specifier_patch_bounds_are_honoured_by_pyenv(bindir: Path, catalog, log, pythons: dict[str, Path]) -> None:
    make_installer("pyenv", bindir, catalog, log)
    p312 = version_of(pythons["3.12"])
    (method,) = survey(req(f">=3.11,<={p312}")).methods
    assert method.argv[-1] == p312
    newer = p312.rsplit(".", 1)[0] + "." + str(int(p312.rsplit(".", 1)[1]) + 1)
    assert survey(req(f">={newer},<3.13")).methods == []  # no listed 3.12.x in range: pyenv cannot help


def test_pyenv_specifier_takes_the_newest_listed_release(bindir: Path, catalog, log,
                                                         pythons: dict[str, Path]) -> None:
    make_installer("pyenv", bindir, catalog, log)  # lists 3.8..3.13 finals only (plus 3.X.Yt and 3.14-dev)
    newest = max(pythons, key=lambda minor: int(minor.split(".")[1]))
    (method,) = survey(req(">=3.8")).methods  # the newest supported minor (3.14) is not listed: take what pyenv has
    assert method.argv[-1] == version_of(pythons[newest])


def test_unsatisfiable_specifier_is_refused_before_any_install(bindir: Path, catalog, log) -> None:
    make_installer("pyenv", bindir, catalog, log)
    with pytest.raises(PythonNotFound, match=r"no supported release \(3\.8-3\.14\) satisfies it") as info:
        install_python(req(">=3.20"))
    assert info.value.exit_code == EXIT_PYTHON_NOT_FOUND
    assert calls(log) == []


# ------------------------------------------------------------------------------------- real (fake) installs


def test_posix_pyenv_install_then_real_discovery(bindir: Path, tmp_path: Path, catalog, log,
                                                 pythons: dict[str, Path]) -> None:
    make_installer("pyenv", bindir, catalog, log)
    echoed: list[str] = []

    interp = install_python(req("3.10"), echo=echoed.append)

    version = version_of(pythons["3.10"])
    assert installs(log) == [["pyenv", "install", "-s", version]]
    assert interp.path == tmp_path / "pyenv-root" / "versions" / version / "bin" / "python"
    assert (interp.version_text, interp.source, interp.implementation) == (version, "pyenv", "cpython")
    assert interp.executable is not None and interp.executable.resolve() == pythons["3.10"].resolve()
    assert echoed[0].startswith("Python '3.10' not found: installing") and f"install -s {version}" in echoed[0]
    assert any(line.startswith("Installed Python") for line in echoed)  # installer output streamed, no "\n"
    assert not any(line.endswith("\n") for line in echoed)


def test_nothing_installed_when_discovery_already_finds_it(bindir: Path, tmp_path: Path, catalog, log,
                                                           pythons: dict[str, Path], monkeypatch) -> None:
    make_installer("pyenv", bindir, catalog, log)
    monkeypatch.setenv("PYENV_ROOT", str(pythons["3.12"].parents[3]))  # the real pyenv root
    interp = install_python(req("3.12"), echo=lambda line: None)
    assert interp.path == pythons["3.12"]
    assert calls(log) == []


def test_windows_prefers_the_install_manager(windows: Path, isolated_home: Path, catalog, log,
                                             pythons: dict[str, Path]) -> None:
    for kind in ("pymanager", "winget", "choco"):
        make_installer(kind, windows, catalog, log)

    interp = install_python(req("3.11"), echo=lambda line: None)

    assert installs(log) == [["pymanager", "install", "--yes", "3.11"]]
    assert interp.path == Path(os.environ["LOCALAPPDATA"]) / "Python" / "pythoncore-3.11-64" / "python.exe"
    assert interp.source == "py launcher"  # found by discovery through the manager's own `py -0p`
    assert interp.version_text == version_of(pythons["3.11"])


@pytest.mark.parametrize("kind", ["winget", "pyenv-win", "choco"])
def test_windows_single_installer_exact_patch(windows: Path, isolated_home: Path, tmp_path: Path, catalog, log,
                                              pythons: dict[str, Path], monkeypatch, kind: str) -> None:
    folder = pyenv_win_bin(isolated_home) if kind == "pyenv-win" else windows
    make_installer(kind, folder, catalog, log)
    monkeypatch.setenv("PATH", str(folder))
    version = version_of(pythons["3.12"])

    interp = install_python(req(version), echo=lambda line: None)

    local = Path(os.environ["LOCALAPPDATA"])
    expected = {
        "winget": (["winget", "install", "--id", "Python.Python.3.12", *WINGET_FLAGS, "--version", version],
                   local / "Programs" / "Python" / "Python312" / "python.exe", "winget"),
        "pyenv-win": (["pyenv", "install", "--quiet", version],
                      isolated_home / ".pyenv" / "pyenv-win" / "versions" / version / "python.exe", "pyenv-win"),
        "choco": (["choco", "install", "python312", "--yes", "--no-progress", "--version", version],
                  tmp_path / "C" / "Python312" / "python.exe", "Chocolatey"),
    }[kind]
    assert installs(log) == [expected[0]]
    assert interp.path == expected[1]
    assert interp.source == expected[2]  # winget/choco: not on this process's PATH yet, found in their folder
    assert interp.version_text == version


def test_pyenv_win_minor_request_installs_the_newest_listed_patch(windows: Path, isolated_home: Path, catalog, log,
                                                                  pythons: dict[str, Path], monkeypatch) -> None:
    folder = pyenv_win_bin(isolated_home)
    make_installer("pyenv-win", folder, catalog, log)
    monkeypatch.setenv("PATH", str(folder))
    interp = install_python(req("3.9"), echo=lambda line: None)
    assert calls(log) == [["pyenv", "install", "--list"], ["pyenv", "install", "--quiet", version_of(pythons["3.9"])]]
    assert interp.version_text == version_of(pythons["3.9"])


# ------------------------------------------------------------------------------------------------- failures


@pytest.mark.parametrize(("kind", "code", "last_line"), [
    ("pyenv", 1, "BUILD FAILED (fake using python-build)"),
    ("pymanager", 1, "[ERROR] Failed to find a suitable install for '3.12'."),
    ("choco", 1, "Chocolatey installed 0/1 packages. 1 packages failed."),
])
def test_failing_installer_is_one_line_naming_the_command(bindir: Path, catalog, log, monkeypatch,
                                                          kind: str, code: int, last_line: str) -> None:
    if kind != "pyenv":
        monkeypatch.setattr(paths, "_PLATFORM", "win32")
        monkeypatch.setattr(paths, "_PLATFORM", "win32")
    make_installer(kind, bindir, catalog, log, fail=code)
    with pytest.raises(PythonNotFound) as info:
        install_python(req("3.12"), echo=lambda line: None)
    message = str(info.value)
    assert info.value.exit_code == EXIT_PYTHON_NOT_FOUND and "\n" not in message
    assert f"{bindir / kind} install" in message
    assert message.endswith(f"exited with {code}: {last_line}")


def test_windows_hresult_exit_codes_are_shown_in_hex() -> None:
    assert pyinstall._code_text(0x8A150014) == "2316632084 (0x8A150014)"  # how Windows reports winget's code
    assert pyinstall._code_text(-1978335212) == "-1978335212 (0x8A150014)"
    assert pyinstall._code_text(1603) == "1603"


def test_winget_no_package_found(windows: Path, catalog, log) -> None:
    make_installer("winget", windows, catalog, log)
    with pytest.raises(PythonNotFound) as info:
        install_python(req("3.12.99"), echo=lambda line: None)
    message = str(info.value)
    assert "--version 3.12.99" in message
    assert message.endswith("exited with 20: No package found matching input criteria.")


def test_pyenv_definition_not_found(bindir: Path, catalog, log) -> None:
    make_installer("pyenv", bindir, catalog, log)
    with pytest.raises(PythonNotFound, match=r"install -s 3\.12\.99 exited with 2: python-build: definition not "
                                             r"found: 3\.12\.99$"):
        install_python(req("3.12.99"), echo=lambda line: None)


def test_installer_exiting_0_without_installing(windows: Path, isolated_home: Path, catalog, log, monkeypatch,
                                                pythons: dict[str, Path]) -> None:
    folder = pyenv_win_bin(isolated_home)
    make_installer("pyenv-win", folder, catalog, log, broken=True)  # pyenv-win reports failure on stdout, exits 0
    monkeypatch.setenv("PATH", str(folder))
    version = version_of(pythons["3.12"])
    with pytest.raises(PythonNotFound) as info:
        install_python(req(version), echo=lambda line: None)
    message = str(info.value)
    assert "\n" not in message and f"install --quiet {version} finished but no Python matching" in message
    assert "--python PATH" in message


def test_minor_missing_from_pyenv_list_means_no_installer(bindir: Path, catalog, log) -> None:
    make_installer("pyenv", bindir, catalog, log)
    with pytest.raises(PythonNotFound) as info:
        install_python(req("3.14"), echo=lambda line: None)
    message = str(info.value)
    assert "offers no release matching '3.14'" in message and "update pyenv" in message
    assert installs(log) == []


@pytest.mark.parametrize("platform", ["win32", "linux"])
def test_nothing_available_gives_hints(bindir: Path, monkeypatch, platform: str) -> None:
    monkeypatch.setattr(paths, "_PLATFORM", platform)
    monkeypatch.setattr(paths, "_PLATFORM", platform)
    with pytest.raises(PythonNotFound) as info:
        install_python(req(">=3.10,<3.13"), echo=lambda line: None)
    message = str(info.value)
    assert info.value.exit_code == EXIT_PYTHON_NOT_FOUND and "\n" not in message
    assert "no installer available" in message and "--python PATH" in message
    if platform == "win32":
        for looked in ("pymanager", "winget", "pyenv-win", "choco"):
            assert looked in message
        assert "'py install 3.12'" in message and "Python.Python.3.12" in message
    else:
        assert "pyenv not on PATH" in message and "'pyenv install 3.12'" in message
