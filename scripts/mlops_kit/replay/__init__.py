"""Replay: proving a recorded run, by rebuilding its environment and running its notebook again.

May import: ``core``, ``envs``, ``run``.

* ``recorded``: a run read back from MLflow (environment, lineage, source notebook, parameters, metrics);
* ``replayer``: rebuild, fetch the inputs, re-execute, compare;
* ``verdict``: the comparison rules, the report table and ``report.json``.
"""
