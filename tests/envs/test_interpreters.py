"""Interpreter discovery: real pyenv Pythons on this machine, plus fake py.exe / pyenv-win run for real on Linux."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from fakes.registry import KEY_READ, KEY_WOW64_32KEY, KEY_WOW64_64KEY, FakeWinreg
from fakes.windows import (
    RC_NO_PYTHON,
    RC_NO_PYTHON_AT_ALL,
    Entry,
    link_python,
    make_py_launcher,
    make_pyenv_win,
    write_script,
)

from helpers import POSIX_FAKES
from mlops_kit.core import paths, registry
from mlops_kit.core.errors import EXIT_BAD_INPUT, EXIT_PYTHON_NOT_FOUND, BadInput, PythonNotFound
from mlops_kit.envs import interpreters
from mlops_kit.envs.interpreters import find_python, inspect_interpreter, parse_py_list
from mlops_kit.envs.spec import parse_python_request


def req(text: str):
    return parse_python_request(text)


def version_of(path: Path) -> tuple[int, int, int]:
    return tuple(int(p) for p in path.parent.parent.name.split("."))  # type: ignore[return-value]


pytestmark = [pytest.mark.usefixtures("fresh_interpreter_cache"), POSIX_FAKES]


@pytest.fixture()
def windows(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Windows mode: the seam says win32, PATH holds only a fake bin folder, no pyenv-win variables set."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    monkeypatch.setenv("PATH", str(bindir))
    for name in ("PYENV_ROOT", "PYENV", "PYENV_HOME"):
        monkeypatch.delenv(name, raising=False)
    return bindir


# ------------------------------------------------------------------------------------- real pyenv discovery


@pytest.mark.parametrize("minor", ["3.8", "3.10", "3.12"])
def test_minor_request_resolves_to_the_real_pyenv_python(pythons: dict[str, Path], minor: str) -> None:
    interp = find_python(req(minor))
    assert interp.path == pythons[minor]
    assert interp.version == version_of(pythons[minor])
    assert interp.source == "pyenv"
    assert interp.implementation == "cpython"


def test_specifier_picks_the_newest_matching(pythons: dict[str, Path]) -> None:
    interp = find_python(req(">=3.10,<3.13"))
    assert interp.path == pythons["3.12"]
    assert interp.version[:2] == (3, 12)


def test_exact_patch_request(pythons: dict[str, Path]) -> None:
    wanted = version_of(pythons["3.10"])
    interp = find_python(req(".".join(map(str, wanted))))
    assert interp.version == wanted
    assert interp.path == pythons["3.10"]


def test_discovery_is_cached_until_cleared(pythons: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    first = interpreters.discover()
    calls = []
    monkeypatch.setattr(interpreters, "_probe", lambda path: calls.append(path))
    assert interpreters.discover() is first and not calls
    interpreters.clear_cache()
    interpreters.discover()
    assert calls  # ran the candidates again


def test_path_pythons_found_on_posix(pythons: dict[str, Path], tmp_path: Path,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    bindir = tmp_path / "bin"
    link_python(bindir / "python3.10", pythons["3.10"])
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    monkeypatch.setenv("PATH", str(bindir))
    interp = find_python(req("3.10"))
    assert (interp.source, interp.path, interp.version) == ("PATH", bindir / "python3.10", version_of(pythons["3.10"]))


def test_broken_candidates_are_skipped(pythons: dict[str, Path], tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "pyenv"
    write_script(root / "versions" / "3.12.99" / "bin" / "python", "#!/bin/sh\nexit 1\n")
    write_script(root / "versions" / "3.12.98" / "bin" / "python", "this is not a program\n")
    write_script(root / "versions" / "3.12.97" / "bin" / "python", "#!/bin/sh\necho '{not json'\n")
    link_python(root / "versions" / "3.12.1" / "bin" / "python", pythons["3.12"])
    monkeypatch.setenv("PYENV_ROOT", str(root))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    interp = find_python(req("3.12"))
    assert interp.path == root / "versions" / "3.12.1" / "bin" / "python"
    assert [i.version_text for i in interpreters.discover().found] == [".".join(map(str, version_of(pythons["3.12"])))]


def fake_prerelease(path: Path, level: str = "alpha") -> Path:
    """A script answering the probe as a CPython 3.14.0a1 would (sys.version_info[3] == 'alpha')."""
    info = {"version": [3, 14, 0], "executable": str(path), "implementation": "cpython", "releaselevel": level}
    return write_script(path, f"#!/bin/sh\necho '{json.dumps(info)}'\n")


@pytest.mark.parametrize("level", ["alpha", "candidate"])
def test_prereleases_are_left_out_of_discovery_but_allowed_explicitly(tmp_path: Path, level: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    fake = fake_prerelease(tmp_path / "bin" / "python3.14", level)
    fake_prerelease(tmp_path / "pyenv" / "versions" / "3.14.0a1" / "bin" / "python", level)
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "pyenv"))
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert interpreters.discover().found == ()
    with pytest.raises(PythonNotFound):
        find_python(req("3.14"))
    explicit = find_python(req("3.14"), explicit=fake)
    assert (explicit.version, explicit.releaselevel, explicit.source) == ((3, 14, 0), level, "--python")


def test_inspect_interpreter_reports_version_and_executable(pythons: dict[str, Path], tmp_path: Path) -> None:
    interp = inspect_interpreter(pythons["3.8"], source="test")
    assert interp is not None and interp.version == version_of(pythons["3.8"]) and interp.source == "test"
    assert interp.executable is not None and interp.executable.resolve() == pythons["3.8"].resolve()
    assert inspect_interpreter(tmp_path / "missing") is None
    assert inspect_interpreter(write_script(tmp_path / "fails", "#!/bin/sh\nexit 1\n")) is None


# ------------------------------------------------------------------------------------------ explicit --python


def test_explicit_python_wins_over_discovery(pythons: dict[str, Path], tmp_path: Path) -> None:
    chosen = link_python(tmp_path / "my python" / "python", pythons["3.10"])
    interp = find_python(req(">=3.8"), explicit=chosen)
    assert (interp.path, interp.source) == (chosen, "--python")


def test_explicit_python_version_mismatch_is_bad_input(pythons: dict[str, Path]) -> None:
    with pytest.raises(BadInput) as info:
        find_python(req("3.10"), explicit=pythons["3.12"])
    message = str(info.value)
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert "--python" in message and "3.12" in message and "3.10" in message and "\n" not in message


def test_explicit_python_as_a_name_on_path(pythons: dict[str, Path], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    link_python(tmp_path / "bin" / "python3.10", pythons["3.10"])
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    interp = find_python(req("3.10"), explicit=Path("python3.10"))
    assert interp.path == tmp_path / "bin" / "python3.10" and interp.source == "--python"


@pytest.mark.parametrize("kind", ["missing", "folder", "not-python"])
def test_explicit_python_that_does_not_work_is_bad_input(tmp_path: Path, kind: str) -> None:
    path = {"missing": tmp_path / "nope" / "python",
            "folder": tmp_path,
            "not-python": write_script(tmp_path / "python", "#!/bin/sh\necho hello\n")}[kind]
    with pytest.raises(BadInput, match="--python"):
        find_python(req("3.10"), explicit=path)


# --------------------------------------------------------------------------------------------- not found


def test_not_found_lists_found_versions_hints_and_what_was_searched(pythons: dict[str, Path]) -> None:
    with pytest.raises(PythonNotFound) as info:
        find_python(req("3.8.10"))
    message = str(info.value)
    assert info.value.exit_code == EXIT_PYTHON_NOT_FOUND
    assert "\n" not in message
    assert "'3.8.10'" in message
    for path in pythons.values():
        assert ".".join(map(str, version_of(path))) in message
    for hint in ("py install 3.8.10", "pyenv install 3.8.10", "winget install Python.Python.3.8"):
        assert hint in message
    assert "pyenv" in message and "PATH" in message and "--python" in message


def test_no_pythons_at_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / "no-pyenv"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(PythonNotFound, match=r"found: none;.*'pyenv install 3\.11'.*'py install 3\.11'"):
        find_python(req("3.11"))


def test_windows_not_found_puts_windows_hints_first(windows: Path, tmp_path: Path) -> None:
    with pytest.raises(PythonNotFound) as info:
        find_python(req(">=3.10,<3.13"))
    message = str(info.value)
    assert message.index("py install 3.10") < message.index("winget install Python.Python.3.10") \
        < message.index("pyenv install 3.10")
    assert "py launcher (not installed)" in message and "pyenv-win" in message and "PATH" in message


# --------------------------------------------------------------------------------------- py launcher parsing


def test_parse_old_launcher_lines() -> None:
    text = ("\n -3.8-64        C:\\Python38\\python.exe"
            "\n -3.11-32 *  C:\\Program Files (x86)\\Python311-32\\python.exe"
            "\n -3.10-64       C:\\Users\\u\\AppData\\Local\\Programs\\Python\\Python310\\python.exe *"
            "\n (venv)         C:\\work\\.venv\\Scripts\\python.exe")
    assert parse_py_list(text) == [
        ("-3.8-64", "C:\\Python38\\python.exe"),
        ("-3.11-32", "C:\\Program Files (x86)\\Python311-32\\python.exe"),
        ("-3.10-64", "C:\\Users\\u\\AppData\\Local\\Programs\\Python\\Python310\\python.exe"),
    ]


def test_parse_new_launcher_lines() -> None:
    text = (" -V:3.11 *        C:\\Users\\u\\AppData\\Local\\Programs\\Python\\Python311\\python.exe\n"
            " -V:3.12-64       C:\\Program Files\\Python312\\python.exe\n"
            " -V:3.13-arm64    C:\\Python313-arm64\\python.exe -X utf8\n"
            " -V:ContinuumAnalytics/Anaconda39-64 D:\\dev\\anaconda3\\python.exe\n"
            " -V:Custom/NoExe  D:\\Custom Python\r\n"
            " -V:Custom/Nothing\n")
    assert parse_py_list(text) == [
        ("-V:3.11", "C:\\Users\\u\\AppData\\Local\\Programs\\Python\\Python311\\python.exe"),
        ("-V:3.12-64", "C:\\Program Files\\Python312\\python.exe"),
        ("-V:3.13-arm64", "C:\\Python313-arm64\\python.exe"),
        ("-V:ContinuumAnalytics/Anaconda39-64", "D:\\dev\\anaconda3\\python.exe"),
        ("-V:Custom/NoExe", str(Path("D:\\Custom Python") / "python.exe")),
    ]


@pytest.mark.parametrize("text", ["", "No installed Pythons found!\n",
                                  "Installed Pythons found by py Launcher for Windows\nNo Installed Pythons Found!\n"])
def test_parse_launcher_with_nothing_listed(text: str) -> None:
    assert parse_py_list(text) == []


# ------------------------------------------------------------------------------------ fake py launcher, real run


@pytest.mark.parametrize("generation", ["old", "new"])
def test_py_launcher_both_generations(windows: Path, tmp_path: Path, pythons: dict[str, Path],
                                      generation: str) -> None:
    programs = tmp_path / "Local" / "Programs" / "Python"
    p38 = link_python(programs / "Python38" / "python.exe", pythons["3.8"])
    p312 = link_python(programs / "Python 312" / "python.exe", pythons["3.12"])
    tags = {"old": ("-3.8-64", "-3.12-64"), "new": ("-V:3.8", "-V:3.12")}[generation]
    make_py_launcher(windows, [Entry(tags[0], p38), Entry(tags[1], p312, default=True)], generation=generation)

    interp = find_python(req("3.8"))
    assert (interp.path, interp.source, interp.version) == (p38, "py launcher", version_of(pythons["3.8"]))
    assert find_python(req(">=3.8")).path == p312


def test_py_launcher_company_tag_and_stale_entries(windows: Path, tmp_path: Path, pythons: dict[str, Path]) -> None:
    conda = link_python(tmp_path / "anaconda3" / "python.exe", pythons["3.10"])
    broken = write_script(tmp_path / "Broken" / "python.exe", "#!/bin/sh\nexit 1\n")
    make_py_launcher(windows, [Entry("-V:ContinuumAnalytics/Anaconda310-64", conda),
                               Entry("-V:3.9", tmp_path / "Removed" / "python.exe"),
                               Entry("-V:3.10-32", broken)])
    interp = find_python(req("3.10"))
    assert (interp.path, interp.source) == (conda, "py launcher")
    assert [i.path for i in interpreters.discover().found] == [conda]


def test_old_launcher_exit_103_still_lists(windows: Path, tmp_path: Path, pythons: dict[str, Path]) -> None:
    # 3.7-era launchers ended every list call with RC_NO_PYTHON even when they printed Pythons
    p311 = link_python(tmp_path / "Python311" / "python.exe", pythons["3.11"])
    make_py_launcher(windows, [Entry("-3.11-64", p311, default=True)], generation="old", exit_code=RC_NO_PYTHON)
    assert find_python(req("3.11")).path == p311


@pytest.mark.parametrize(("generation", "exit_code"), [("old", None), ("new", None), ("new", RC_NO_PYTHON),
                                                       ("new", RC_NO_PYTHON_AT_ALL)])
def test_launcher_with_no_pythons_is_an_empty_source(windows: Path, tmp_path: Path, pythons: dict[str, Path],
                                                     generation: str, exit_code: int | None) -> None:
    make_py_launcher(windows, [], generation=generation, exit_code=exit_code)
    link_python(windows / "python3.12", pythons["3.12"])  # PATH still searched after the launcher
    interp = find_python(req("3.12"))
    assert interp.source == "PATH"
    assert "(0 listed)" in "; ".join(interpreters.discover().searched)


def test_launcher_failing_otherwise_is_reported(windows: Path) -> None:
    make_py_launcher(windows, [], generation="new", exit_code=109)
    with pytest.raises(PythonNotFound, match="failed with exit code 109"):
        find_python(req("3.12"))


def test_launcher_missing_is_skipped(windows: Path, pythons: dict[str, Path]) -> None:
    link_python(windows / "python", pythons["3.11"])
    interp = find_python(req("3.11"))
    assert (interp.source, interp.path) == ("PATH", windows / "python")
    assert "py launcher (not installed)" in interpreters.discover().searched


# ---------------------------------------------------------------------------------------- pyenv-win layouts


@pytest.mark.parametrize("variable", ["PYENV_ROOT", "PYENV", "PYENV_HOME"])
def test_pyenv_win_via_environment_variable(windows: Path, tmp_path: Path, pythons: dict[str, Path],
                                            monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    root = make_pyenv_win(tmp_path / "tools" / ".pyenv" / "pyenv-win", {"3.10.13": pythons["3.10"],
                                                                         "3.12.1": pythons["3.12"]})
    monkeypatch.setenv(variable, str(root) + os.sep)  # the installer sets them with a trailing backslash
    interp = find_python(req("3.10"))
    assert (interp.path, interp.source) == (root / "versions" / "3.10.13" / "python.exe", "pyenv-win")
    assert find_python(req(">=3.10")).path == root / "versions" / "3.12.1" / "python.exe"


def test_pyenv_win_variable_pointing_at_parent_folder(windows: Path, tmp_path: Path, pythons: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    root = make_pyenv_win(tmp_path / ".pyenv" / "pyenv-win", {"3.8.18": pythons["3.8"]})
    monkeypatch.setenv("PYENV_ROOT", str(tmp_path / ".pyenv"))
    assert find_python(req("3.8")).path == root / "versions" / "3.8.18" / "python.exe"


def test_pyenv_win_default_under_userprofile(windows: Path, isolated_home: Path, pythons: dict[str, Path]) -> None:
    root = make_pyenv_win(isolated_home / ".pyenv" / "pyenv-win", {"3.11.7": pythons["3.11"]})
    interp = find_python(req("3.11"))
    assert (interp.path, interp.source) == (root / "versions" / "3.11.7" / "python.exe", "pyenv-win")


def test_pyenv_win_broken_version_is_skipped(windows: Path, isolated_home: Path, pythons: dict[str, Path]) -> None:
    root = make_pyenv_win(isolated_home / ".pyenv" / "pyenv-win", {"3.12.1": pythons["3.12"]})
    write_script(root / "versions" / "3.12.9" / "python.exe", "not a program at all\n")
    (root / "versions" / "3.13.0").mkdir()  # half-uninstalled: no python.exe
    assert find_python(req("3.12")).path == root / "versions" / "3.12.1" / "python.exe"


def test_windows_order_launcher_then_pyenv_win_then_path(windows: Path, tmp_path: Path, isolated_home: Path,
                                                         pythons: dict[str, Path]) -> None:
    launcher_312 = link_python(tmp_path / "Python312" / "python.exe", pythons["3.12"])
    make_py_launcher(windows, [Entry("-V:3.12", launcher_312)])
    make_pyenv_win(isolated_home / ".pyenv" / "pyenv-win", {"3.12.1": pythons["3.12"], "3.8.18": pythons["3.8"]})
    link_python(windows / "python3.10", pythons["3.10"])
    found = {i.version[:2]: i.source for i in interpreters.discover().found}
    assert found == {(3, 12): "py launcher", (3, 8): "pyenv-win", (3, 10): "PATH"}  # same 3.12 kept once
    assert find_python(req("3.12")).path == launcher_312


def test_pyenv_shims_on_path_are_not_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Shims only lead to pyenv's own versions (already listed) and cost a shell each: they are skipped."""
    root = tmp_path / ".pyenv"
    (root / "versions").mkdir(parents=True)
    shims = root / "shims"
    shims.mkdir()
    marker = tmp_path / "shim-ran"
    shim = shims / "python3.10"
    shim.write_text(f"#!/bin/sh\ntouch '{marker}'\nexit 1\n")
    shim.chmod(0o755)
    monkeypatch.setenv("PATH", str(shims))
    monkeypatch.setenv("PYENV_ROOT", str(root))
    interpreters.clear_cache()
    assert interpreters.discover().found == ()
    assert not marker.exists()


