"""Replay: prove a recorded result by running it again from its record alone and comparing.

May import: ``core``, ``envs``, ``run``.

* ``recorded``: a recorded run read back from MLflow (and the replay's own runs written there);
* ``replayer``: check, place the verified inputs, rebuild the recorded environment, re-execute, compare;
* ``verdict``: the comparison rules, the table and ``report.json``.
"""
