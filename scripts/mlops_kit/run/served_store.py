"""Serve a local MLflow store (SQLite or file store) over HTTP with MLflow's own server app, inside this process.

Why: a notebook's own ``mlflow.log_metric`` runs in the stage venv, whose mlflow may be older (schema mismatch on
a store made by the toolkit's mlflow) or mlflow-skinny (no SQLite at all). Over MLflow's REST API any client
version works, so the kernel gets ``MLFLOW_TRACKING_URI=http://127.0.0.1:<port>`` for the same store.

How: :func:`start` is called in a process that already imported mlflow (the toolkit's tracking helper); it imports
``mlflow.server`` (MLflow's Flask app, the one ``mlflow server --gunicorn-opts/--waitress-opts`` runs) and serves
it with werkzeug's threaded WSGI server on a daemon thread, bound to 127.0.0.1 on a port the OS picks. It is
configured through the variables ``mlflow server`` sets for its workers (``_MLFLOW_SERVER_FILE_STORE`` etc.); the
store, artifact root and security middleware are MLflow's own. One served store per process (MLflow's handlers keep
the store in module globals); :meth:`ServedStore.stop` frees the port and puts the variables back. Those variables,
globals and the middleware's installation are MLflow's private parts: :mod:`mlops_kit.run.compat` holds them.

Artifacts: no proxying (``--no-serve-artifacts``). The toolkit's runs have ``file://`` artifact locations, and an
MLflow client always writes a ``file://`` location itself, whatever the server says; proxying would only change
where experiments the notebook creates itself keep artifacts (``mlflow-artifacts:/`` under a destination), push
every byte through this process, and tie those runs to a server configured the same way. Instead the default
artifact root is the store's own artifact folder as a file URI (``<folder of mlflow.db>/mlruns``, like
:func:`mlops_kit.run.store.resolve_target`; a file store's own folder), so everything stays local and readable
with ``MlflowClient(<sqlite uri>)``.

Security middleware (MLflow 3.x, Host-header and CORS checks): kept on. ``mlflow.server`` installs it at import
when ``_MLFLOW_SERVER_FILE_STORE`` is set, which :func:`start` guarantees (or it is installed when the module was
imported before: :func:`mlops_kit.run.compat.server_app`); allowed hosts are ``127.0.0.1:*,localhost:*`` whatever
the caller's environment says, so a browser page on another host name (DNS rebinding) is refused while local
clients pass.

Cost (bench/bench_served_store.py; a shared 2-core machine, medians of 5-7 starts, three benches): in a process
that already imported ``mlflow.tracking`` and opened the SQLite store, :func:`start` until ``/health`` answers
takes 0.3-0.45 s (importing ``mlflow.server`` is ~0.3 s of it) and adds ~14 MB RSS; stop() 0.09 s. ``mlflow
server --workers 1`` (job execution off) took 4.4-6.2 s and ~490 MB in two processes.
So it is started only when the notebook mentions mlflow (:func:`notebook_uses_mlflow`).
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..core.errors import TrackingError
from . import compat
from .store import default_artifact_root, is_local_store, opening

HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 30.0
_DEFAULT_URI_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")  # MLflow's store lookup sets them: put back
_ALLOWED_HOSTS = "127.0.0.1:*,localhost:*"
_QUICK_RETRIES = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}
_MENTION = re.compile(r"mlflow", re.IGNORECASE)
_LOG = logging.getLogger("mlops_kit.run.served_store")
_LOCK = threading.Lock()
_active: ServedStore | None = None
_stuck: threading.Thread | None = None  # a start that timed out while its thread was still importing/opening


class ServedStoreError(TrackingError):
    """The local MLflow server could not start (exit 6); the message names its log."""


def notebook_uses_mlflow(nb: Mapping[str, Any]) -> bool:
    """Does any code cell mention mlflow (any case, anywhere: imports, ``%pip``/``!pip`` lines, comments,
    ``report_to="mlflow"``, ``MLFlowLogger``)?

    Erring towards "yes" costs a fraction of a second (a server started for nothing); a miss costs the notebook
    its MLflow calls, so the rule is a plain case-insensitive search. Markdown and raw cells never run. Code that
    uses mlflow only from an imported module or ``%run`` file is not seen: such a notebook logs as before.
    """
    for cell in nb.get("cells") or ():
        if cell.get("cell_type") == "code":
            source = cell.get("source") or ""
            if _MENTION.search(source if isinstance(source, str) else "".join(source)):
                return True
    return False


def client_env(url: str, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Variables for a client process (the kernel) of the server at ``url``, given its ``env`` (default
    os.environ): the URL; 127.0.0.1 added to ``NO_PROXY``/``no_proxy``, so a proxy configured for the internet is
    not asked for a local server; few HTTP retries unless set (MLflow's default retries a server that is gone for
    minutes; mlflow >= 1.29 reads these)."""
    env = os.environ if env is None else env
    extra = {"MLFLOW_TRACKING_URI": url, **{k: v for k, v in _QUICK_RETRIES.items() if k not in env}}
    for name in ("NO_PROXY", "no_proxy"):
        hosts = [h for h in (env.get(name) or "").split(",") if h.strip()]
        extra[name] = ",".join([*hosts, *(h for h in ("127.0.0.1", "localhost") if h not in hosts)])
    return extra


