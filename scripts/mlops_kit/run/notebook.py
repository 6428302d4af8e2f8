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
extension point: our engine is papermill's nbclient engine with a client whose per-cell loop is ours
(:func:`_run_cells`), for the kernel's environment, the run's outcome and timeouts. That engine and client use
papermill's private parts, so they live in :mod:`mlops_kit.run.compat` with the rest of them.

Like papermill, a failing notebook is still written (with papermill's banner and link to the failing cell); a cell
timeout or a dead kernel get an error output in the cell they stopped in, so the notebook doubles as the log.
"""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal, Mapping

from ..core import console, redact
from ..core.errors import BadInput
from . import compat, kernel_mlflow, kernel_ports

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


OutcomeKind = Literal["ok", "cell-error", "timeout", "kernel-died", "kernel-start", "runner-error"]


@dataclass
class Outcome:
    """How the execution ended; ``cell_index`` counts cells of the *input* notebook (0-based)."""

    kind: OutcomeKind = "ok"
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
        _without_iri_grammar()
        from papermill.iorw import load_notebook_node

        return load_notebook_node(str(path))  # also adds the metadata papermill expects
    except Exception as exc:  # noqa: BLE001 - nbformat raises JSON, validation and OS errors
        raise BadInput(f"{path}: not a readable Jupyter notebook ({' '.join(str(exc).split())[:200]})") from None


def _without_iri_grammar() -> None:
    """nbformat validates with jsonschema, whose format checker compiles an RFC 3987 grammar with lark when the
    optional ``rfc3987-syntax`` is installed (JupyterLab's dependencies bring it): 1.1 s of every run's start (more
    than half of a reused stage's) for a format no notebook schema uses. Marked absent before jsonschema is first
    imported, jsonschema skips that one format, as it does wherever the package is not installed."""
    if "jsonschema" not in sys.modules:
        sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]


@dataclass
class _Progress:
    """How far one execution got: what the engine saw, read back once papermill returns or raises. It is the
    :class:`mlops_kit.run.compat.CellRunner` our papermill engine is handed."""

    ex: Execution
    manager_class: type  # the kernel manager that finds the private kernelspec
    nb: Any = None  # the notebook being executed (papermill's copy, with outputs)
    outcome: Outcome = field(default_factory=Outcome)
    cells_started: bool = False
    aborted: bool = False  # before_cells refused (e.g. the MLflow run could not be created)
    current_index: int | None = None

    def client_options(self, nb: Any) -> dict[str, Any]:
        """Called by the engine once papermill parameterized the notebook: keep it, record the real paths (papermill
        was handed the notebook object, not its file), and say how the client starts the kernel."""
        self.nb = nb
        nb.metadata.papermill.update(input_path=str(self.ex.notebook), output_path=str(self.ex.output))
        return {"kernel_manager_class": self.manager_class, "timeout": _whole_seconds(self.ex.cell_timeout),
                "resources": {"metadata": {"path": str(self.ex.cwd)}}}

    def run_cells(self, cells: compat.PapermillCells) -> None:
        try:
            _before_cells(self, cells)
            self.cells_started = True
            _run_cells(self, cells)
        except BaseException:  # Ctrl-C, SIGTERM, a stop: no graceful shutdown of a kernel stuck in a cell
            cells.stop_kernel_at_once()
            raise


class _Stopped(Exception):
    """A cell timed out or the kernel died: leave the kernel without papermill's closing ``kernel_info`` request,
    which would wait for ever on a stuck or dead kernel."""


def execute(ex: Execution, nb: Any) -> Outcome:
    """Parameterize and run ``nb`` with papermill (our engine); always write ``ex.output`` once cells started."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    compat.register_papermill_engine()
    _configure_logging(ex.log_output)
    with tempfile.TemporaryDirectory(prefix="mlops_kit-kernel-") as tmp:
        _write_kernelspec(Path(tmp), ex.kernel_name, ex.kernelspec)
        state = _Progress(ex, _manager_class(Path(tmp)))
        try:
            papermill.execute_notebook(
                nb, None, parameters=ex.parameters, engine_name=compat.PAPERMILL_ENGINE, kernel_name=ex.kernel_name,
                language="python", progress_bar=ex.progress_bar, log_output=ex.log_output,
                start_timeout=_whole_seconds(ex.start_timeout), mlops_cells=state,
            )
        except PapermillExecutionError as err:  # papermill added its banner to state.nb
            if state.outcome.ok:  # e.g. a cell with an error output although nbclient did not raise
                state.outcome = Outcome("cell-error", _source_index(state.nb, err.cell_index), err.exec_count,
                                        err.ename, err.evalue)
        except _Stopped:
            compat.add_error_banner(state.nb)
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


def _whole_seconds(value: float | None) -> int | None:
    """nbclient takes whole seconds: 2.5 becomes 3 (never 0, which would mean "no time at all")."""
    return None if value is None else max(1, math.ceil(value))


def _runner_failure(state: _Progress, exc: Exception) -> Outcome:
    """Something unexpected once cells ran (e.g. nbclient refusing a malformed output): a failed run, not a crash,
    so the caller still logs the written notebook and ends the run FAILED."""
    index, nb = state.current_index, state.nb
    cell = nb.cells[index] if index is not None and index < len(nb.cells) else None
    where = _source_index(nb, index) if index is not None and cell is not None else None
    return Outcome(kind="runner-error", cell_index=where,
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
    """Show masked values in the injected cell and papermill's metadata (the real ones ran in the kernel), and
    mask every secret the process knows in every output, error and traceback (:func:`mask_outputs`)."""
    if ex.masked_parameters is not None:
        from papermill.translators import translate_parameters

        for cell in nb.cells:
            if INJECTED_TAG in cell.metadata.get("tags", []):
                cell.source = translate_parameters(ex.kernel_name, "python", ex.masked_parameters, "Parameters")
        nb.metadata.papermill["parameters"] = ex.masked_parameters
    mask_outputs(nb)


# nbformat keeps these as text; every other MIME type (image/png, application/pdf, ...) is base64 of bytes
_TEXT_MIME_PREFIXES = ("text/", "application/json", "application/javascript", "image/svg+xml")


def mask_outputs(nb: Any) -> None:
    """Every secret value :mod:`mlops_kit.core.redact` knows, masked in ``nb`` in place: stream text, results,
    display data (text types; base64 images are left alone), errors (name, value, every traceback line), metadata.
    Cell sources get only the exact values (the patterns would garble code such as ``auth=auth``)."""
    for cell in nb.cells:
        cell.source = redact.redact_known(_text(cell.source))
        cell.metadata.update(redact.redacted(dict(cell.metadata)))
        for output in cell.get("outputs", []):
            _mask_output(output)
    nb.metadata.update(redact.redacted(dict(nb.metadata)))


def _mask_output(output: Any) -> None:
    if "text" in output:
        output.text = redact.redact(_text(output.text))
    if output.get("output_type") == "error":
        output.ename = redact.redact(str(output.get("ename", "")))
        output.evalue = redact.redact(str(output.get("evalue", "")))
        output.traceback = [redact.redact(line) for line in output.get("traceback", [])]
    for mime, value in list(output.get("data", {}).items()):
        if mime.startswith(_TEXT_MIME_PREFIXES) or mime.endswith("+json"):
            output.data[mime] = redact.redacted(value) if isinstance(value, dict) else redact.redact(_text(value))
    if "metadata" in output:
        output.metadata = redact.redacted(dict(output.metadata))


def _text(value: Any) -> str:
    """nbformat text: a string, or a list of lines to join (a secret may span two of them)."""
    return "".join(value) if isinstance(value, list) else str(value)


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

        async def _async_pre_start_kernel(self, **kw: Any) -> Any:
            """Ports below the ephemeral range, which outgoing connections never take (:mod:`.kernel_ports`)."""
            if self.transport == "tcp" and not self.shell_port:
                ports = kernel_ports.free_ports(self.ip or "127.0.0.1", 5)
                if ports is not None:
                    self.cache_ports = False
                    self.shell_port, self.iopub_port, self.stdin_port, self.hb_port, self.control_port = ports
            return await super()._async_pre_start_kernel(**kw)

        async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
            """The kernel's own stdout/stderr (what its subprocesses and C code write past ``sys.stdout``) come
            through the runner, secrets masked, instead of straight to the console or the GoCD log."""
            kw.update(stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            await super()._async_launch_kernel(kernel_cmd, **kw)
            process = getattr(self.provisioner, "process", None)
            if process is not None and process.stdout is not None and process.stderr is not None:
                console.relay(process.stdout, sys.stdout, name="mlops_kit-kernel-stdout")
                console.relay(process.stderr, sys.stderr, name="mlops_kit-kernel-stderr")

    return PrivateKernelManager


def _run_cells(state: _Progress, cells: compat.PapermillCells) -> None:
    """papermill's per-cell loop, with a cell timeout or a dead kernel ending the run like a cell error (an error
    output in the cell, the run's outcome) instead of an exception that loses the notebook."""
    import nbformat
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    nb = cells.nb
    for index, cell in enumerate(nb.cells):
        state.current_index = index
        try:
            cells.execute(cell, index)
        except CellExecutionError as err:
            _failed(state, cells, index, "cell-error", err.ename, err.evalue)
            break
        except (CellTimeoutError, DeadKernelError) as err:
            kind: OutcomeKind = "timeout" if isinstance(err, CellTimeoutError) else "kernel-died"
            nb.cells[index].setdefault("outputs", []).append(nbformat.v4.new_output(
                "error", ename=type(err).__name__, evalue=str(err), traceback=[f"{kind}: {err}"]))
            _failed(state, cells, index, kind, type(err).__name__, str(err))
            raise _Stopped(kind) from None
        finally:
            cells.complete(index)


def _failed(state: _Progress, cells: compat.PapermillCells, index: int, kind: OutcomeKind, ename: str,
            evalue: str) -> None:
    cells.failed(index)
    cell = cells.nb.cells[index]
    state.outcome = Outcome(kind, _source_index(cells.nb, index), cell.get("execution_count"), ename, evalue)


def _before_cells(state: _Progress, cells: compat.PapermillCells) -> None:
    """The kernel is up: ask for its extra variables (the MLflow run's; ``before_cells`` may raise to abort), set
    them silently, and let papermill save the notebook as cells complete when it holds no secrets."""
    from nbclient.exceptions import DeadKernelError

    ex = state.ex
    kernel_ports.release()  # the kernel has bound its ports
    if ex.before_cells is None:
        return
    try:
        env = dict(ex.before_cells())
    except BaseException:
        state.aborted = True
        raise
    if ex.masked_parameters is None:  # no secrets: save progress to --output as cells complete
        ex.output.parent.mkdir(parents=True, exist_ok=True)
        cells.save_progress_to(ex.output)
    if env:
        code = f"import os as _mlops_os\n_mlops_os.environ.update({env!r})\ndel _mlops_os\n"
        if kernel_mlflow.CHILD_TAGS_VAR in env:  # the notebook uses mlflow: the stage run becomes its active run
            code += kernel_mlflow.BOOTSTRAP
        if not cells.run_silently(code):
            raise DeadKernelError("could not set the run's environment variables in the kernel")


class _DropDuplicates(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.getMessage()).startswith(_DROPPED_PAPERMILL_LINES)


class _Masked(logging.Formatter):
    """papermill's lines (``--log-output`` streams every cell's output through them) with secrets masked."""

    def format(self, record: logging.LogRecord) -> str:
        return redact.redact(super().format(record))


def _configure_logging(log_output: bool) -> None:
    """papermill logs cell output at INFO (``--log-output``); otherwise only its warnings and errors."""
    logger = logging.getLogger("papermill")
    if not any(isinstance(f, _DropDuplicates) for f in logger.filters):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(_Masked("%(message)s"))
        logger.addHandler(handler)
        logger.addFilter(_DropDuplicates())
        logger.propagate = False
    logger.setLevel(logging.INFO if log_output else logging.WARNING)