# ------------------------------------------------------------------------------ the registry, PEP 514 (issue 22)


@pytest.fixture()
def registry_fake(monkeypatch: pytest.MonkeyPatch) -> FakeWinreg:
    """A registry with nothing registered, read through core.registry's seam."""
    fake = FakeWinreg()
    monkeypatch.setattr(registry, "_WINREG", fake)
    return fake


def test_registry_finds_an_all_users_python_without_the_launcher(windows: Path, registry_fake: FakeWinreg,
                                                                  tmp_path: Path, pythons: dict[str, Path]) -> None:
    """LocalSystem has no per-user py launcher; a Python installed for all users is in HKLM (python.org layout)."""
    folder = tmp_path / "Program Files" / "Python310"
    exe = link_python(folder / "python.exe", pythons["3.10"])
    registry_fake.register_python("PythonCore", "3.10", str(folder) + "\\", executable=str(exe), version="3.10.11")
    interp = find_python(req("3.10"))
    assert (interp.path, interp.source, interp.version) == (exe, "registry", version_of(pythons["3.10"]))
    assert "py launcher (not installed)" in interpreters.discover().searched
    assert all(handle.closed for handle in registry_fake.handles)


def test_registry_views_hives_companies_and_tags(windows: Path, registry_fake: FakeWinreg, tmp_path: Path,
                                                 pythons: dict[str, Path]) -> None:
    p38 = link_python(tmp_path / "Program Files (x86)" / "Python38-32" / "python.exe", pythons["3.8"])
    conda = link_python(tmp_path / "anaconda3" / "python.exe", pythons["3.11"])
    mine = link_python(tmp_path / "Users" / "svc" / "Python312" / "python.exe", pythons["3.12"])
    registry_fake.register_python("PythonCore", "3.8-32", str(p38.parent), view="32-bit")  # no ExecutablePath
    registry_fake.register_python("ContinuumAnalytics", "Anaconda311-64", str(conda.parent), executable=str(conda))
    registry_fake.register_python("PythonCore", "3.12", str(mine.parent), executable=str(mine), hive="HKCU")
    registry_fake.set_value("HKLM", "Software\\Python\\PyLauncher", "", "not a Python")  # the launcher's settings
    registry_fake.register_python("PythonCore", "3.9", str(tmp_path / "Removed Python39"))  # uninstalled by hand
    found = {i.version[:2]: i.path for i in interpreters.discover().found}
    assert found == {(3, 8): p38, (3, 11): conda, (3, 12): mine}
    searched = "; ".join(interpreters.discover().searched)
    assert "registry (PEP 514: HKCU 1, HKLM 64-bit 2, HKLM 32-bit 1)" in searched and "1 did not run" in searched
    read = {(hive, path, access) for hive, path, access in registry_fake.opened if path == "Software\\Python"}
    assert read == {("HKCU", "Software\\Python", KEY_READ), ("HKLM", "Software\\Python", KEY_READ | KEY_WOW64_64KEY),
                    ("HKLM", "Software\\Python", KEY_READ | KEY_WOW64_32KEY)}


