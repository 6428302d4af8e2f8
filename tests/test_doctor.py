"""scripts/doctor.py as an operator or a GoCD job runs it, for real on Linux: the table, --json, a real MLflow
server's version, a SQLite store's schema, failing rows (exit 1, result not_ready), a broken doctor (exit 1, result
error) and credentials never shown."""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path

import pytest

from helpers import REPO_ROOT, free_port, run_script

ROWS = ["account", "venv root", "long paths", "path budget", "python 3.11 (features)", "python 3.10 (ingest)",
        "python 3.12 (train)", "uv", "git", "mlflow", "free disk", "console encoding"]


def doctor(*args: str, cwd: Path = REPO_ROOT, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    done = run_script("doctor.py", *args, cwd=cwd, timeout=300, env={**os.environ, **env} if env else None)
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


def test_the_readme_example_shows_the_rows_doctor_prints() -> None:
    """The operator guide's sample table: the same checks, in the same order, with statuses doctor uses."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    sample = text.split("python scripts\\doctor.py --tracking-uri", 1)[1].split("```")[2]  # the output block
    shown = [re.match(r"\s*(.+?)\s{2,}(OK|WARN|FAIL|N/A|ERROR)\s", line) for line in sample.splitlines()]
    assert [m[1] for m in shown if m] == ROWS


def test_json_for_a_machine_with_a_real_server(tmp_path: Path, mlflow_server: str) -> None:
    import importlib.metadata

    code, out, _ = doctor("--json", "--spec", str(REPO_ROOT / "specs" / "train.yaml"), "--venv-root",
                          str(tmp_path), "--tracking-uri", mlflow_server)
    data = json.loads(out)
    assert code == 0 and data["ok"] is True and data["platform"] == "linux"
    assert data["result"] == "ready" and data["exit_code"] == 0
    rows = {row["check"]: row for row in data["rows"]}
    assert set(rows) == {"account", "venv root", "long paths", "path budget", "python 3.12 (train)", "uv", "git",
                         "mlflow", "free disk", "console encoding"}
    assert rows["mlflow"] == {"check": "mlflow", "status": "ok", "fix": "", "detail": (
        f"{mlflow_server}: MLflow server {importlib.metadata.version('mlflow')}; this toolkit's client "
        f"{importlib.metadata.version('mlflow')}")}
    assert rows["long paths"]["status"] == "n/a"


def test_failing_rows_exit_1_with_their_fixes_and_no_secret_shown(tmp_path: Path) -> None:
    """The issue's contract (0 when all pass, 1 otherwise); a server that is down; a password in the URI."""
    a_file = tmp_path / "not a folder"
    a_file.write_text("x")
    closed = f"http://ana:s3cret-pw@127.0.0.1:{free_port()}"
    for extra in ([], ["--json"]):
        code, out, err = doctor(*extra, "--venv-root", str(a_file / "venvs"), "--tracking-uri", closed)
        assert code == 1, out + err
        assert "s3cret" not in out + err and "ana:" not in out + err
    data = json.loads(out)
    assert data["result"] == "not_ready" and data["exit_code"] == 1 and data["ok"] is False
    rows = {row["check"]: row for row in data["rows"]}
    assert rows["venv root"]["status"] == "fail" and "set ML_VENV_ROOT" in rows["venv root"]["fix"]
    assert rows["mlflow"]["status"] == "fail" and rows["mlflow"]["detail"].startswith("http://***@127.0.0.1:")
    assert "is unreachable" in rows["mlflow"]["detail"] and "MLFLOW_TRACKING_URI" in rows["mlflow"]["fix"]
    code, out, _ = doctor("--venv-root", str(a_file / "venvs"), "--tracking-uri", closed)
    assert "fix: set ML_VENV_ROOT" in out and out.splitlines()[-1] == "2 check(s) failed"


def test_a_broken_doctor_is_told_from_a_failed_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """Both exit 1; --json still prints a document whose result is 'error', with the one line (masked)."""
    import doctor as script

    from mlops_kit.run import preflight

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the crash log lands here
    monkeypatch.setattr(preflight, "run_checks", lambda _request: 1 / 0)
    assert script.main(["--json", "--tracking-uri", "http://ana:s3cret-pw@h:5000"]) == 1
    captured = capsys.readouterr()
    data = json.loads(captured.out)
    assert data["result"] == "error" and data["exit_code"] == 1 and data["rows"] == []
    assert data["error"].startswith("internal error ZeroDivisionError: division by zero (traceback saved to ")
    assert captured.err.count("\n") == 1 and "internal error ZeroDivisionError" in captured.err
    assert script.main(["--json", "--no-such-flag"]) == 2  # a bad argument: every tool's 2, still a document
    data = json.loads(capsys.readouterr().out)
    assert data["result"] == "error" and data["exit_code"] == 2 and "unrecognized arguments" in data["error"]
    assert script.main(["--no-such-flag"]) == 2 and capsys.readouterr().out == ""  # the table: the line alone


def test_a_password_is_masked_when_the_server_answers_and_sent_as_mlflow_would(tmp_path: Path) -> None:
    """A login in the URI (or in MLFLOW_TRACKING_USERNAME/PASSWORD) reaches a server behind a login (a reverse
    proxy with basic auth, played by a stdlib server) as MLflow's client sends it, and never the output."""
    import base64
    import http.server
    import threading

    good = "Basic " + base64.b64encode(b"ana:s3cret-pw").decode()

    class Proxy(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            ok = self.headers.get("Authorization") == good and self.path == "/version"
            body = b"3.1.0" if ok else b"login required"
            self.send_response(200 if ok else 401)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    try:
        spec = str(REPO_ROOT / "specs" / "train.yaml")
        code, out, err = doctor("--json", "--spec", spec, "--tracking-uri", f"http://ana:s3cret-pw@127.0.0.1:{port}")
        row = {r["check"]: r for r in json.loads(out)["rows"]}["mlflow"]
        assert row["status"] == "ok" and row["detail"].startswith(f"http://***@127.0.0.1:{port}: MLflow server 3.1.0")
        assert "s3cret" not in out + err
        env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}", "MLFLOW_TRACKING_USERNAME": "ana",
               "MLFLOW_TRACKING_PASSWORD": "s3cret-pw"}
        code, out, err = doctor("--spec", spec, env=env)
        assert "MLflow server 3.1.0" in out and "s3cret" not in out + err
        env["MLFLOW_TRACKING_PASSWORD"] = "wrong-pw"
        code, out, err = doctor("--spec", spec, env=env)
        assert code == 1 and "refused the request (HTTP 401)" in out and "MLFLOW_TRACKING_PASSWORD" in out
    finally:
        server.shutdown()


