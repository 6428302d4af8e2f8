"""Replay: proving a recorded run, by rebuilding its environment, re-executing its notebook and comparing the results.

May import: ``core``, ``envs``, ``run``.

* ``recorded``: a recorded run read back from the tracking store (its environment, inputs, parameters, results);
* ``replayer``: rebuild the environment, fetch the inputs, re-execute, compare;
* ``verdict``: the rules of the comparison, the table and ``report.json``.
"""