def test_windows_order_launcher_registry_pyenv_win_path(windows: Path, registry_fake: FakeWinreg, tmp_path: Path,
                                                        isolated_home: Path, pythons: dict[str, Path]) -> None:
    launcher_312 = link_python(tmp_path / "Python312" / "python.exe", pythons["3.12"])
    make_py_launcher(windows, [Entry("-V:3.12", launcher_312)])
    registry_fake.register_python("PythonCore", "3.12", str(launcher_312.parent), executable=str(launcher_312))
    registered_311 = link_python(tmp_path / "Python311" / "python.exe", pythons["3.11"])
    registry_fake.register_python("PythonCore", "3.11", str(registered_311.parent), executable=str(registered_311))
    make_pyenv_win(isolated_home / ".pyenv" / "pyenv-win", {"3.11.7": pythons["3.11"], "3.8.18": pythons["3.8"]})
    link_python(windows / "python3.10", pythons["3.10"])
    found = {i.version[:2]: i.source for i in interpreters.discover().found}
    assert found == {(3, 12): "py launcher", (3, 11): "registry", (3, 8): "pyenv-win", (3, 10): "PATH"}


def test_not_found_says_what_each_source_saw(windows: Path, registry_fake: FakeWinreg, tmp_path: Path,
                                             pythons: dict[str, Path]) -> None:
    exe = link_python(tmp_path / "Python312" / "python.exe", pythons["3.12"])
    registry_fake.register_python("PythonCore", "3.12", str(exe.parent), executable=str(exe))
    link_python(windows / "python", pythons["3.8"])
    with pytest.raises(PythonNotFound) as info:
        find_python(req("3.10"))
    message = str(info.value)
    v312, v38 = (".".join(map(str, version_of(pythons[m]))) for m in ("3.12", "3.8"))
    assert "MLOPS_PYTHON_3_10 (not set); py launcher (not installed); registry (PEP 514: HKCU 0, HKLM 64-bit 1, " \
           f"HKLM 32-bit 0): {v312}; pyenv-win" in message
    assert f"python3, python: 1 found): {v38}" in message
    assert "(on an agent: for all users), or set MLOPS_PYTHON_3_10 to its python.exe, or pass --python" in message


