"""mlops_kit: per-stage venvs, papermill runs and MLflow audit trails for GoCD pipelines on Windows.

The command-line entry points live one folder up (``scripts/*.py``) and stay thin; each module here owns one
concern: ``spec`` (stage YAML), ``interpreters`` (finding Pythons), ``envs`` (venv build + cache + audit),
``kernel`` (Jupyter kernelspecs), ``notebook`` (papermill execution), ``tracking`` (MLflow), ``gocd``
(pipeline XML + local rehearsal), ``proc`` (the one subprocess helper) and ``errors`` (exit codes).
"""

__version__ = "0.1.0"
