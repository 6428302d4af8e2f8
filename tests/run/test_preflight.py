"""mlops_kit.run.preflight (doctor.py's rows), the rows a Windows agent shows, through the seams: the platform (win32), the environment a
LocalSystem service gets, the registry (long paths, a Python installed for all users)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fakes.registry import REG_DWORD, FakeWinreg
from fakes.windows import link_python

from helpers import POSIX_FAKES, REPO_ROOT
from mlops_kit.core import paths, registry
from mlops_kit.run import preflight as doctor

pytestmark = [pytest.mark.usefixtures("fresh_interpreter_cache"), POSIX_FAKES]


@pytest.fixture()
def local_system(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pythons: dict[str, Path]) -> FakeWinreg:
    """A Windows agent running as LocalSystem: no py launcher, Python 3.12 installed for all users (HKLM), long
    paths off, %ProgramData% in a tmp folder."""
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    for name, value in {"USERNAME": "AGENT-07$", "COMPUTERNAME": "AGENT-07",
                        "USERPROFILE": "C:\\Windows\\system32\\config\\systemprofile",
                        "ProgramData": str(tmp_path / "ProgramData"), "PATH": str(tmp_path / "empty"),
                        "MLOPS_PYTHON_DOWNLOADS": "never"}.items():
        monkeypatch.setenv(name, value)
    for name in ("ML_VENV_ROOT", "UV_PYTHON_INSTALL_DIR", "PYENV_ROOT", "PYENV", "PYENV_HOME"):
        monkeypatch.delenv(name, raising=False)
    machine = FakeWinreg()
    exe = link_python(tmp_path / "Program Files" / "Python312" / "python.exe", pythons["3.12"])
    machine.register_python("PythonCore", "3.12", str(exe.parent), executable=str(exe))
    machine.set_value("HKLM", registry.LONG_PATHS_KEY, "LongPathsEnabled", 0, REG_DWORD)
    monkeypatch.setattr(registry, "_WINREG", machine)
    return machine


def rows_by_check(rows: list[doctor.Row]) -> dict[str, doctor.Row]:
    return {row.check: row for row in rows}


def test_a_local_system_agent(local_system: FakeWinreg, tmp_path: Path) -> None:
    rows = rows_by_check(doctor.run_checks(doctor.Request(specs=(REPO_ROOT / "specs" / "train.yaml",),
                                                          tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")))
    ours = tmp_path / "ProgramData" / "mlops_kit"
    account = rows["account"]
    assert account.status == "ok" and account.detail.startswith("LocalSystem account AGENT-07$ (profile C:\\Windows")
    assert f"default to {ours}" in account.detail
    assert rows["venv root"].detail == f"{ours / 'venvs'} (the service account's default), writable"
    assert rows["long paths"].detail.startswith("off (Windows' default)")
    budget = rows["path budget"]
    assert budget.status == "ok" and budget.detail.startswith("longest file ") and " of 259 characters " in budget.detail
    python = rows["python 3.12 (train)"]
    assert python.status == "ok" and python.detail.endswith("(registry)")


def test_a_python_missing_with_downloads_off_is_a_failed_row_with_its_fixes(local_system: FakeWinreg) -> None:
    rows = rows_by_check(doctor.run_checks(doctor.Request(specs=(REPO_ROOT / "specs" / "ingest.yaml",))))
    row = rows["python 3.10 (ingest)"]
    assert row.status == "fail" and "downloads are off (MLOPS_PYTHON_DOWNLOADS=never)" in row.detail
    assert "registry (PEP 514: HKCU 0, HKLM 64-bit 1, HKLM 32-bit 0)" in row.detail
    assert "for all users" in row.fix and "set MLOPS_PYTHON_3_10 to its python.exe" in row.fix


def test_a_venv_root_too_deep_for_long_paths_off(local_system: FakeWinreg, tmp_path: Path) -> None:
    deep = tmp_path / ("a_deep_folder_of_the_agent_" * 5)
    rows = rows_by_check(doctor.run_checks(doctor.Request(specs=(REPO_ROOT / "specs",), venv_root=deep)))
    budget = rows["path budget"]
    assert budget.status == "fail" and "past Windows' limit of 259" in budget.detail and "ml_features_py311" in \
        budget.detail
    assert "LongPathsEnabled=1" in budget.fix and "shorter venv root" in budget.fix
    local_system.set_value("HKLM", registry.LONG_PATHS_KEY, "LongPathsEnabled", 1, REG_DWORD)
    rows = rows_by_check(doctor.run_checks(doctor.Request(specs=(REPO_ROOT / "specs",), venv_root=deep)))
    assert rows["path budget"].status == "ok" and rows["long paths"].detail.startswith("on (")


def test_off_windows_the_windows_rows_say_n_a(tmp_path: Path) -> None:
    rows = rows_by_check(doctor.run_checks(doctor.Request(specs=(REPO_ROOT / "specs" / "train.yaml",),
                                                          venv_root=tmp_path / "venvs")))
    assert rows["long paths"].status == rows["path budget"].status == "n/a"
    assert rows["path budget"].detail.startswith("Windows only; here longest file")


def test_a_check_that_breaks_is_a_failed_row(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(doctor, "_git", lambda: (_ for _ in ()).throw(RuntimeError("boom https://u:pw@h/x")))
    rows = rows_by_check(doctor.run_checks(doctor.Request(venv_root=tmp_path)))
    assert rows["git"] == doctor.Row("git", "fail", "RuntimeError: boom https://***@h/x")
