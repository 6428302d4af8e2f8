"""Execute a notebook with papermill in the toolkit's process, its kernel on the stage venv's interpreter.

No registered kernel is needed (a GoCD agent running as a service account sees none): a private kernelspec built
by :func:`mlops_kit.kernel.kernelspec` is written to a temporary folder, and a ``KernelManager`` subclass whose
``KernelSpecManager`` looks only in that folder is handed to nbclient (``kernel_manager_class``). The spec's
``env`` puts the venv's ``bin``/``Scripts`` first on ``PATH`` and sets ``VIRTUAL_ENV``, so ``!pip`` and
``subprocess.run(["python", ...])`` inside the notebook resolve to the venv too.

Extra kernel variables (``MLFLOW_RUN_ID`` & co.) are set in the kernel *after* it started and *before* the first
cell, by a silent ``os.environ.update`` (``before_cells``): the MLflow run is created in parallel with the kernel
start, which is what keeps ``run_notebook`` close to bare papermill's speed.

papermill runs it (``papermill.execute_notebook``, its parameterization, error banner and progress) through its engine
extension point: our engine is papermill's nbclient engine with a client that overrides one method, the per-cell
loop, for the kernel's environment, the run's outcome and timeouts (see :func:`_client_class`).

Like papermill, a failing notebook is still written (with papermill's banner and link to the failing cell); a cell
timeout or a dead kernel get an error output in the cell they stopped in, so the notebook doubles as the log.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

from ..core import console
from ..core.errors import BadInput

INJECTED_TAG = "injected-parameters"
# papermill log lines we drop: our own warnings say the first two; the last two name our in-memory copies
_DROPPED_PAPERMILL_LINES = ("Input notebook does not contain a cell with tag", "Passed unknown parameter",
                            "Input Notebook:", "Output Notebook:")


@dataclass
class Execution:
    """What to run and how."""

    notebook: Path
    output: Path
    parameters: dict[str, Any]
    kernelspec: dict[str, Any]  # kernel.json content (mlops_kit.kernel.kernelspec)
    kernel_name: str
    cwd: Path
    masked_parameters: dict[str, Any] | None = None  # shown in the written notebook instead of the real ones
    before_cells: Callable[[], Mapping[str, str]] | None = None  # env vars for the kernel; may raise to abort
    log_output: bool = False
    progress_bar: bool = False
    cell_timeout: float | None = None
    start_timeout: float = 60


@dataclass
class Outcome:
    """How the execution ended; ``cell_index`` counts cells of the *input* notebook (0-based)."""

    kind: str = "ok"  # ok | cell-error | timeout | kernel-died | kernel-start | runner-error
    cell_index: int | None = None
    execution_count: int | None = None
    ename: str = ""
    evalue: str = ""

    @property
    def ok(self) -> bool:
        return self.kind == "ok"

    def summary(self) -> str:
        where = f" in cell {self.cell_index}" if self.cell_index is not None else ""
        count = f" (In [{self.execution_count}])" if self.execution_count else ""
        evalue = " ".join(self.evalue.split())[:200]
        return f"{self.kind}{where}{count}: {self.ename}" + (f": {evalue}" if evalue else "")

    def as_tags(self) -> dict[str, str]:
        tags = {"failure_kind": self.kind, "error_name": self.ename, "error_value": self.evalue}
        if self.cell_index is not None:
            tags["failed_cell_index"] = str(self.cell_index)
        if self.execution_count is not None:
            tags["failed_cell_execution_count"] = str(self.execution_count)
        return tags


def load_notebook(path: Path) -> Any:
    """Read a notebook (nbformat v4); a missing or broken file is a BadInput naming it."""
    if not path.is_file():
        raise BadInput(f"{path}: notebook not found" if not path.exists() else f"{path}: not a notebook file")
    try:
        from papermill.iorw import load_notebook_node

        return load_notebook_node(str(path))  # also adds the metadata papermill expects
    except Exception as exc:  # noqa: BLE001 - nbformat raises JSON, validation and OS errors
        raise BadInput(f"{path}: not a readable Jupyter notebook ({' '.join(str(exc).split())[:200]})") from None


ENGINE_NAME = "mlops_kit"


@dataclass
class _Progress:
    """How far one execution got: what the engine saw, read back once papermill returns or raises."""

    ex: Execution
    nb: Any = None  # the notebook being executed (papermill's copy, with outputs)
    outcome: Outcome = field(default_factory=Outcome)
    cells_started: bool = False
    aborted: bool = False  # before_cells refused (e.g. the MLflow run could not be created)
    current_index: int | None = None


class _Stopped(Exception):
    """A cell timed out or the kernel died: leave the kernel without papermill's closing ``kernel_info`` request,
    which would wait for ever on a stuck or dead kernel."""


def execute(ex: Execution, nb: Any) -> Outcome:
    """Parameterize and run ``nb`` with papermill (our engine); always write ``ex.output`` once cells started."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    _register_engine()
    _configure_logging(ex.log_output)
    state = _Progress(ex)
    with tempfile.TemporaryDirectory(prefix="mlops_kit-kernel-") as tmp:
        _write_kernelspec(Path(tmp), ex.kernel_name, ex.kernelspec)
        try:
            papermill.execute_notebook(
                nb, None, parameters=ex.parameters, engine_name=ENGINE_NAME, kernel_name=ex.kernel_name,
                language="python", progress_bar=ex.progress_bar, log_output=ex.log_output,
                start_timeout=_whole_seconds(ex.start_timeout), mlops_state=state,
                kernel_manager_class=_manager_class(Path(tmp)),
            )
        except PapermillExecutionError as err:  # papermill added its banner to state.nb
            if state.outcome.ok:  # e.g. a cell with an error output although nbclient did not raise
                state.outcome = Outcome("cell-error", _source_index(state.nb, err.cell_index), err.exec_count,
                                        err.ename, err.evalue)
        except _Stopped:
            _add_error_banner(state.nb)
        except BaseException as exc:  # kernel never started, or something unexpected (even Ctrl-C) mid-run
            return _interrupted(state, exc)
    return _finish(ex, state.nb, state.outcome)


