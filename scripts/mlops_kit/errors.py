"""One user-fixable error type, turned into one line and a documented exit code at the command-line edge.

Exit codes (documented in the README and every ``--help``):

====  ===========================================================================
0     success
1     unexpected internal error (a bug): traceback written to a log file
2     bad input: a spec, params file, argument or path is wrong (nothing changed)
3     the requested Python interpreter was not found
4     building or installing the environment failed
5     the notebook failed (cell error, kernel death, timeout)
6     the MLflow tracking store could not be reached or refused the run
7     a pipeline (GoCD rehearsal) job failed
130   interrupted (Ctrl-C)
====  ===========================================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_PYTHON_NOT_FOUND = 3
EXIT_ENV_BUILD = 4
EXIT_NOTEBOOK_FAILED = 5
EXIT_TRACKING = 6
EXIT_PIPELINE_FAILED = 7
EXIT_INTERRUPTED = 130


class ToolkitError(Exception):
    """A failure the user can fix; its message is the single line shown to them."""

    exit_code = EXIT_INTERNAL


class BadInput(ToolkitError):
    """Wrong spec, params, argument or path. The message names the file and the field."""

    exit_code = EXIT_BAD_INPUT


class PythonNotFound(ToolkitError):
    """No interpreter satisfies the request; the message lists what was found and how to install."""

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
