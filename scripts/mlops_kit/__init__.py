"""mlops_kit: per-stage venvs, papermill runs and MLflow audit trails for GoCD pipelines on Windows.

The command-line entry points live one folder up (``scripts/*.py``) and stay thin. The modules are grouped in five
subpackages, which are the architecture; each one's docstring says its job, lists its modules and says what it may
import (``tests/test_layout.py`` keeps to it):

* ``core``: plumbing every tool shares (errors and exit codes, the platform seam and paths, secrets masking, the
  console, the one subprocess helper, git, the command-line edge, reading the user's files);
* ``envs``: a stage's environment (the spec, its lock, finding and installing Pythons, package installers, the venv
  build and cache, its audit record, its Jupyter kernel);
* ``run``: one stage run (parameters, papermill execution, what a run records, its files, MLflow tracking and the
  process it runs in, the local store served to the kernel, lineage, the run end to end);
* ``replay``: proving a recorded run (reading it back, rebuilding and re-running it, the verdict);
* ``rehearsal``: the local GoCD rehearsal (the config XML and the server's rules, running stages and jobs, the state
  folder, a job's environment, artifacts, what it prints).

The layers: ``core`` <- ``envs`` <- ``run`` <- {``replay``, ``rehearsal``}: a module imports its own subpackage and
the layers below it, never one above, and the two top layers never import each other.
"""

__version__ = "0.1.0"
