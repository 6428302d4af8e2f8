"""Every use of MLflow's and papermill's private parts, in one place: what an upgrade of either may break.

Two features need more than the libraries' public API:

* serving a local store to the kernel with MLflow's own server code inside the tracking worker
  (:mod:`mlops_kit.run.served_store`): the variables ``mlflow server`` hands its workers (``_MLFLOW_SERVER_*``),
  the store its request handlers cache in module globals, the process-wide default URIs that opening a store sets,
  the server's security middleware;
* running the notebook's cells our way inside papermill (:mod:`mlops_kit.run.notebook`): a papermill engine whose
  client replaces papermill's per-cell loop (``PapermillNotebookClient.papermill_execute_cells``), driving papermill's
  execution manager (cell start/complete/exception, saving as cells complete) and its error banner.

:data:`PRIVATE` lists each name with what it is for and what to re-check when it moves; tests/run/test_compat.py
checks every one against the installed versions (and the behaviour the papermill override relies on), so an
upgrade that moves one fails there, naming it, before a run misbehaves. Nothing here imports mlflow or papermill at
module level: importing this module costs nothing, each function imports what it touches.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

# ---------------------------------------------------------------------------------------------------- the list


@dataclass(frozen=True)
class Private:
    """One private name we rely on: ``name`` is a dotted attribute path from an importable module."""

    name: str
    used_for: str
    fix: str
    value: str | None = None  # for a constant: the value we rely on (an environment variable's name)


_SERVED = "see mlops_kit.run.served_store and compat.server_environment"
PRIVATE: tuple[Private, ...] = (
    *(Private(f"mlflow.server.constants.{constant}", f"the variable `mlflow server` hands its workers: {what}",
              f"set the variable MLflow now reads ({_SERVED})", variable)
      for constant, variable, what in (
          ("BACKEND_STORE_URI_ENV_VAR", "_MLFLOW_SERVER_FILE_STORE", "the store to serve"),
          ("REGISTRY_STORE_URI_ENV_VAR", "_MLFLOW_SERVER_REGISTRY_STORE", "the model registry's store"),
          ("ARTIFACT_ROOT_ENV_VAR", "_MLFLOW_SERVER_ARTIFACT_ROOT", "the default artifact root"),
          ("SERVE_ARTIFACTS_ENV_VAR", "_MLFLOW_SERVER_SERVE_ARTIFACTS", "artifact proxying (kept off)"),
          ("ARTIFACTS_DESTINATION_ENV_VAR", "_MLFLOW_SERVER_ARTIFACT_DESTINATION", "proxied artifacts (unset)"),
          ("ARTIFACTS_ONLY_ENV_VAR", "_MLFLOW_SERVER_ARTIFACTS_ONLY", "artifacts-only mode (kept off)"),
          ("READ_REPLICA_BACKEND_STORE_URI_ENV_VAR", "_MLFLOW_SERVER_READ_REPLICA_BACKEND_STORE",
           "a read replica (unset)"),
          ("PROMETHEUS_EXPORTER_ENV_VAR", "prometheus_multiproc_dir", "the metrics exporter (unset)"))),
    Private("mlflow.server.handlers.STATIC_PREFIX_ENV_VAR", "a URL prefix that would move /health (unset)",
            f"unset the variable MLflow now reads ({_SERVED})", "_MLFLOW_STATIC_PREFIX"),
    Private("mlflow.environment_variables._MLFLOW_SERVER_BOOT_ID.name", "marks the process as a tracking server",
            f"set what `mlflow server` now sets for its workers ({_SERVED})", "_MLFLOW_SERVER_BOOT_ID"),
    Private("mlflow.environment_variables._MLFLOW_IN_JOB_EXECUTOR.name", "keeps MLflow's job runner off",
            f"set what `mlflow server` now sets for its workers ({_SERVED})", "_MLFLOW_IN_JOB_EXECUTOR"),
    Private("mlflow.server.app", "MLflow's Flask app, the one `mlflow server` serves",
            "serve what `mlflow server` now serves (compat.server_app)"),
    Private("mlflow.server.is_running_as_server", "whether mlflow.server installed its security middleware itself",
            "install the middleware the way MLflow now does (compat.server_app)"),
    Private("mlflow.server.security.init_security_middleware", "the Host-header and CORS checks of `mlflow server`",
            "install the middleware the way MLflow now does (compat.server_app)"),
    Private("mlflow.server.handlers.initialize_backend_stores", "opens the store as `mlflow server` does",
            "open the store the way `mlflow server` now does (compat.open_server_stores)"),
    *(Private(f"mlflow.server.handlers.{cached}", "a store the request handlers cache in a module global: dropped "
              "before another store is served in the same process", "drop MLflow's cached stores the way it now "
              "keeps them (compat.open_server_stores)") for cached in ("_tracking_store", "_model_registry_store",
                                                                      "_artifact_repo")),
    Private("mlflow.tracking._tracking_service.utils._tracking_uri", "the process's default tracking URI, which "
            "opening the served store sets: put back afterwards", "save and restore MLflow's default tracking URI "
            "where it now lives (compat.default_uris)"),
    Private("mlflow.tracking._model_registry.utils._registry_uri", "the process's default registry URI, likewise",
            "save and restore MLflow's default registry URI where it now lives (compat.default_uris)"),
    Private("papermill.engines.Engine.execute_managed_notebook", "papermill's engine extension point (our engine)",
            "re-check compat._engine_class against papermill's NBClientEngine"),
    Private("papermill.engines.papermill_engines.register", "registers our engine by name",
            "register the engine the way papermill now does (compat.register_papermill_engine)"),
    Private("papermill.clientwrap.PapermillNotebookClient.papermill_execute_cells", "papermill's per-cell loop, "
            "the one method our client overrides", "re-check compat._client_class and notebook._run_cells against "
            "papermill's client"),
    *(Private(f"papermill.engines.NotebookExecutionManager.{hook}", "papermill's bookkeeping of a cell (progress "
              "bar, timing metadata, saving)", "call papermill's execution manager the way its own loop now does "
              "(compat.PapermillCells)") for hook in ("cell_start", "cell_exception", "cell_complete")),
    Private("papermill.execute.raise_for_execution_errors", "adds papermill's error banner after a stopped run",
            "add the banner the way papermill now does (compat.add_error_banner)"),
)


def check(private: Private) -> None:
    """Resolve ``private.name`` in the installed packages; an AssertionError naming it and the fix when it moved."""
    parts = private.name.split(".")
    found: Any = None
    for cut in range(len(parts) - 1, 0, -1):  # the longest importable module prefix, then attributes
        try:
            found = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for attribute in parts[cut:]:
            if not hasattr(found, attribute):
                raise AssertionError(_moved(private, f"{'.'.join(parts[:cut])} has no {attribute!r}"))
            found = getattr(found, attribute)
        break
    else:
        raise AssertionError(_moved(private, "no importable module"))
    if private.value is not None and found != private.value:
        raise AssertionError(_moved(private, f"it is {found!r} now, not {private.value!r}"))


def _moved(private: Private, problem: str) -> str:
    package = private.name.split(".")[0]
    version = getattr(importlib.import_module(package), "__version__", "?")
    return f"{private.name} moved in {package} {version} ({problem}); we use it for {private.used_for}; fix: " \
           f"{private.fix}"


# ---------------------------------------------------------------------------------------------------- MLflow's server

# What `mlflow server` (cli.server + server._run_server) exports for its workers, as we set it: the store, the
# registry (same store), the default artifact root, a boot id (marks a tracking-server process), workspaces off,
# allowed hosts. Unset: variables that would turn on something we do not want (artifact proxying, artifacts-only,
# a static prefix moving /health, prometheus, disabled security, CORS origins).
SERVER_VARIABLES = ("_MLFLOW_SERVER_FILE_STORE", "_MLFLOW_SERVER_REGISTRY_STORE", "_MLFLOW_SERVER_ARTIFACT_ROOT",
                    "_MLFLOW_SERVER_SERVE_ARTIFACTS", "_MLFLOW_SERVER_ARTIFACT_DESTINATION",
                    "_MLFLOW_SERVER_ARTIFACTS_ONLY", "_MLFLOW_SERVER_READ_REPLICA_BACKEND_STORE",
                    "_MLFLOW_STATIC_PREFIX", "_MLFLOW_SERVER_BOOT_ID", "_MLFLOW_IN_JOB_EXECUTOR",
                    "MLFLOW_ENABLE_WORKSPACES", "MLFLOW_SERVER_ALLOWED_HOSTS", "MLFLOW_SERVER_CORS_ALLOWED_ORIGINS",
                    "MLFLOW_SERVER_DISABLE_SECURITY_MIDDLEWARE", "prometheus_multiproc_dir")


def server_environment(store_uri: str, artifact_root: str, *, allowed_hosts: str,
                       boot_id: str) -> dict[str, str | None]:
    """The variables `mlflow server` would hand its workers to serve ``store_uri``: a value, or None to unset."""
    wanted = {"_MLFLOW_SERVER_FILE_STORE": store_uri, "_MLFLOW_SERVER_REGISTRY_STORE": store_uri,
              "_MLFLOW_SERVER_ARTIFACT_ROOT": artifact_root, "_MLFLOW_SERVER_BOOT_ID": boot_id,
              "_MLFLOW_IN_JOB_EXECUTOR": "false", "MLFLOW_ENABLE_WORKSPACES": "false",
              "MLFLOW_SERVER_ALLOWED_HOSTS": allowed_hosts}
    return {name: wanted.get(name) for name in SERVER_VARIABLES}


def server_app() -> Any:
    """MLflow's Flask app with its security middleware (Host header, CORS). ``mlflow.server`` installs it when
    imported with the server variables set; imported earlier (by something else), it is installed here, once."""
    import mlflow.server

    app = mlflow.server.app
    if not mlflow.server.is_running_as_server and not getattr(app, "_mlops_kit_secured", False):
        from mlflow.server import security

        security.init_security_middleware(app)
        setattr(app, "_mlops_kit_secured", True)  # a mark of ours on MLflow's app object
    return app


def open_server_stores(store_uri: str, artifact_root: str) -> None:
    """Point MLflow's request handlers at ``store_uri`` as `mlflow server` does. They cache the store in module
    globals: an earlier start's (finished or given up) is dropped first. (Not at stop: a request still in flight
    then keeps using the right store rather than opening a default one.)"""
    from mlflow.server import handlers

    handlers._tracking_store = handlers._model_registry_store = handlers._artifact_repo = None
    handlers.initialize_backend_stores(store_uri, store_uri, artifact_root)


def default_uris() -> tuple[Any, Any]:
    """The process-wide default tracking/registry URIs, which opening the served store overwrites."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    return tracking_utils._tracking_uri, registry_utils._registry_uri


