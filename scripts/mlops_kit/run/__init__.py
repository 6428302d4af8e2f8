"""Run: one stage notebook run, from its parameters to an auditable MLflow run.

May import: ``core``, ``envs``.

* ``params``: notebook parameters (params file, ``-p`` overrides, their flat MLflow form);
* ``notebook``: papermill execution on the stage venv's interpreter;
* ``kernel_ports``: a kernel's ports below the ephemeral range (no outgoing connection takes them);
* ``kernel_mlflow``: the stage run as the kernel's active MLflow run (a notebook's nested runs are its children);
* ``html``: the executed notebook rendered as HTML;
* ``runrecord``: what a run logs, decided before it runs, its manifest and how it ended;
* ``outputs``: where a run writes, checked before it runs (one live run per output);
* ``store``: the tracking store (which one, its local paths, opening it one process at a time, the client);
* ``tracking``: the MLflow calls of a run (create, log, end, nest under the pipeline's parent);
* ``tracking_worker``: the helper process the MLflow calls run in;
* ``served_store``: a local store served to the kernel over HTTP;
* ``compat``: every use of MLflow's and papermill's private parts (checked by a test per name);
* ``lineage``: the inputs a run was given, their hashes and producers, its outputs' hashes (a typed record);
* ``upload``: uploading a run later from its manifest (``--log-existing``, a runner that vanished);
* ``reuse``: a run's reuse key (notebook code, parameters, input contents, locked environment, Python) and why two
  keys differ;
* ``reuse_origin``: the earlier run a reused run copies: found by its key, checked, its results fetched;
* ``stage_run``: one stage run end to end;
* ``preflight``: an agent's pre-flight for ``doctor.py`` (account, venv root, path budget, Pythons, uv, git, the
  tracking store, disk).
"""