def test_a_server_that_hangs_or_fails_is_a_failed_row(tmp_path: Path) -> None:
    """Accepts the connection and never answers: failed after the doctor's timeout, not a hung job; HTTP 500 (its
    database down behind it): failed too."""
    import http.server
    import socket
    import threading

    class Broken(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            self.send_error(500)

        def log_message(self, *_args: object) -> None:
            pass

    spec = str(REPO_ROOT / "specs" / "train.yaml")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        code, out, err = doctor("--json", "--spec", spec, "--tracking-uri",
                                f"http://ana:s3cret-pw@127.0.0.1:{silent.getsockname()[1]}")
    row = {r["check"]: r for r in json.loads(out)["rows"]}["mlflow"]
    assert code == 1 and row["status"] == "fail" and row["detail"].endswith("is unreachable (timed out)")
    assert "s3cret" not in out + err
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        broken = f"http://127.0.0.1:{server.server_address[1]}"
        code, out, _ = doctor("--json", "--spec", spec, "--tracking-uri", broken)
    finally:
        server.shutdown()
    row = {r["check"]: r for r in json.loads(out)["rows"]}["mlflow"]
    assert code == 1 and row["status"] == "fail" and "answers with an error (HTTP 500)" in row["detail"]


def test_a_database_store_that_is_down_and_one_that_answers(tmp_path: Path) -> None:
    """A runner given the team's database URI: its port is tried (a closed one fails), the password masked."""
    import socket

    spec = str(REPO_ROOT / "specs" / "train.yaml")
    closed = f"postgresql://mlflow:s3cret-pw@127.0.0.1:{free_port()}/mlflow"
    code, out, err = doctor("--json", "--spec", spec, "--tracking-uri", closed)
    row = {r["check"]: r for r in json.loads(out)["rows"]}["mlflow"]
    assert code == 1 and row["status"] == "fail" and row["detail"].startswith("postgresql://***@127.0.0.1:")
    assert "is unreachable" in row["detail"] and "s3cret" not in out + err
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        port = listening.getsockname()[1]
        code, out, err = doctor("--json", "--spec", spec, "--tracking-uri",
                                f"postgresql+psycopg2://mlflow:s3cret-pw@127.0.0.1:{port}/mlflow")
    row = {r["check"]: r for r in json.loads(out)["rows"]}["mlflow"]
    assert row["status"] == "ok" and f"the database answers on port {port}" in row["detail"]
    assert "s3cret" not in out + err


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
    assert code == 1 and row["status"] == "fail" and "not an MLflow store" in row["detail"]


def test_help_documents_the_rows_and_the_exit_codes() -> None:
    code, out, _ = doctor("--help")
    assert code == 0 and "Exit 0 when all checks pass (warnings allowed), 1 otherwise" in out
    assert '"not_ready" (a check failed) or "error"' in out
    assert "  9 " not in out  # no tool has exit 9


def test_outside_a_working_copy_it_says_no_spec_was_checked(tmp_path: Path) -> None:
    code, out, _ = doctor("--json", "--venv-root", str(tmp_path / "v"), cwd=tmp_path)
    rows = {row["check"]: row for row in json.loads(out)["rows"]}
    assert code == 0 and rows["specs"]["status"] == "warn" and "--spec" in rows["specs"]["fix"]
    assert os.path.isdir(tmp_path) and not any(tmp_path.iterdir())
