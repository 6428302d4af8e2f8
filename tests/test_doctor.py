"""scripts/doctor.py as an operator or a GoCD job runs it, for real on Linux: the table, --json, a real MLflow
server's version, a SQLite store's schema, failing rows (exit 9) and credentials never shown."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import REPO_ROOT, free_port, run_script
from mlops_kit.core import errors

ROWS = ["account", "venv root", "long paths", "path budget", "python 3.11 (features)", "python 3.10 (ingest)",
        "python 3.12 (train)", "uv", "git", "mlflow", "free disk", "console encoding"]


def doctor(*args: str, cwd: Path = REPO_ROOT) -> tuple[int, str, str]:
    done = run_script("doctor.py", *args, cwd=cwd, timeout=300)
    return done.returncode, done.stdout, done.stderr


def test_the_table_for_a_person(tmp_path: Path) -> None:
    code, out, err = doctor("--venv-root", str(tmp_path / "venvs"), "--tracking-uri",
                            f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert code == 0, out + err
    lines = out.splitlines()
    assert [line.split("  ")[0].strip() for line in lines[:len(ROWS)]] == ROWS  # specs/ of the working copy
    assert lines[-1].startswith("all checks passed")
    assert f"{tmp_path / 'venvs'} (--venv-root), writable" in out and "N/A   Windows only" in out
    assert f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}: created by the first run" in out
    assert not (tmp_path / "venvs").exists() and not (tmp_path / "mlflow.db").exists()  # nothing was made


def test_json_for_a_machine_with_a_real_server(tmp_path: Path, mlflow_server: str) -> None:
    import importlib.metadata

    code, out, _ = doctor("--json", "--spec", str(REPO_ROOT / "specs" / "train.yaml"), "--venv-root",
                          str(tmp_path), "--tracking-uri", mlflow_server)
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["platform"] == "linux"
    rows = {row["check"]: row for row in data["rows"]}
    assert set(rows) == {"account", "venv root", "long paths", "path budget", "python 3.12 (train)", "uv", "git",
                         "mlflow", "free disk", "console encoding"}
    assert rows["mlflow"] == {"check": "mlflow", "status": "ok", "fix": "", "detail": (
        f"{mlflow_server}: MLflow server {importlib.metadata.version('mlflow')}; this toolkit's client "
        f"{importlib.metadata.version('mlflow')}")}
    assert rows["long paths"]["status"] == "n/a"


def test_failing_rows_exit_9_with_their_fixes_and_no_secret_shown(tmp_path: Path) -> None:
    a_file = tmp_path / "not a folder"
    a_file.write_text("x")
    closed = f"http://ana:s3cret-pw@127.0.0.1:{free_port()}"
    for extra in ([], ["--json"]):
        code, out, err = doctor(*extra, "--venv-root", str(a_file / "venvs"), "--tracking-uri", closed)
        assert code == errors.EXIT_NOT_READY == 9, out + err
        assert "s3cret" not in out + err and "ana:" not in out + err
    rows = {row["check"]: row for row in json.loads(out)["rows"]}
    assert rows["venv root"]["status"] == "fail" and "set ML_VENV_ROOT" in rows["venv root"]["fix"]
    assert rows["mlflow"]["status"] == "fail" and rows["mlflow"]["detail"].startswith("http://***@127.0.0.1:")
    assert "is unreachable" in rows["mlflow"]["detail"] and "MLFLOW_TRACKING_URI" in rows["mlflow"]["fix"]
    code, out, _ = doctor("--venv-root", str(a_file / "venvs"), "--tracking-uri", closed)
    assert "fix: set ML_VENV_ROOT" in out and out.splitlines()[-1] == "2 check(s) failed"


@pytest.mark.slow
def test_a_sqlite_store_s_schema(tmp_path: Path) -> None:
    from mlflow import MlflowClient

    store = tmp_path / "mlflow.db"
    MlflowClient(f"sqlite:///{store}").search_experiments()  # creates the store at this MLflow's schema
    code, out, _ = doctor("--json", "--spec", str(REPO_ROOT / "specs" / "train.yaml"), "--tracking-uri",
                          f"sqlite:///{store}")
    row = {r["check"]: r for r in json.loads(out)["rows"]}["mlflow"]
    assert code == 0 and row["status"] == "ok" and "schema revision " in row["detail"] and ", current for MLflow" in \
        row["detail"]
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"not sqlite at all" * 100)
    code, out, _ = doctor("--json", "--spec", str(REPO_ROOT / "specs" / "train.yaml"), "--tracking-uri",
                          f"sqlite:///{garbage}")
    row = {r["check"]: r for r in json.loads(out)["rows"]}["mlflow"]
    assert code == 9 and row["status"] == "fail" and "not an MLflow store" in row["detail"]


def test_help_documents_the_rows_and_exit_9() -> None:
    code, out, _ = doctor("--help")
    assert code == 0 and "Exit 0 when no check failed" in out
    assert "  9    agent not ready (doctor.py)" in out


def test_outside_a_working_copy_it_says_no_spec_was_checked(tmp_path: Path) -> None:
    code, out, _ = doctor("--json", "--venv-root", str(tmp_path / "v"), cwd=tmp_path)
    rows = {row["check"]: row for row in json.loads(out)["rows"]}
    assert code == 0 and rows["specs"]["status"] == "warn" and "--spec" in rows["specs"]["fix"]
    assert os.path.isdir(tmp_path) and not any(tmp_path.iterdir())
