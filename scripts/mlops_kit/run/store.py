"""The tracking store: which one a run uses, which local paths it lives in, and opening it (one process at a time).

Which: ``--tracking-uri``, else ``MLFLOW_TRACKING_URI``, else ``sqlite:///mlflow.db`` in the current folder (made
absolute, so the kernel and a later ``--log-existing`` find the same file). Experiments the toolkit creates in a
local SQLite store keep their artifacts in ``<folder of mlflow.db>/mlruns/<experiment>``. Experiment:
``--experiment``, else ``MLFLOW_EXPERIMENT_NAME``, else ``GO_PIPELINE_NAME``, else ``mlops_kit``.

Local stores (a SQLite file, a file store) are the ones the kernel would open itself, so they are served to it
(:mod:`mlops_kit.run.served_store`) and an output folder may not swallow them (:mod:`mlops_kit.run.outputs`).
:func:`sqlite_file` is the one parser of SQLite URIs.

Opening: the first client of a new SQLite store creates its tables, an older one's are upgraded (MLflow's alembic
migrations); :func:`opening` holds ``<db>.mlops_kit.lock`` meanwhile, so runs started together never half-migrate it.
:func:`client` keeps one ``MlflowClient`` per URI with MLflow's HTTP retries cut to seconds (unless
``MLFLOW_HTTP_REQUEST_*`` are set), and :func:`guard` turns every failure talking to the store into one
:class:`TrackingError` line naming the URI (passwords masked). This module imports no mlflow at module level: the
runner's process imports it too, and only the tracking worker calls :func:`client`.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

import filelock

from ..core.errors import BadInput, ToolkitError, TrackingError
from ..core.redact import redact, strip_credentials

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
DEFAULT_EXPERIMENT = "mlops_kit"
_SQLITE = "sqlite:///"
OPEN_LOCK_SUFFIX = ".mlops_kit.lock"  # next to mlflow.db: SQLite writes its journal in that folder anyway
OPEN_LOCK_TIMEOUT = 300.0  # an old store's schema upgrade can take a while; a dead holder's lock is freed at once
_QUIET_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                  "MLFLOW_HTTP_REQUEST_TIMEOUT": "60"}
# Files from 100 MiB go to the server's object store in 10 MiB parts through presigned URLs, when the server offers
# it (``mlflow server --serve-artifacts`` on S3, GCS or Azure: MLflow asks its /server-info), instead of one PUT the
# server must receive whole and copy on before it answers (MLflow's default threshold is 500 MiB). README: "Team
# server".
_LARGE_UPLOADS = {"MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": str(100 * 1024**2)}
# A runner talking to a database directly holds a connection only while it calls it: its calls come in two bursts
# (start, end) around a notebook that may run for hours, and a pool would keep a connection idle per running stage
# on the team's database meanwhile.
_NO_IDLE_CONNECTIONS = {"MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool"}
_DATABASE_SCHEMES = ("postgresql", "mysql", "mssql", "oracle")
_CLIENTS: dict[str, Any] = {}


@dataclass(frozen=True)
class Target:
    """Resolved tracking store and experiment."""

    uri: str
    experiment: str
    artifact_location: str | None = None  # for experiments we create in a local SQLite store


# --- which store ----------------------------------------------------------------------------------------------


def sqlite_file(uri: str) -> Path | None:
    """The file a SQLite tracking URI names (``sqlite:///mlflow.db`` -> ``mlflow.db``, as written: relative paths
    stay relative); None for any other URI and for ``sqlite:///:memory:``."""
    if not uri.startswith(_SQLITE) or uri == _SQLITE + ":memory:":
        return None
    return Path(uri[len(_SQLITE):])


def resolve_target(uri: str | None, experiment: str | None, *, env: Mapping[str, str] | None = None,
                   cwd: Path | None = None) -> Target:
    """Apply the documented precedence; a relative SQLite path becomes absolute (relative to ``cwd``)."""
    env = os.environ if env is None else env
    uri = (uri or env.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI).strip()
    name = (experiment or env.get("MLFLOW_EXPERIMENT_NAME") or env.get("GO_PIPELINE_NAME") or DEFAULT_EXPERIMENT)
    if not name.strip():
        raise BadInput("--experiment: the experiment name must not be empty")
    location = None
    db = sqlite_file(uri)
    if db is not None:
        db = Path(os.path.abspath((cwd or Path.cwd()) / db))
        uri = _SQLITE + db.as_posix()
        location = (db.parent / "mlruns" / _slug(name)).as_uri()
    elif "://" not in uri and not uri.startswith(("databricks", "file:")):
        raise BadInput(f"--tracking-uri {redact(uri)!r}: expected a URI such as http://host:5000 or sqlite:///mlflow.db")
    return Target(uri=uri, experiment=name.strip(), artifact_location=location)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("._") or "experiment"


# --- local stores ---------------------------------------------------------------------------------------------


def is_local_store(uri: str) -> bool:
    """A store the kernel would open itself (SQLite file, file store): the ones to serve. Remote servers
    (http/https/databricks) and other databases are used directly."""
    if uri.startswith("sqlite:"):
        return sqlite_file(uri) is not None
    return uri.startswith("file:") or "://" not in uri and not uri.startswith("databricks")


def default_artifact_root(store_uri: str) -> str:
    """Where experiments created through the served store keep artifacts: ``<folder of mlflow.db>/mlruns`` for
    SQLite (as :func:`resolve_target` does for the toolkit's experiments), the store's own folder for a file store
    (as ``mlflow server`` does); always a file URI."""
    db = sqlite_file(store_uri)
    if db is not None:
        return (Path(os.path.abspath(db)).parent / "mlruns").as_uri()
    if store_uri.startswith("file:"):
        return store_uri
    return Path(os.path.abspath(store_uri)).as_uri()


