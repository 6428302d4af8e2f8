"""Core: the plumbing every tool shares, with no knowledge of venvs, runs or GoCD.

May import: nothing else of mlops_kit.

* ``errors``: the one user-fixable error type and the exit-code table;
* ``cli``: the edge every entry point goes through (one line per failure, the exit code, ``--help``'s table);
* ``console``: what a person sees (progress, warnings, the error line), always masked;
* ``redact``: secrets never shown (secret names, secret values, the mask);
* ``proc``: the one helper for running subprocesses, and ending a process tree;
* ``jobprocesses``: every process a job started, orphans included (Linux: a child subreaper), to end with it;
* ``paths``: the platform seam, the venv layout, per-user folders, atomic writes;
* ``git``: everything asked of git (optional everywhere);
* ``userfile``: reading a file the user named, one line naming it on any problem.
"""