def put_back_uris(uris: tuple[Any, Any]) -> None:
    """The process defaults as :func:`default_uris` found them: no ``sqlite://`` default left behind for this
    process's own clients."""
    from mlflow.tracking._model_registry import utils as registry_utils
    from mlflow.tracking._tracking_service import utils as tracking_utils

    tracking_utils._tracking_uri, registry_utils._registry_uri = uris


# ---------------------------------------------------------------------------------------------------- papermill

PAPERMILL_ENGINE = "mlops_kit"


class PapermillCells:
    """The notebook being executed, as our cell loop drives it: papermill's client and execution manager behind
    plain methods (each one what papermill's own loop does)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    @property
    def nb(self) -> Any:
        return self._client.nb

    def execute(self, cell: Any, index: int) -> None:
        """Papermill's bookkeeping first (progress bar, timing metadata), then nbclient executes the cell."""
        self._client.nb_man.cell_start(cell, index)
        self._client.execute_cell(cell, index)

    def failed(self, index: int) -> None:
        self._client.nb_man.cell_exception(self.nb.cells[index], cell_index=index)

    def complete(self, index: int) -> None:
        self._client.nb_man.cell_complete(self.nb.cells[index], cell_index=index)

    def save_progress_to(self, output: Path) -> None:
        """Papermill writes the notebook there as cells complete (and autosaves long cells)."""
        self._client.nb_man.output_path = str(output)

    def run_silently(self, code: str) -> bool:
        """Run ``code`` in the kernel without a cell or history; True when it ran without error."""
        reply = self._client.wait_for_reply(self._client.kc.execute(code, silent=True, store_history=False))
        return bool(reply) and reply["content"].get("status") == "ok"

    def stop_kernel_at_once(self) -> None:
        """No graceful shutdown (its closing requests would wait on a kernel stuck in a cell)."""
        self._client.shutdown_kernel = "immediate"


