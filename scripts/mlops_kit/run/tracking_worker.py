"""The tracking worker: MLflow's work done in one helper process, so importing mlflow overlaps the notebook run.

Importing mlflow and opening a SQLite store takes longer than running a small notebook. :class:`Tracker` starts one
worker process first thing (the standard library's ``ProcessPoolExecutor`` with the ``spawn`` context, the same on
Windows and Linux); its initializer imports mlflow while the main process checks the inputs, imports papermill and
starts the kernel. Calls are queued and answered in order, as futures.

The worker:

* ignores Ctrl-C and SIGTERM: they reach the whole console or process group, and the main process decides (it
  still needs the worker to end the run as KILLED);
* leaves as soon as the main process is gone (``kill -9`` of the runner): a thread waits on the parent's sentinel;
* prints to stderr only: stdout is the runner's (its last line names the executed notebook);
* re-imports the entry script as ``__mp_main__`` (what the ``spawn`` start method does on every platform), so an
  entry point imports its heavy modules inside ``main`` (``run_notebook.py`` imports ``stage_run`` there): 0.03 s
  instead of 0.25 s of the worker's start;
* skips the interpreter's teardown when it exits (``os._exit`` from an atexit hook): unloading mlflow's thousands of
  modules costs ~0.7 s that the runner would otherwise wait for.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import traceback
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable

from ..core.errors import ToolkitError, TrackingError
from ..core.redact import redact

_DIED = "the MLflow helper process died (see the messages above)"


def _initialize() -> None:
    """Runs first in the worker: signals, stdout, parent watch, then the slow imports."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError, ValueError):
        os.dup2(2, 1)  # a library's print must not reach the runner's stdout
    sys.stdout = sys.stderr
    atexit.register(_exit_now)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent.sentinel,), daemon=True, name="parent-watch").start()
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # an audited job does not phone home
    # pandas and numpy are ~0.45 s of mlflow's import and tracking never needs them (mlflow-skinny runs without
    # them): made unimportable here only (None in sys.modules is what Python's import system reads as "absent")
    for heavy in ("pandas", "numpy"):
        sys.modules.setdefault(heavy, None)  # type: ignore[arg-type]
    with contextlib.suppress(Exception):
        import mlflow.tracking  # noqa: F401 - the slow part, done while the parent loads papermill


def _exit_with(sentinel: Any) -> None:
    multiprocessing.connection.wait([sentinel])
    _exit_now()


def _exit_now() -> None:
    with contextlib.suppress(Exception):
        sys.stderr.flush()
    os._exit(0)


def _ready() -> None:
    """The first call: it makes the executor start the worker now, not at the first real request."""


class Tracker:
    """One worker process for a run's MLflow calls, answered in order; :meth:`close` never hangs."""

    def __init__(self) -> None:
        context = multiprocessing.get_context("spawn")
        before = set(multiprocessing.active_children())
        self._pool = concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=context,
                                                           initializer=_initialize)
        self._calls: list[Future[Any]] = [self._pool.submit(_ready)]
        self._workers = [p for p in multiprocessing.active_children() if p not in before]

    def submit(self, function: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue ``function(*args)`` in the worker (a module-level function of the toolkit)."""
        try:
            future = self._pool.submit(function, *args)
        except (BrokenProcessPool, RuntimeError):
            raise TrackingError(_DIED) from None
        self._calls.append(future)
        return future

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        return self.result(self.submit(function, *args))

    @staticmethod
    def result(future: Future[Any]) -> Any:
        """The call's answer; a toolkit error (:class:`TrackingError`, :class:`BadInput`) as raised, anything else
        as one TrackingError line (the worker's traceback goes to stderr, for a bug report)."""
        try:
            return future.result()
        except ToolkitError:  # already one line for the user (a run id that does not exist is bad input, exit 2)
            raise
        except BrokenProcessPool:
            raise TrackingError(_DIED) from None
        except Exception as exc:  # noqa: BLE001 - a bug in the MLflow code path: one line, details on stderr
            remote = exc.__cause__
            print(redact(str(remote) if remote is not None else traceback.format_exc()), file=sys.stderr, flush=True)
            reason = redact(" ".join(str(exc).split())[:300])
            raise TrackingError(f"MLflow helper failed: {type(exc).__name__}: {reason} (traceback above on stderr)") \
                from None

    def close(self) -> None:
        """Let the worker exit; one still busy (we gave up: bad input, Ctrl-C) is killed."""
        if not all(call.done() for call in self._calls):
            for worker in self._workers:
                with contextlib.suppress(Exception):
                    worker.kill()
        try:
            self._pool.shutdown(wait=True, cancel_futures=True)
        except Exception:  # noqa: BLE001 - never hang or fail the run on the helper's exit
            pass