def test_off_windows_the_registry_is_not_read(registry_fake: FakeWinreg, pythons: dict[str, Path]) -> None:
    find_python(req("3.12"))
    assert registry_fake.opened == [] or paths.is_windows()  # the fake is set, but Linux discovery never asks it


# ---------------------------------------------------------------------------- MLOPS_PYTHON_<MAJOR>_<MINOR> (issue 22)


def test_the_override_wins_over_discovery_and_is_recorded_as_its_source(tmp_path: Path, pythons: dict[str, Path],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    chosen = link_python(tmp_path / "D" / "Python310" / "python.exe", pythons["3.10"])
    monkeypatch.setenv("MLOPS_PYTHON_3_10", f'"{chosen}" ')  # cmd's `set X="..." ` keeps quotes and a space
    interp = find_python(req("3.10"))
    assert (interp.path, interp.source) == (chosen, "MLOPS_PYTHON_3_10")
    assert find_python(req("3.12")).source == "pyenv"  # another minor: discovery as usual
    assert find_python(req("3.10"), explicit=pythons["3.10"]).source == "--python"  # --python still wins


def test_a_range_picks_the_newest_override(tmp_path: Path, pythons: dict[str, Path],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_PYTHON_3_10", str(link_python(tmp_path / "a" / "python", pythons["3.10"])))
    monkeypatch.setenv("MLOPS_PYTHON_3_11", str(link_python(tmp_path / "b" / "python", pythons["3.11"])))
    assert find_python(req(">=3.10,<3.12")).source == "MLOPS_PYTHON_3_11"
    assert interpreters.override_names(req(">=3.10,<3.12")) == ["MLOPS_PYTHON_3_11", "MLOPS_PYTHON_3_10"]
    assert interpreters.override_names(req("3.9")) == ["MLOPS_PYTHON_3_9"]


@pytest.mark.parametrize(("value", "says"), [
    ("{tmp}/missing/python.exe", "no such file"),
    ("{tmp}", "is a folder"),
    ("{not_python}", "not a working Python interpreter"),
    ("{py312}", "is Python 3.12."),
    ("{py311}", "is Python 3.11."),
])
def test_a_bad_override_is_exit_2_naming_the_variable(tmp_path: Path, pythons: dict[str, Path], value: str, says: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    not_python = write_script(tmp_path / "python", "#!/bin/sh\nexit 1\n")
    raw = value.format(tmp=tmp_path, not_python=not_python, py312=pythons["3.12"], py311=pythons["3.11"])
    monkeypatch.setenv("MLOPS_PYTHON_3_10", raw)
    with pytest.raises(BadInput) as info:
        find_python(req("3.10"))
    assert info.value.exit_code == EXIT_BAD_INPUT
    assert str(info.value).startswith(f"MLOPS_PYTHON_3_10={raw}: ") and says in str(info.value)


def test_an_override_of_the_wrong_patch_for_an_exact_request_is_exit_2(tmp_path: Path, pythons: dict[str, Path],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_PYTHON_3_10", str(pythons["3.10"]))
    with pytest.raises(BadInput, match=r"MLOPS_PYTHON_3_10=.*: is Python 3\.10\.\d+, the spec asks for 3\.10\.0"):
        find_python(req("3.10.0"))
