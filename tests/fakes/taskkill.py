"""A fake ``taskkill.exe`` that runs for real on Linux, built from Microsoft's documentation of the command
(learn.microsoft.com, "taskkill"):

* ``taskkill [/pid <processID> | /im <imagename>] [/t] [/f]``; switches are case-insensitive, ``/pid`` repeatable.
* ``/t`` "Ends the specified process and any child processes started by it." (by parentage, as Windows records it:
  a child whose parent is already gone is not found).
* ``/f`` "Specifies that processes be forcefully ended." Without it a console program gets a close request it
  cannot see; taskkill answers ``ERROR: The process with PID <n> could not be terminated. Reason: This process can
  only be terminated forcefully (with /F option).`` and exits 1.
* Success: one ``SUCCESS: The process with PID <n> (child process of PID <m>) has been terminated.`` per process
  (children first), exit 0. Unknown PID: ``ERROR: The process "<n>" not found.``, exit 128.

"Forcefully" is TerminateProcess: here SIGKILL. Each call is logged (one JSON argv per line) for the test to check.
"""

from __future__ import annotations

import sys
from pathlib import Path

_SCRIPT = r'''#!{python}
import json, sys
import psutil

LOG = {log!r}
with open(LOG, "a", encoding="utf-8") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\n")
args = [a.lower() for a in sys.argv[1:]]
pids = [int(sys.argv[1:][i + 1]) for i, a in enumerate(args) if a == "/pid"]
tree, force = "/t" in args, "/f" in args
code = 0
for pid in pids:
    try:
        root = psutil.Process(pid)
        victims = (root.children(recursive=True)[::-1] if tree else []) + [root]
    except psutil.NoSuchProcess:
        print(f'ERROR: The process "{{pid}}" not found.')
        code = 128
        continue
    for proc in victims:
        if not force:
            print(f"ERROR: The process with PID {{proc.pid}} could not be terminated.\nReason: This process can only "
                  "be terminated forcefully (with /F option).")
            code = code or 1
            continue
        try:
            parent = proc.ppid()
            proc.kill()
            print(f"SUCCESS: The process with PID {{proc.pid}} (child process of PID {{parent}}) has been terminated.")
        except psutil.NoSuchProcess:
            pass
sys.exit(code)
'''


def make_taskkill(bindir: Path) -> Path:
    """Write ``bindir/taskkill`` (put ``bindir`` first on PATH); returns the log of its calls."""
    bindir.mkdir(parents=True, exist_ok=True)
    log = bindir / "taskkill.calls"
    script = bindir / "taskkill"
    script.write_text(_SCRIPT.format(python=sys.executable, log=str(log)), encoding="utf-8")
    script.chmod(0o755)
    return log