def _interrupted(state: _Progress, exc: BaseException) -> Outcome:
    """Nothing is lost: what ran so far is written before giving up; Ctrl-C goes on to the caller (run KILLED)."""
    if state.cells_started:
        _write(state.ex, state.nb)
        if not isinstance(exc, Exception):
            raise exc
        return _runner_failure(state, exc)
    if state.aborted or state.nb is None or not isinstance(exc, (RuntimeError, TimeoutError, OSError)):
        raise exc
    return _kernel_start_failure(state.ex, state.nb, exc)


def _add_error_banner(nb: Any) -> None:
    """papermill's banner and link to the failing cell (what it adds itself after a cell error)."""
    from papermill.exceptions import PapermillExecutionError
    from papermill.execute import raise_for_execution_errors

    with contextlib.suppress(PapermillExecutionError):
        raise_for_execution_errors(nb, None)


def _whole_seconds(value: float | None) -> int | None:
    """nbclient takes whole seconds: 2.5 becomes 3 (never 0, which would mean "no time at all")."""
    return None if value is None else max(1, math.ceil(value))


def _runner_failure(state: _Progress, exc: Exception) -> Outcome:
    """Something unexpected once cells ran (e.g. nbclient refusing a malformed output): a failed run, not a crash,
    so the caller still logs the written notebook and ends the run FAILED."""
    index, nb = state.current_index, state.nb
    cell = nb.cells[index] if index is not None and index < len(nb.cells) else None
    return Outcome(kind="runner-error", cell_index=_source_index(nb, index) if cell is not None else None,
                   execution_count=cell.get("execution_count") if cell is not None else None,
                   ename=type(exc).__name__, evalue=" ".join(str(exc).split())[:2000])


def _kernel_start_failure(ex: Execution, nb: Any, exc: BaseException) -> Outcome:
    outcome = Outcome(kind="kernel-start", ename=type(exc).__name__,
                      evalue=f"the kernel did not start ({' '.join(str(exc).split())[:300]}); "
                             f"is ipykernel installed in {ex.kernelspec['argv'][0]}?")
    _write(ex, nb)
    return outcome