class CellRunner(Protocol):
    """What :func:`mlops_kit.run.notebook.execute` hands our engine (papermill passes ``execute_notebook``'s extra
    keywords on to the engine): the client's options, then the cell loop."""

    def client_options(self, nb: Any) -> dict[str, Any]: ...

    def run_cells(self, cells: PapermillCells) -> None: ...


def register_papermill_engine() -> None:
    """papermill's extension point: engine :data:`PAPERMILL_ENGINE` runs the parameterized notebook for
    ``papermill.execute_notebook(..., engine_name=PAPERMILL_ENGINE, mlops_cells=<CellRunner>)``."""
    from papermill.engines import papermill_engines

    papermill_engines.register(PAPERMILL_ENGINE, _engine_class())


def _engine_class() -> type:
    import logging

    from papermill.engines import Engine

    class MlopsKitEngine(Engine):
        """papermill's nbclient engine with our client (below) and the run's :class:`CellRunner`."""

        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, *, mlops_cells: CellRunner,
                                     log_output: bool = False, start_timeout: int | None = 60,
                                     **_unused: Any) -> None:
            client = _client_class()(nb_man, mlops_cells, kernel_name=kernel_name, startup_timeout=start_timeout,
                                     log=logging.getLogger("papermill"), log_output=log_output,
                                     **mlops_cells.client_options(nb_man.nb))
            client.execute()

    return MlopsKitEngine


def _client_class() -> type:
    """papermill's client with one override, :meth:`papermill_execute_cells` (its per-cell loop, called between the
    kernel's start and papermill's closing ``kernel_info`` request): the run's :class:`CellRunner` runs the cells.
    Everything else is papermill's."""
    from papermill.clientwrap import PapermillNotebookClient

    class Client(PapermillNotebookClient):
        def __init__(self, nb_man: Any, cells: CellRunner, **kw: Any) -> None:
            super().__init__(nb_man, **kw)
            self.mlops_cells = cells

        def papermill_execute_cells(self) -> None:
            self.mlops_cells.run_cells(PapermillCells(self))

    return Client


def add_error_banner(nb: Any) -> None:
    """papermill's banner and link to the failing cell, what it adds itself after a cell error (a run we stopped
    ourselves, on a timeout or a dead kernel, gets it too)."""
    from papermill.exceptions import PapermillExecutionError
    from papermill.execute import raise_for_execution_errors

    try:
        raise_for_execution_errors(nb, None)
    except PapermillExecutionError:
        pass
