"""mlops_kit.run.compat: every private MLflow or papermill name the toolkit relies on is still there in the installed
versions (one test per name, failing with the name and what to fix), papermill still drives cells the way our
override assumes, and importing the run modules imports neither library (the runner's start stays fast)."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest

from helpers import SCRIPTS
from mlops_kit.run import compat


@pytest.mark.parametrize("private", compat.PRIVATE, ids=lambda p: p.name)
def test_each_private_name_is_where_we_use_it(private: compat.Private) -> None:
    compat.check(private)


def test_a_moved_name_fails_naming_it_and_the_fix() -> None:
    gone = compat.Private("mlflow.server.handlers._no_such_store", "a cached store", "drop it where it now lives")
    with pytest.raises(AssertionError) as caught:
        compat.check(gone)
    message = str(caught.value)
    assert "mlflow.server.handlers._no_such_store moved in mlflow" in message
    assert "drop it where it now lives" in message
    renamed = compat.Private("mlflow.server.constants.BACKEND_STORE_URI_ENV_VAR", "the store", "set the new one",
                             "_MLFLOW_SERVER_OTHER")
    with pytest.raises(AssertionError, match="it is '_MLFLOW_SERVER_FILE_STORE' now, not '_MLFLOW_SERVER_OTHER'"):
        compat.check(renamed)


def test_every_server_variable_we_set_or_clear_is_one_mlflow_knows() -> None:
    """The variables compat sets for the served store are MLflow's: private ones are checked in PRIVATE, public ones
    are in mlflow.environment_variables."""
    import mlflow.environment_variables as public

    private = {p.value for p in compat.PRIVATE if p.value}
    for name in compat.SERVER_VARIABLES:
        assert name in private or hasattr(public, name), f"{name}: no longer an MLflow variable; see compat"
    env = compat.server_environment("sqlite:///x.db", "file:///mlruns", allowed_hosts="h", boot_id="b")
    assert set(env) == set(compat.SERVER_VARIABLES) and env["_MLFLOW_SERVER_FILE_STORE"] == "sqlite:///x.db"


def test_papermill_still_drives_cells_through_the_one_method_we_override() -> None:
    """Our engine relies on papermill's extension points: an Engine's ``execute_managed_notebook`` and the client's
    ``papermill_execute_cells`` loop, called by ``PapermillNotebookClient.execute`` between kernel start and the
    closing ``kernel_info``. If a papermill upgrade changes that, this fails before any notebook misbehaves."""
    from papermill.clientwrap import PapermillNotebookClient
    from papermill.engines import Engine, NotebookExecutionManager

    execute = inspect.getsource(PapermillNotebookClient.execute)
    assert execute.index("setup_kernel") < execute.index("self.papermill_execute_cells()") < \
        execute.index("kernel_info()"), "papermill's client no longer runs cells through papermill_execute_cells"
    assert "execute_managed_notebook" in inspect.getsource(Engine.execute_notebook)
    loop = inspect.getsource(PapermillNotebookClient.papermill_execute_cells)
    for hook in ("nb_man.cell_start", "execute_cell", "nb_man.cell_exception", "nb_man.cell_complete"):
        assert hook in loop, f"papermill's cell loop no longer calls {hook}: re-check compat.PapermillCells"
    assert "self.output_path" in inspect.getsource(NotebookExecutionManager.save), \
        "papermill no longer saves to nb_man.output_path: re-check compat.PapermillCells.save_progress_to"
    client = compat._client_class()
    overridden = {name for name, value in vars(client).items()
                  if callable(value) and hasattr(PapermillNotebookClient, name)}
    assert overridden == {"__init__", "papermill_execute_cells"}, "keep the override to the per-cell loop"


def test_importing_the_run_modules_imports_neither_mlflow_nor_papermill() -> None:
    """The runner's process imports these first thing: mlflow is the tracking worker's, papermill is loaded while
    the worker starts (an eager import would delay the run's start by a second or more)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import run_notebook; "
            "from mlops_kit.run import compat, html, notebook, stage_run, upload; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('mlflow', 'papermill', 'nbconvert')))")
    done = subprocess.run([sys.executable, "-c", code, str(SCRIPTS)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
