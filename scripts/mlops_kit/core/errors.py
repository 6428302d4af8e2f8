"""One user-fixable error type, turned into one line and a documented exit code at the command-line edge.

:data:`EXIT_CODES` is the one table of exit codes: every ``--help`` prints it, and a test checks that the README's
table says the same.
"""

from __future__ import annotations

EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_PYTHON_NOT_FOUND = 3
EXIT_ENV_BUILD = 4
EXIT_NOTEBOOK_FAILED = 5
EXIT_TRACKING = 6
EXIT_PIPELINE_FAILED = 7
EXIT_NOT_REPRODUCED = 8
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

EXIT_CODES: tuple[tuple[int, str], ...] = (
    (0, "success"),
    (EXIT_INTERNAL, "internal error (a bug): one line, traceback saved to a log file named in it"),
    (EXIT_BAD_INPUT, "bad input (spec, params, argument, path): one line naming the file and field; nothing changed"),
    (EXIT_PYTHON_NOT_FOUND, "requested Python not found, and not downloadable (downloads off, or the download "
                            "failed): the line lists what was searched and the ways out (install it; allow downloads "
                            "or set a mirror)"),
    (EXIT_ENV_BUILD, "environment build or install failed"),
    (EXIT_NOTEBOOK_FAILED, "notebook failed (cell error, kernel died, timeout); the executed notebook is still "
                           "written and logged"),
    (EXIT_TRACKING, "MLflow tracking store unreachable or refused the run"),
    (EXIT_PIPELINE_FAILED, "a pipeline job failed (run_pipeline.py)"),
    (EXIT_NOT_REPRODUCED, "not reproduced (replay_run.py): a metric, an output file, the environment or an input "
                          "differs from the record; the table names each"),
    (EXIT_INTERRUPTED, "interrupted (Ctrl-C)"),
    (EXIT_TERMINATED, "terminated (SIGTERM, as when GoCD cancels a job): handled like Ctrl-C"),
)


class Terminated(KeyboardInterrupt):
    """SIGTERM (how GoCD cancels a job on a Linux agent, and what ``kill`` sends): everything that handles Ctrl-C
    (the notebook executed so far written, the run ended KILLED, the manifest kept, a rehearsal's jobs cancelled)
    handles it too; only the exit code differs (143)."""


class ToolkitError(Exception):
    """A failure the user can fix; its message is the single line shown to them."""

    exit_code = EXIT_INTERNAL


class BadInput(ToolkitError):
    """Wrong spec, params, argument or path. The message names the file and the field."""

    exit_code = EXIT_BAD_INPUT


class PythonNotFound(ToolkitError):
    """No interpreter satisfies the request and none could be downloaded; the message lists what was found and
    searched, and the ways out."""

    exit_code = EXIT_PYTHON_NOT_FOUND


class EnvBuildError(ToolkitError):
    """Creating the venv, installing packages or registering the kernel failed."""

    exit_code = EXIT_ENV_BUILD


class NotebookFailed(ToolkitError):
    """The notebook raised, its kernel died or a cell timed out (the executed notebook is still written)."""

    exit_code = EXIT_NOTEBOOK_FAILED


class TrackingError(ToolkitError):
    """The MLflow tracking store is unreachable or refused the run."""

    exit_code = EXIT_TRACKING


class PipelineFailed(ToolkitError):
    """A job of the locally rehearsed GoCD pipeline failed."""

    exit_code = EXIT_PIPELINE_FAILED


class NotReproduced(ToolkitError):
    """A replay did not give the recorded results (or could not be given the recorded inputs)."""

    exit_code = EXIT_NOT_REPRODUCED