def _finish(ex: Execution, nb: Any, outcome: Outcome) -> Outcome:
    """Mask secrets in the written notebook, name its kernel as the stage's, write it."""
    nb.metadata.kernelspec = {"name": ex.kernel_name, "display_name": ex.kernelspec.get("display_name", ""),
                              "language": "python"}
    _write(ex, nb)
    return outcome


def _write(ex: Execution, nb: Any) -> None:
    from papermill.iorw import write_ipynb

    _mask(ex, nb)
    ex.output.parent.mkdir(parents=True, exist_ok=True)
    write_ipynb(nb, str(ex.output))


def _mask(ex: Execution, nb: Any) -> None:
    """Show masked values in the injected cell and papermill's metadata (the real ones ran in the kernel)."""
    if ex.masked_parameters is None:
        return
    from papermill.translators import translate_parameters

    for cell in nb.cells:
        if INJECTED_TAG in cell.metadata.get("tags", []):
            cell.source = translate_parameters(ex.kernel_name, "python", ex.masked_parameters, "Parameters")
    nb.metadata.papermill["parameters"] = ex.masked_parameters


def _source_index(nb: Any, index: int) -> int:
    """Index in the input notebook of executed cell ``index`` (the injected cell is not in the input)."""
    before = nb.cells[:index]
    return index - sum(1 for c in before if INJECTED_TAG in c.metadata.get("tags", []))


