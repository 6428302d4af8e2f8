"""served_store: a local SQLite store served by MLflow's own server app in this process; start/stop, port,
security, failures, a client left without its server, two at once.

No mocks: real HTTP, the store read back with the toolkit's MlflowClient on the SQLite URI. Stage venvs with
other mlflow versions logging through it are tested end to end, through run_notebook.py (tests/test_run_notebook.py).
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import nbformat
import pytest
from mlflow import MlflowClient

from helpers import REPO_ROOT
from mlops_kit.core.errors import EXIT_TRACKING, TrackingError
from mlops_kit.run import served_store
from mlops_kit.run.store import resolve_target

DEAD_PROXY = "http://127.0.0.1:9"  # a proxy set for the internet must not be asked for the local server
# A process like the toolkit's tracking helper: numpy/pandas unimportable, mlflow imported, the store opened, then
# the store served until stdin closes.


WORKER = r'''
import sys
sys.path.insert(0, sys.argv[1])
for heavy in ("pandas", "numpy"):
    sys.modules.setdefault(heavy, None)
from pathlib import Path
from mlflow.tracking import MlflowClient
from mlops_kit.run import served_store
MlflowClient(sys.argv[2]).search_experiments()
served = served_store.start(sys.argv[2], log_path=Path(sys.argv[3]))
print(served.url, flush=True)
sys.stdin.read()
served.stop()
print("stopped", flush=True)
'''

IMPORTED_BEFORE = r'''
import sys, urllib.error, urllib.request
sys.path.insert(0, sys.argv[1])
import mlflow.server
from mlops_kit.run import served_store
assert not mlflow.server.is_running_as_server
served = served_store.start(sys.argv[2])
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
search = served.url + "/api/2.0/mlflow/experiments/search?max_results=1"
try:
    opener.open(urllib.request.Request(search, headers={"Host": "x.example"}))
except urllib.error.HTTPError as exc:
    print(exc.code)
print(opener.open(search).status)
served.stop()
'''


# --- fixtures ----------------------------------------------------------------------------------------------------

def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "_MLFLOW_", "prometheus"))}
    return {**env, **extra}


def _toolkit_store(folder: Path) -> tuple[str, str, str]:
    """A store, experiment and run made the way the runner makes them: ``(uri, experiment_id, run_id)``."""
    target = resolve_target(None, "stage exp", env={}, cwd=folder)
    client = MlflowClient(target.uri)
    experiment_id = client.create_experiment(target.experiment, artifact_location=target.artifact_location)
    run = client.create_run(experiment_id, tags={"mlops_kit.role": "stage"}, run_name="train")
    client.log_param(run.info.run_id, "stage", "train")
    runner_file = folder / "executed.ipynb"
    runner_file.write_text("{}", encoding="utf-8")
    client.log_artifact(run.info.run_id, str(runner_file))
    return target.uri, experiment_id, run.info.run_id


@pytest.fixture()
def store(tmp_path: Path) -> tuple[str, str, str]:
    return _toolkit_store(tmp_path)


@pytest.fixture()
def served(store: tuple[str, str, str], tmp_path: Path) -> Iterator[served_store.ServedStore]:
    handle = served_store.start(store[0], log_path=tmp_path / "served.log")
    yield handle
    handle.stop()


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    import urllib.error
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _refused(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


# --- pure helpers ---------------------------------------------------------------------------------------------

def _nb(*cells: tuple[str, str]) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    make = {"code": nbformat.v4.new_code_cell, "markdown": nbformat.v4.new_markdown_cell,
            "raw": nbformat.v4.new_raw_cell}
    nb.cells = [make[kind](source) for kind, source in cells]
    return nb


@pytest.mark.parametrize(("cells", "expected"), [
    ([("code", "import mlflow\nmlflow.log_metric('a', 1)")], True),
    ([("code", "from mlflow.sklearn import log_model")], True),
    ([("code", "%pip install mlflow-skinny==2.17.2")], True),
    ([("code", "!pip install mlflow")], True),
    ([("code", "trainer = Trainer(args, report_to='mlflow')")], True),
    ([("code", "from lightning.pytorch.loggers import MLFlowLogger")], True),
    ([("code", "x = 1  # see MLflow UI")], True),
    ([("markdown", "We log to **MLflow** here"), ("code", "x = 1")], False),
    ([("raw", "import mlflow")], False),
    ([("code", "import json\nprint(json.dumps({'a': 1}))")], False),
    ([], False),
])
def test_notebook_uses_mlflow(cells: list[tuple[str, str]], expected: bool) -> None:
    assert served_store.notebook_uses_mlflow(_nb(*cells)) is expected


def test_notebook_uses_mlflow_on_raw_json_with_line_lists() -> None:
    nb = {"cells": [{"cell_type": "code", "source": ["import numpy\n", "import mlflow\n"]}]}
    assert served_store.notebook_uses_mlflow(nb)
    assert not served_store.notebook_uses_mlflow({"cells": [{"cell_type": "code", "source": ["x = 1\n"]}]})


def test_only_a_local_store_is_served() -> None:
    with pytest.raises(ValueError):
        served_store.start("http://srv:5000")


@pytest.mark.slow
def test_client_env_adds_localhost_to_no_proxy(served: served_store.ServedStore) -> None:
    got = served.client_env({"NO_PROXY": "corp.example", "HTTP_PROXY": DEAD_PROXY})
    assert got == {"MLFLOW_TRACKING_URI": served.url, "NO_PROXY": "corp.example,127.0.0.1,localhost",
                   "no_proxy": "127.0.0.1,localhost", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
                   "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
    assert "MLFLOW_HTTP_REQUEST_MAX_RETRIES" not in served.client_env({"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "9"})


# --- start / stop ----------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_serves_the_store_quietly_and_stop_frees_the_port(store: tuple[str, str, str], tmp_path: Path,
                                                        capfd: pytest.CaptureFixture[str]) -> None:
    uri, _, run_id = store
    before = dict(os.environ)
    handle = served_store.start(uri, log_path=tmp_path / "served.log")
    assert handle.url == f"http://127.0.0.1:{handle.port}"
    assert _get(f"{handle.url}/health") == (200, b"OK")
    status, body = _get(f"{handle.url}/api/2.0/mlflow/runs/get?run_id={run_id}")
    assert status == 200 and json.loads(body)["run"]["data"]["params"] == [{"key": "stage", "value": "train"}]
    status, _ = _get(f"{handle.url}/api/2.0/mlflow/runs/get?run_id={run_id}", {"Host": "rebind.example:80"})
    assert status == 403  # MLflow's own security middleware (DNS rebinding): on
    handle.stop()
    handle.stop()  # idempotent
    assert _refused(handle.port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", handle.port))  # free again, even without SO_REUSEADDR
    assert dict(os.environ) == before  # the server variables and MLflow's process default are put back
    out, err = capfd.readouterr()
    assert out == "" and err == ""  # nothing on the console: refused requests went to the log
    assert "rebind.example" in (tmp_path / "served.log").read_text(encoding="utf-8")


@pytest.mark.slow
def test_security_middleware_also_when_mlflow_server_was_imported_before(store: tuple[str, str, str],
                                                                        tmp_path: Path) -> None:
    """``mlflow.server`` installs its Host/CORS checks only when imported with the server variables set; imported
    earlier (by something else), start() installs them itself."""
    done = subprocess.run([sys.executable, "-c", IMPORTED_BEFORE, str(REPO_ROOT / "scripts"), store[0]],
                          capture_output=True, text=True, env=_clean_env(), timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["403", "200"]


@pytest.mark.slow
def test_one_store_per_process_then_another(store: tuple[str, str, str], tmp_path: Path) -> None:
    first = served_store.start(store[0], log_path=tmp_path / "a.log")
    try:
        with pytest.raises(served_store.ServedStoreError, match="already serves"):
            served_store.start(store[0])
    finally:
        first.stop()
    other, _, other_run = _toolkit_store(tmp_path / "other")
    second = served_store.start(other, log_path=tmp_path / "b.log")
    try:  # MLflow's cached store was dropped: the new server answers from the other store
        assert _get(f"{second.url}/api/2.0/mlflow/runs/get?run_id={other_run}")[0] == 200
        assert _get(f"{second.url}/api/2.0/mlflow/runs/get?run_id={store[2]}")[0] == 404
    finally:
        second.stop()


def test_unusable_store_is_one_quick_error_naming_the_log(tmp_path: Path) -> None:
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"not a database " * 100)
    log = tmp_path / "served.log"
    begin = time.monotonic()
    with pytest.raises(served_store.ServedStoreError) as caught:
        served_store.start(f"sqlite:///{db.as_posix()}", log_path=log, timeout=20)
    assert time.monotonic() - begin < 10
    message = str(caught.value)
    assert isinstance(caught.value, TrackingError) and caught.value.exit_code == EXIT_TRACKING
    assert "\n" not in message and "could not start" in message and str(log) in message
    assert "Traceback" in log.read_text(encoding="utf-8")
    assert "_MLFLOW_SERVER_FILE_STORE" not in os.environ


@pytest.mark.slow
def test_unwritable_log_is_the_same_kind_of_error(store: tuple[str, str, str], tmp_path: Path) -> None:
    (tmp_path / "a file").write_text("x", encoding="utf-8")
    before = dict(os.environ)
    with pytest.raises(served_store.ServedStoreError, match="cannot write its log"):
        served_store.start(store[0], log_path=tmp_path / "a file" / "served.log")
    assert dict(os.environ) == before


@pytest.mark.slow
def test_store_that_cannot_open_in_time_is_a_timeout_not_a_hang(store: tuple[str, str, str], tmp_path: Path) -> None:
    """Another process holds the SQLite file locked: the start gives up at its timeout; once the lock is gone,
    the thread that was still opening the store cleans up and the next start works."""
    uri = store[0]
    import mlflow.server  # noqa: F401 - imported already, so the time goes to opening the store

    before = dict(os.environ)  # the thread that finishes late must not leave MLflow's URI variables set

    lock = sqlite3.connect(uri[len("sqlite:///"):], isolation_level=None, timeout=1)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        begin = time.monotonic()
        with pytest.raises(served_store.ServedStoreError, match="did not start within 1 s") as caught:
            served_store.start(uri, log_path=tmp_path / "served.log", timeout=1)
        assert time.monotonic() - begin < 3
        assert str(tmp_path / "served.log") in str(caught.value)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    deadline = time.monotonic() + 30
    while True:
        try:
            handle = served_store.start(uri, log_path=tmp_path / "served.log")
            break
        except served_store.ServedStoreError as exc:
            assert "still starting" in str(exc) and time.monotonic() < deadline
            time.sleep(0.2)
    try:
        assert _get(f"{handle.url}/api/2.0/mlflow/runs/get?run_id={store[2]}")[0] == 200
    finally:
        handle.stop()
    assert dict(os.environ) == before


def test_file_store_is_served_with_artifacts_in_its_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3.x keeps the file store behind this switch
    store = (tmp_path / "mlruns").as_uri()
    handle = served_store.start(store, log_path=tmp_path / "served.log")
    try:
        client = MlflowClient(handle.url)
        run = client.create_run(client.create_experiment("nb"))
        client.log_metric(run.info.run_id, "m", 3.0)
        (tmp_path / "f.txt").write_text("x", encoding="utf-8")
        client.log_artifact(run.info.run_id, str(tmp_path / "f.txt"))
    finally:
        handle.stop()
    assert MlflowClient(store).get_run(run.info.run_id).data.metrics == {"m": 3.0}
    assert run.info.artifact_uri.startswith(store)
    assert (tmp_path / "mlruns" / run.info.experiment_id / run.info.run_id / "artifacts" / "f.txt").is_file()


@pytest.mark.slow
def test_a_client_left_with_a_stopped_server_fails_in_seconds(store: tuple[str, str, str], tmp_path: Path) -> None:
    """The helper died (or stopped early): the kernel's next MLflow call is an error, not minutes of retries."""
    handle = served_store.start(store[0], log_path=tmp_path / "served.log")
    handle.stop()
    env = _clean_env(MLFLOW_RUN_ID=store[2], **handle.client_env())
    begin = time.monotonic()
    done = subprocess.run([sys.executable, "-c", "import mlflow; mlflow.log_metric('m', 1)"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert done.returncode != 0 and "Connection refused" in done.stderr
    assert time.monotonic() - begin < 30


@pytest.mark.slow
def test_two_stores_served_at_once_by_two_helper_processes(tmp_path: Path) -> None:
    """Each run_notebook has its own tracking helper: two of them serve two stores side by side."""
    stores = [_toolkit_store(tmp_path / name) for name in ("a", "b")]
    workers = [subprocess.Popen([sys.executable, "-c", WORKER, str(REPO_ROOT / "scripts"), uri,
                                 str(tmp_path / f"served-{i}.log")], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                text=True, env=_clean_env()) for i, (uri, _, _) in enumerate(stores)]
    try:
        urls = [w.stdout.readline().strip() for w in workers]
        assert all(u.startswith("http://127.0.0.1:") for u in urls) and urls[0] != urls[1], urls
        for url, (_, _, run_id), value in zip(urls, stores, (1.0, 2.0), strict=True):
            MlflowClient(url).log_metric(run_id, "m", value)
    finally:
        outs = [w.communicate("", timeout=60)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers) and all("stopped" in o for o in outs)
    for (uri, _, run_id), value in zip(stores, (1.0, 2.0), strict=True):
        assert MlflowClient(uri).get_run(run_id).data.metrics == {"m": value}
    for url in urls:
        assert _refused(int(url.rsplit(":", 1)[1]))
