"""mlops_kit: per-stage venvs, papermill runs and MLflow audit trails for GoCD pipelines on Windows.

The command-line entry points live one folder up (``scripts/*.py``) and stay thin; each module here owns one
concern (its first docstring line says which):

* edges and plumbing: ``cli`` (one error line, exit codes), ``errors`` (the error types and the exit-code table),
  ``console`` (what a person sees), ``redact`` (secrets never shown), ``proc`` (the one subprocess helper),
  ``paths`` (the platform seam, venv layout, atomic writes), ``inputs`` (reading a file the user named),
  ``git`` (everything asked of git);
* stage environments: ``spec`` (stage YAML), ``locks`` (stage lock files), ``interpreters`` (finding Pythons),
  ``pyinstall`` (installing one), ``installers`` (uv/pip commands, indexes, freeze), ``envs`` (build, cache,
  build lock, health check), ``audit`` (the env.json record and audit bundle), ``kernel`` (Jupyter kernelspecs);
* notebook runs: ``params`` (notebook parameters), ``notebook`` (papermill execution), ``runrecord`` (what a run
  logs, its manifest), ``tracking`` (the MLflow calls), ``worker`` (the process they run in), ``stage_run`` (one
  stage run end to end);
* GoCD: ``gocd`` (the config XML), ``pipeline`` (the local rehearsal), ``jobenv`` (a job's environment),
  ``artifacts`` (publish and fetch), ``pipeline_report`` (plan, summary, closing note).
"""

__version__ = "0.1.0"