def _write_kernelspec(folder: Path, name: str, spec: Mapping[str, Any]) -> None:
    (folder / name).mkdir(parents=True)
    (folder / name / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")


def _manager_class(kernels_dir: Path) -> type:
    """An AsyncKernelManager that finds kernelspecs only in ``kernels_dir`` (no user/system kernels needed)."""
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class PrivateKernelManager(AsyncKernelManager):
        @default("kernel_spec_manager")
        def _kernel_spec_manager_default(self) -> KernelSpecManager:
            return KernelSpecManager(kernel_dirs=[str(kernels_dir)])

    return PrivateKernelManager


def _register_engine() -> None:
    """papermill's extension point: an engine runs the parameterized notebook for ``papermill.execute_notebook``."""
    from papermill.engines import papermill_engines

    papermill_engines.register(ENGINE_NAME, _engine_class())


def _engine_class() -> type:
    from papermill.engines import Engine

    class MlopsKitEngine(Engine):
        """papermill's nbclient engine with our client (below) and the per-run state handed in by ``execute``."""

        @classmethod
        def execute_managed_notebook(cls, nb_man: Any, kernel_name: str, *, mlops_state: _Progress,
                                     kernel_manager_class: type, log_output: bool = False,
                                     start_timeout: int | None = 60, **_unused: Any) -> None:
            ex = mlops_state.ex
            mlops_state.nb = nb_man.nb  # papermill was handed the notebook object: record the real paths
            nb_man.nb.metadata.papermill.update(input_path=str(ex.notebook), output_path=str(ex.output))
            client = _client_class()(
                nb_man, mlops_state, kernel_name=kernel_name, kernel_manager_class=kernel_manager_class,
                timeout=_whole_seconds(ex.cell_timeout), startup_timeout=start_timeout,
                log=logging.getLogger("papermill"), log_output=log_output,
                resources={"metadata": {"path": str(ex.cwd)}},
            )
            client.execute()

    return MlopsKitEngine


def _client_class() -> type:
    """papermill's client with one override, :meth:`papermill_execute_cells` (its per-cell loop): the kernel's
    environment before the first cell, the outcome of the run, and a cell timeout or dead kernel ending the run
    like a cell error. Everything else is papermill's. tests/run/test_notebook.py checks that papermill's ``execute``
    still drives the loop through this method, so a papermill upgrade that changes it fails loudly."""
    import nbformat
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError
    from papermill.clientwrap import PapermillNotebookClient

    class Client(PapermillNotebookClient):
        def __init__(self, nb_man: Any, state: _Progress, **kw: Any) -> None:
            super().__init__(nb_man, **kw)
            self.state = state

        def papermill_execute_cells(self) -> None:
            try:
                self._before_cells()
                self.state.cells_started = True
                self._execute_cells()
            except BaseException:  # Ctrl-C, SIGTERM, a stop: no graceful shutdown of a kernel stuck in a cell
                self.shutdown_kernel = "immediate"
                raise

        def _execute_cells(self) -> None:
            for index, cell in enumerate(self.nb.cells):
                self.state.current_index = index
                try:
                    self.nb_man.cell_start(cell, index)
                    self.execute_cell(cell, index)
                except CellExecutionError as err:
                    self._failed(index, "cell-error", err.ename, err.evalue)
                    break
                except (CellTimeoutError, DeadKernelError) as err:
                    kind = "timeout" if isinstance(err, CellTimeoutError) else "kernel-died"
                    self.nb.cells[index].setdefault("outputs", []).append(nbformat.v4.new_output(
                        "error", ename=type(err).__name__, evalue=str(err), traceback=[f"{kind}: {err}"]))
                    self._failed(index, kind, type(err).__name__, str(err))
                    raise _Stopped(kind) from None
                finally:
                    self.nb_man.cell_complete(self.nb.cells[index], cell_index=index)

        def _failed(self, index: int, kind: str, ename: str, evalue: str) -> None:
            cell = self.nb.cells[index]
            self.nb_man.cell_exception(cell, cell_index=index)
            self.state.outcome = Outcome(kind, _source_index(self.nb, index), cell.get("execution_count"), ename,
                                         evalue)

        def _before_cells(self) -> None:
            ex = self.state.ex
            if ex.before_cells is None:
                return
            try:
                env = dict(ex.before_cells())
            except BaseException:
                self.state.aborted = True
                raise
            if ex.masked_parameters is None:  # no secrets: save progress to --output as cells complete
                ex.output.parent.mkdir(parents=True, exist_ok=True)
                self.nb_man.output_path = str(ex.output)
            if env:
                code = f"import os as _mlops_os\n_mlops_os.environ.update({env!r})\ndel _mlops_os\n"
                reply = self.wait_for_reply(self.kc.execute(code, silent=True, store_history=False))
                if not reply or reply["content"].get("status") != "ok":
                    raise DeadKernelError("could not set the run's environment variables in the kernel")

    return Client


class _DropDuplicates(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_DROPPED_PAPERMILL_LINES)


def _configure_logging(log_output: bool) -> None:
    """papermill logs cell output at INFO (``--log-output``); otherwise only its warnings and errors."""
    logger = logging.getLogger("papermill")
    if not any(isinstance(f, _DropDuplicates) for f in logger.filters):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.addFilter(_DropDuplicates())
        logger.propagate = False
    logger.setLevel(logging.INFO if log_output else logging.WARNING)


def prewarm_html() -> None:
    """Load nbconvert's HTML exporter and its templates ahead of time."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    code = nbformat.v4.new_code_cell("print(1)", outputs=[nbformat.v4.new_output("stream", text="1\n")])
    nb.cells = [nbformat.v4.new_markdown_cell("# x\n![i](a.png)"), code]  # markdown too: its parser is slow to load
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    render_html_text(nb)


def prewarm_html_in_background() -> threading.Thread:
    """Start :func:`prewarm_html` in a thread (e.g. while waiting for the kernel or the MLflow run)."""
    def quietly() -> None:
        try:
            prewarm_html()
        except Exception:  # noqa: BLE001 - only a warm-up: the real rendering reports problems
            pass

    thread = threading.Thread(target=quietly, name="mlops_kit-html-prewarm", daemon=True)
    thread.start()
    return thread


def render_html_text(nb: Any) -> str:
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nb)
    return body


def render_html(notebook: Path, html: Path) -> None:
    """The executed notebook as standalone HTML (readable in the MLflow UI's artifact view)."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(render_html_text(nb), encoding="utf-8")


def render_html_or_warn(notebook: Path, html: Path) -> bool:
    """:func:`render_html`, but a notebook nbconvert cannot render only warns: the run must not be lost for it."""
    try:
        render_html(notebook, html)
    except Exception as exc:  # noqa: BLE001 - nbconvert raises template, markdown and OS errors
        reason = " ".join(str(exc).split())[:300]
        console.warn(f"{notebook}: HTML rendering failed ({type(exc).__name__}: {reason}); not logged")
        return False
    return True