def store_paths(target: Target) -> list[Path]:
    """The local paths a tracking store lives in (a SQLite file and its artifact folder, or a file store)."""
    found = []
    if (db := sqlite_file(target.uri)) is not None:
        found.append(db)
    elif target.uri.startswith("file:") or "://" not in target.uri:
        found.append(Path(target.uri.removeprefix("file://").removeprefix("file:")))
    if target.artifact_location and target.artifact_location.startswith("file:"):
        found.append(Path(target.artifact_location.removeprefix("file://")).parent)  # <db folder>/mlruns
    if (Path.cwd() / "mlruns").is_dir():
        found.append(Path.cwd() / "mlruns")  # MLflow's own default artifact folder (a store opened elsewhere)
    return [Path(os.path.abspath(p)) for p in found]


# --- opening it -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def opening(store_uri: str, timeout: float = OPEN_LOCK_TIMEOUT) -> Iterator[None]:
    """Hold ``<db>.mlops_kit.lock`` while a process opens a SQLite store. Opening creates or upgrades its schema
    (MLflow's alembic migrations), and two processes doing that at once, e.g. two runs started together on a
    new ``mlflow.db``, fail and leave it half-migrated for every later client ("table _alembic_tmp_... already
    exists"). Other stores, and a folder that does not exist (MLflow names that error), are opened as they are."""
    db = sqlite_file(store_uri)
    if db is None or not Path(os.path.abspath(db)).parent.is_dir():
        yield
        return
    lock = filelock.FileLock(os.path.abspath(db) + OPEN_LOCK_SUFFIX, timeout=timeout)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise TrackingError(f"MLflow tracking store {store_uri}: another process has been opening it for "
                            f"{timeout:g} s (lock {lock.lock_file})") from None
    try:
        yield
    finally:
        lock.release()  # the file stays: deleting it could let two later openers lock two different files


@contextlib.contextmanager
def guard(uri: str, what: str) -> Iterator[None]:
    """Any failure talking to the store becomes one TrackingError line naming the URI and ``what`` (a ToolkitError
    raised inside, e.g. BadInput for a run id the store does not have, already is its own line and keeps its exit
    code)."""
    try:
        yield
    except ToolkitError:
        raise
    except Exception as exc:  # noqa: BLE001 - mlflow/requests/sqlalchemy raise many types
        reason = redact(" ".join(str(exc).split())[:300]) or type(exc).__name__
        raise TrackingError(f"MLflow tracking store {redact(uri)}: {what} failed: {reason}") from None


def preflight(uri: str) -> None:
    """Fail in seconds when an HTTP server is down (MLflow's own retries would take minutes)."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "localhost", port), timeout=5):
            pass
    except OSError as exc:
        raise TrackingError(f"MLflow tracking server {redact(uri)} is unreachable "
                            f"({exc.strerror or exc})") from None


def client(uri: str) -> Any:
    """The process's one ``MlflowClient`` of ``uri`` (quiet retries, MLflow's own logging at warnings); a SQLite
    store is opened under :func:`opening`."""
    if uri not in _CLIENTS:
        database = urlsplit(uri).scheme.partition("+")[0] in _DATABASE_SCHEMES
        for name, value in {**_QUIET_RETRIES, **_LARGE_UPLOADS, **(_NO_IDLE_CONNECTIONS if database else {})}.items():
            os.environ.setdefault(name, value)  # the user's own settings win
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stderr is for our lines
        if strip_credentials(uri) != uri:  # MLflow's "View run at <uri>" would print the password
            os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
        import logging

        from mlflow.tracking import MlflowClient

        for noisy in ("mlflow", "alembic"):  # after the import: mlflow sets its own level when imported
            logging.getLogger(noisy).setLevel(logging.WARNING)
        with opening(uri):  # creating or upgrading a SQLite store's schema: one process at a time
            _CLIENTS[uri] = MlflowClient(tracking_uri=uri)
    return _CLIENTS[uri]


def open_client(uri: str) -> Any:
    """:func:`client`, after the seconds-long reachability check."""
    preflight(uri)
    return client(uri)


def experiment_id(mlflow_client: Any, target: Target) -> str:
    """The target's experiment, created when missing (artifacts next to a local SQLite store); a deleted one is a
    TrackingError saying how to restore it."""
    exp = mlflow_client.get_experiment_by_name(target.experiment)
    if exp is None:
        try:
            return mlflow_client.create_experiment(target.experiment, artifact_location=target.artifact_location,
                                                   tags={"mlflow.experimentKind": "custom_model_development"})
        except Exception:  # noqa: BLE001 - another stage created it meanwhile
            exp = mlflow_client.get_experiment_by_name(target.experiment)
            if exp is None:
                raise
    if exp.lifecycle_stage != "active":
        raise TrackingError(f"MLflow tracking store {redact(target.uri)}: experiment {target.experiment!r} "
                            "is deleted (restore it in the MLflow UI or choose another with --experiment)")
    return exp.experiment_id


def warm(target: Target) -> None:
    """Import mlflow and open the store (SQLite: create/migrate once) before the run needs it (in the tracking
    worker, while the runner loads papermill)."""
    try:
        preflight(target.uri)
        mlflow_client = client(target.uri)
        db = sqlite_file(target.uri)
        if db is None or db.is_file():  # read only: bad input found meanwhile must leave nothing behind
            mlflow_client.get_experiment_by_name(target.experiment)
    except Exception:  # noqa: BLE001 - start_run meets the same problem and reports it properly
        pass
