"""mlops_kit: per-stage venvs, papermill runs and MLflow audit trails for GoCD pipelines on Windows.

The command-line entry points live one folder up (``scripts/*.py``) and stay thin; each module here owns one
concern (its first docstring line says which):

* stage environments: ``spec`` (stage YAML), ``locks`` (stage lock files), ``interpreters`` (finding Pythons),
  ``pyinstall`` (installing one), ``installers`` (uv/pip commands, indexes, freeze), ``envs`` (build, cache, lock,
  health check), ``audit`` (the env.json record and audit bundle), ``kernel`` (Jupyter kernelspecs);
* notebook runs: ``params`` (notebook parameters), ``notebook`` (papermill execution), ``runrecord`` (what a run
  logs, its manifest), ``outputs`` (where a run writes), ``tracking`` (the MLflow calls), ``worker`` (the process
  they run in), ``served_store`` (a local store served to the kernel), ``lineage`` (inputs, outputs, producers),
  ``stage_run`` (one stage run end to end);
* replays: ``recorded`` (a recorded run read back), ``replay`` (rebuild, fetch, re-execute, compare),
  ``replay_report`` (the verdict, the table, report.json);
* GoCD: ``gocd`` (the config XML and the server's rules), ``pipeline`` (the local rehearsal), ``statedir`` (its
  state folder), ``jobenv`` (a job's environment), ``artifacts`` (publish and fetch), ``pipeline_report`` (plan,
  summary, closing note);
* plumbing: ``cli`` (one error line, exit codes), ``errors`` (the error types and the exit-code table),
  ``console`` (what a person sees), ``redact`` (secrets never shown), ``proc`` (the one subprocess helper),
  ``paths`` (the platform seam, venv layout, atomic writes), ``inputs`` (reading a file the user named),
  ``git`` (everything asked of git).
"""

__version__ = "0.1.0"
