"""Run: one stage notebook run, from its parameters to an auditable MLflow run.

May import: ``core``, ``envs``.

* ``params``: notebook parameters (params file, ``-p`` overrides, their flat MLflow form);
* ``notebook``: papermill execution on the stage venv's interpreter;
* ``runrecord``: what a run logs, decided before it runs, and its manifest;
* ``outputs``: where a run writes, checked before it runs (one live run per output);
* ``tracking``: the MLflow calls (open the store, create, log, end, nest under the pipeline's parent);
* ``tracking_worker``: the helper process the MLflow calls run in;
* ``served_store``: a local store served to the kernel over HTTP;
* ``lineage``: the inputs a run was given, their hashes and producers, its outputs' hashes;
* ``stage_run``: one stage run end to end;
* ``preflight``: an agent's pre-flight for ``doctor.py`` (account, venv root, path budget, Pythons, uv, git, the
  tracking store, disk).
"""