@dataclass
class ServedStore:
    """A running server; :meth:`stop` ends it (idempotent)."""

    url: str
    port: int
    store_uri: str
    artifact_root: str
    log_path: Path
    _server: Any = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _restore: Any = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    def client_env(self, env: Mapping[str, str] | None = None) -> dict[str, str]:
        """:func:`client_env` for this server."""
        return client_env(self.url, env)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving and close the listening socket; the next :func:`start` in this process may open any store."""
        global _active
        with _LOCK:
            if self._stopped:
                return
            self._stopped = True
            try:
                self._server.shutdown()  # returns once serve_forever's loop has ended (it polls every 0.1 s)
                self._thread.join(timeout)
            finally:
                self._server.server_close()
                _LOG.info("stopped serving %s at %s", self.store_uri, self.url)
                self._restore()
                if _active is self:
                    _active = None


def start(store_uri: str, artifact_root: str | None = None, *, log_path: Path | None = None,
          timeout: float = DEFAULT_TIMEOUT) -> ServedStore:
    """Serve ``store_uri`` on 127.0.0.1 and a free port until :meth:`ServedStore.stop`; returns once ``/health``
    answers. Raises :class:`ServedStoreError` (one line naming the log) when it cannot within ``timeout``."""
    global _active, _stuck
    if not is_local_store(store_uri):
        raise ValueError(f"{store_uri!r}: only a local store (SQLite file, file store) is served; use servers directly")
    with _LOCK:
        if _active is not None:
            raise ServedStoreError(f"this process already serves {_active.store_uri} at {_active.url}")
        if _stuck is not None and _stuck.is_alive():
            raise ServedStoreError("an earlier local MLflow server of this process is still starting; not again")
        root = artifact_root or default_artifact_root(store_uri)
        log_path = log_path or Path(tempfile.gettempdir()) / f"mlops_kit-served-store-{os.getpid()}.log"
        restore = _configure(store_uri, root, log_path)
        boot = _Boot(store_uri, root, after_cancel=restore)
        thread = threading.Thread(target=boot.run, name="mlflow-served-store", daemon=True)
        deadline = time.monotonic() + timeout
        thread.start()
        try:
            boot.ready.wait(timeout)
            _check_started(boot, deadline, log_path, timeout)
        except BaseException as exc:
            if boot.cancel():
                _stuck = thread
            _LOG.error("gave up: %s", exc or type(exc).__name__)
            restore()
            raise
        assert boot.server is not None
        port = boot.server.server_port
        _LOG.info("serving %s at http://%s:%s (artifact root %s, process %s)", store_uri, HOST, port, root,
                  os.getpid())
        _active = ServedStore(f"http://{HOST}:{port}", port, store_uri, root, log_path, boot.server, thread, restore)
        return _active


class _Boot:
    """The server thread's work (import MLflow's app, open the store as ``mlflow server`` does, serve), and what
    start() needs to know about it. ``cancel`` and the thread agree under one lock, so a start that gave up
    leaves no server behind, whenever the thread gets there."""

    def __init__(self, store_uri: str, artifact_root: str, after_cancel: Callable[[], None]) -> None:
        self.store_uri, self.artifact_root = store_uri, artifact_root
        # a thread that finishes opening the store after start() gave up puts the process's variables back again:
        # MLflow's store lookup sets MLFLOW_TRACKING_URI/REGISTRY_URI as it opens, after start() restored them
        self.after_cancel = after_cancel
        self.ready = threading.Event()
        self.server: Any = None
        self.error: str | None = None
        self.phase = "importing mlflow.server"
        self._lock = threading.Lock()
        self._cancelled = self._serving = False

    def run(self) -> None:
        try:
            server = self._make_server()
        except BaseException as exc:  # noqa: BLE001 - start() reports it as one line, the traceback is in the log
            with self._lock:
                cancelled = self._cancelled
                if not cancelled:  # else start() has given up and closed the log: stay quiet
                    _LOG.error("could not start while %s:\n%s", self.phase, traceback.format_exc())
                    self.error = f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
            if cancelled:
                self.after_cancel()
            self.ready.set()
            return
        with self._lock:
            if self._cancelled:
                server.server_close()
                self.after_cancel()
                return
            self.server, self._serving = server, True
        self.ready.set()
        server.serve_forever(poll_interval=0.1)  # shutdown() returns within one poll

    def cancel(self) -> bool:
        """Give up: stop a server already serving; True when the thread is still busy starting (it then cleans
        up after itself)."""
        with self._lock:
            self._cancelled = True
            serving = self._serving
        if serving:
            self.server.shutdown()
            self.server.server_close()
        return not serving and self.error is None

    def _make_server(self) -> Any:
        from werkzeug.serving import ThreadedWSGIServer, WSGIRequestHandler

        app = compat.server_app()
        self.phase = "opening the store"
        with opening(self.store_uri):
            compat.open_server_stores(self.store_uri, self.artifact_root)  # as `mlflow server` does
        self.phase = "binding 127.0.0.1"

        class Handler(WSGIRequestHandler):
            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                if not str(code).startswith(("1", "2", "3")):  # refused/failed requests only, without colours
                    _LOG.warning("%s %s -> %s", self.command, self.path, code)

            def log(self, type: str, message: str, *args: Any) -> None:
                _LOG.log(logging.ERROR if type == "error" else logging.INFO, message.rstrip(), *args)

        class Server(ThreadedWSGIServer):
            def log(self, type: str, message: str, *args: Any) -> None:
                _LOG.log(logging.ERROR if type == "error" else logging.INFO, message.rstrip(), *args)

        return Server(HOST, 0, app, Handler)  # port 0: the OS picks a free one, no race with other processes


def _check_started(boot: _Boot, deadline: float, log_path: Path, timeout: float) -> None:
    """The thread got going and ``/health`` answers over HTTP before the deadline, else one clear error."""
    where = f"the local MLflow server for {boot.store_uri}"
    if boot.error is not None:
        raise ServedStoreError(f"{where} could not start ({boot.error}); details in {log_path}")
    if boot.server is None:
        raise ServedStoreError(f"{where} did not start within {timeout:g} s (still {boot.phase}); details in "
                               f"{log_path}")
    import urllib.request  # here: the runner imports this module for notebook_uses_mlflow only (-60 ms)

    direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy for the internet
    url = f"http://{HOST}:{boot.server.server_port}/health"
    while True:
        try:
            with direct.open(url, timeout=max(0.1, min(2.0, deadline - time.monotonic()))) as resp:
                if resp.status == 200:
                    return
        except OSError as exc:
            _LOG.info("health check: %s", exc)
        if time.monotonic() >= deadline:
            raise ServedStoreError(f"{where} did not answer {url} within {timeout:g} s; details in {log_path}")
        time.sleep(0.05)


def _configure(store_uri: str, artifact_root: str, log_path: Path) -> Any:
    """Set the server variables and route the server's logging to ``log_path``; returns the undo."""
    try:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(log_path, mode="w", encoding="utf-8")  # a run of the same output: its own log
    except OSError as exc:
        raise ServedStoreError(f"the local MLflow server for {store_uri} cannot write its log {log_path} "
                               f"({exc.strerror or exc})") from None
    wanted = compat.server_environment(store_uri, artifact_root, allowed_hosts=_ALLOWED_HOSTS,
                                       boot_id=uuid.uuid4().hex)
    saved = {name: os.environ.get(name) for name in (*wanted, *_DEFAULT_URI_ENV)}
    for name, value in wanted.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    uris = compat.default_uris()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    routed = [logging.getLogger(name) for name in ("mlops_kit.run.served_store", "mlflow.server", "werkzeug")]
    before = [(lg.propagate, lg.level) for lg in routed]
    for lg in routed:
        lg.addHandler(handler)
        lg.propagate = False  # not to the console: the caller's stderr belongs to the notebook run
        lg.setLevel(logging.INFO)

    def restore() -> None:
        for lg, (propagate, level) in zip(routed, before, strict=True):
            lg.removeHandler(handler)
            lg.propagate = propagate
            lg.setLevel(level)
        handler.close()
        compat.put_back_uris(uris)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    return restore


# --- the tracking worker's calls (mlops_kit.run.tracking_worker runs them in order in one process) ---------------


def serve(store_uri: str, log_path: str, timeout: float) -> str:
    """Start serving ``store_uri`` in the worker process and return its URL. The server thread keeps running while
    the worker answers its later calls (warm-ups, the run's end), until :func:`stop_serving`; were the worker to
    exit first (its runner killed), the process takes the thread and the port with it."""
    return start(store_uri, log_path=Path(log_path), timeout=timeout).url


def stop_serving() -> bool:
    """Stop the worker's served store, if one runs (True when it did): the runner calls it once the kernel has
    exited, before it writes the run's final status."""
    served = _active
    if served is None:
        return False
    served.stop()
    return True
