"""mlops_kit.run.store: which store a run uses (URI and experiment precedence, the one SQLite URI parser), which
stores are local and where they live, a password in the URI never stored, and processes opening a new store at once."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import REPO_ROOT, free_port, run_record
from mlops_kit.core import redact
from mlops_kit.core.errors import BadInput, TrackingError
from mlops_kit.run import runrecord, store


def test_default_target_is_absolute_sqlite_with_artifacts_next_to_it(tmp_path: Path) -> None:
    target = store.resolve_target(None, None, env={}, cwd=tmp_path)
    assert target.uri == f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}"
    assert target.experiment == "mlops_kit"
    assert target.artifact_location == (tmp_path / "mlruns" / "mlops_kit").as_uri()


def test_target_precedence(tmp_path: Path) -> None:
    env = {"MLFLOW_TRACKING_URI": "http://env:5000", "MLFLOW_EXPERIMENT_NAME": "from env",
           "GO_PIPELINE_NAME": "pipe"}
    assert store.resolve_target("http://opt:1", "opt", env=env).uri == "http://opt:1"
    assert store.resolve_target(None, None, env=env) == store.Target("http://env:5000", "from env", None)
    assert store.resolve_target(None, None, env={"GO_PIPELINE_NAME": "pipe"}, cwd=tmp_path).experiment == "pipe"
    got = store.resolve_target("sqlite:///sub dir/x.db", "My exp/1", env={}, cwd=tmp_path)
    assert got.uri == f"sqlite:///{(tmp_path / 'sub dir' / 'x.db').as_posix()}"
    assert got.artifact_location == (tmp_path / "sub dir" / "mlruns" / "My_exp_1").as_uri()
    absolute = store.resolve_target(f"sqlite:///{tmp_path / 'a.db'}", None, env={})
    assert absolute.uri == f"sqlite:///{(tmp_path / 'a.db').as_posix()}"


@pytest.mark.parametrize(("uri", "experiment"), [("not a uri", None), ("http://x:1", "  ")])
def test_bad_target(uri: str, experiment: str | None) -> None:
    with pytest.raises(BadInput):
        store.resolve_target(uri, experiment, env={})


def test_sqlite_file_is_the_one_parser_of_sqlite_uris() -> None:
    assert store.sqlite_file("sqlite:///mlflow.db") == Path("mlflow.db")
    assert store.sqlite_file("sqlite:///C:/a b/mlflow.db") == Path("C:/a b/mlflow.db")
    assert store.sqlite_file("sqlite:////abs/mlflow.db") == Path("/abs/mlflow.db")
    for other in ("sqlite:///:memory:", "sqlite://", "http://host:5000", "file:///tmp/mlruns", "mlruns"):
        assert store.sqlite_file(other) is None


def test_local_stores_and_their_artifact_roots(tmp_path: Path) -> None:
    db = tmp_path / "sub" / "mlflow.db"
    sqlite = f"sqlite:///{db.as_posix()}"
    assert store.is_local_store(sqlite)
    assert store.default_artifact_root(sqlite) == (tmp_path / "sub" / "mlruns").as_uri()
    assert store.default_artifact_root(sqlite) == store.resolve_target(
        sqlite, "x", env={}).artifact_location.rsplit("/", 1)[0]
    file_store = (tmp_path / "mlruns").as_uri()
    assert store.is_local_store(file_store) and store.default_artifact_root(file_store) == file_store
    assert store.default_artifact_root(str(tmp_path / "mlruns")) == file_store
    for remote in ("http://srv:5000", "https://srv", "databricks", "databricks://profile", "sqlite:///:memory:",
                   "postgresql://u@h/db"):
        assert not store.is_local_store(remote), remote


def test_passwords_in_urls_are_hidden_and_never_stored(tmp_path: Path) -> None:
    assert redact.redact("at https://ana:p@ss:w0rd@host:5000/x and http://h") == \
        "at https://***@host:5000/x and http://h"
    assert redact.redact("sqlite:///C:/a b/mlflow.db") == "sqlite:///C:/a b/mlflow.db"
    assert redact.strip_credentials("https://ana:pw@host:5000/x?y=1") == "https://host:5000/x?y=1"
    assert redact.strip_credentials("http://host:5000") == "http://host:5000"
    path = tmp_path / "m.mlops_run.json"
    record = run_record("http://ana:pw@host:5000")
    runrecord.save_manifest(record, path)
    assert "pw" not in path.read_text() and runrecord.load_manifest(path).tracking_uri == "http://host:5000"
    assert record.tracking_uri == "http://ana:pw@host:5000"  # the run itself still uses them
    with pytest.raises(TrackingError) as err:
        store.preflight(f"http://ana:pw@127.0.0.1:{free_port()}")
    assert "://***@127.0.0.1" in str(err.value) and ":pw@" not in str(err.value) and "ana" not in str(err.value)


OPEN_AT_ONCE = """
import sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from mlops_kit.run import store
import mlflow.tracking  # the slow part first, so that the processes really open the store together
while not Path(sys.argv[3]).exists():
    time.sleep(0.01)
client = store.open_client(sys.argv[2])
client.create_experiment("e-" + sys.argv[4])
"""


@pytest.mark.slow
def test_processes_opening_a_new_sqlite_store_at_once_all_succeed(tmp_path: Path) -> None:
    """Each opener creates or upgrades the schema (MLflow's migrations); unserialised, runs started together on a
    new mlflow.db failed and left it half-migrated for every later client."""
    uri, go = f"sqlite:///{(tmp_path / 'mlflow.db').as_posix()}", tmp_path / "go"
    openers = [subprocess.Popen([sys.executable, "-c", OPEN_AT_ONCE, str(REPO_ROOT / "scripts"), uri, str(go),
                                 str(i)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
               for i in range(4)]
    time.sleep(3)  # not a correctness wait: the openers poll for "go", importing mlflow meanwhile
    go.touch()
    outputs = [p.communicate(timeout=300)[0] for p in openers]
    assert [p.returncode for p in openers] == [0] * 4, outputs
    names = {e.name for e in MlflowClient(uri).search_experiments()}
    assert {f"e-{i}" for i in range(4)} <= names
