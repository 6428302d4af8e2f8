"""mlops_kit.run.preflight (doctor.py's rows), the rows a Windows agent shows, through the seams: the platform
(win32), the environment a LocalSystem service gets, the registry (long paths, a Python installed for all users)."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fakes.registry import REG_DWORD, FakeWinreg
from fakes.windows import link_python

from helpers import POSIX_FAKES, REPO_ROOT
from mlops_kit.core import paths, redact, registry
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


@pytest.fixture(autouse=True)
def forget_secrets() -> Iterator[None]:
    """The MLflow row registers the logins it sees (process-wide): other tests' output stays as it is."""
    yield
    redact.forget_secrets()


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
    assert budget.status == "ok" and budget.detail.startswith("longest file ")
    assert " of 259 characters " in budget.detail
    python = rows["python 3.12 (train)"]
    assert python.status == "ok" and python.detail.endswith("(registry)")


def test_a_python_missing_with_downloads_off_is_a_failed_row_with_its_fixes(local_system: FakeWinreg) -> None:
    rows = rows_by_check(doctor.run_checks(doctor.Request(specs=(REPO_ROOT / "specs" / "ingest.yaml",))))
    row = rows["python 3.10 (ingest)"]
    assert row.status == "fail" and "downloads are off (MLOPS_PYTHON_DOWNLOADS=never)" in row.detail
    assert "registry (PEP 514: HKCU 0, HKLM 64-bit 1, HKLM 32-bit 0)" in row.detail
    assert "for all users" in row.fix and "set MLOPS_PYTHON_3_10 to its python.exe" in row.fix


@pytest.mark.parametrize(("value", "says"), [("{py311}", "is Python 3.11."), ("{tmp}", "is a folder"),
                                             ("{tmp}/missing/python.exe", "no such file")])
def test_a_bad_override_is_a_failed_row_with_its_fix(local_system: FakeWinreg, tmp_path: Path, value: str, says: str,
                                                     pythons: dict[str, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """MLOPS_PYTHON_3_10 at a 3.11, at a folder, at nothing: the row names the variable, the others still run."""
    raw = value.format(tmp=tmp_path, py311=pythons["3.11"])
    monkeypatch.setenv("MLOPS_PYTHON_3_10", raw)
    rows = rows_by_check(doctor.run_checks(doctor.Request(specs=(REPO_ROOT / "specs" / "ingest.yaml",))))
    row = rows["python 3.10 (ingest)"]
    assert row.status == "fail" and row.detail.startswith(f"MLOPS_PYTHON_3_10={raw}: ") and says in row.detail
    assert "remove the variable" in row.fix and rows["uv"].status == "ok"


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


def test_a_check_that_breaks_is_an_error_row_and_the_others_still_run(monkeypatch: pytest.MonkeyPatch,
                                                                      tmp_path: Path) -> None:
    """A bug in the doctor is not a finding about the agent: its own status and verdict, its traceback in a log."""
    monkeypatch.setattr(doctor, "_git", lambda: (_ for _ in ()).throw(RuntimeError("boom https://u:pw@h/x")))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the crash log lands here
    found = doctor.run_checks(doctor.Request(venv_root=tmp_path / "venvs"))
    rows = rows_by_check(found)
    assert rows["git"].status == "error" and rows["uv"].status == "ok"
    assert rows["git"].detail.startswith("the check itself broke: RuntimeError: boom https://***@h/x (traceback saved")
    log = Path(rows["git"].detail.split("traceback saved to ")[1].split(";")[0])
    assert log.parent == tmp_path
    assert "RuntimeError: boom https://***@h/x" in log.read_text() and "pw@" not in log.read_text()
    assert doctor.verdict(found) == "error" and doctor.exit_code("error") == 1
    document = doctor.as_json(found)
    assert document["result"] == "error" and document["exit_code"] == 1 and document["ok"] is False
    table = doctor.render_table(found)
    assert "\ngit " in table and "  ERROR  the check itself broke" in table
    assert table.splitlines()[-1].startswith("1 check(s) could not run (a bug in doctor.py)")


def test_a_tracking_uri_that_is_not_one_is_a_failed_row_not_a_broken_check(tmp_path: Path) -> None:
    for uri, says in [("http://ana:pw1234@h:abc", "'http://***@h:abc' is not a tracking URI (Port could not be cast"),
                      ("http://[::1", "'http://[::1' is not a tracking URI (Invalid IPv6 URL)"),
                      ("nonsense", "--tracking-uri 'nonsense': expected a URI such as http://host:5000")]:
        row = rows_by_check(doctor.run_checks(doctor.Request(venv_root=tmp_path, tracking_uri=uri)))["mlflow"]
        assert row.status == "fail" and row.detail.startswith(says) and "MLFLOW_TRACKING_URI" in row.fix, row
        assert "pw1234" not in row.detail + row.fix


def test_the_verdict_tells_a_failed_check_from_a_broken_doctor() -> None:
    ok, warn = doctor.Row("a", "ok", ""), doctor.Row("b", "warn", "", "fix")
    fail, error = doctor.Row("c", "fail", "", "fix"), doctor.Row("d", "error", "")
    assert doctor.verdict([ok, warn, doctor.Row("e", "n/a", "")]) == "ready"
    assert doctor.verdict([ok, fail]) == "not_ready" and doctor.verdict([fail, error]) == "error"
    assert [doctor.exit_code(v) for v in ("ready", "not_ready", "error")] == [0, 1, 1]
    assert doctor.crashed_json("internal error X: https://ana:pw@h (log)", 1) == {
        "result": "error", "exit_code": 1, "ok": False, "platform": paths._PLATFORM,
        "error": "internal error X: https://***@h (log)", "rows": []}
