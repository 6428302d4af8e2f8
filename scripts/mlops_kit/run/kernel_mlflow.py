"""The stage run as the kernel's active MLflow run, so a notebook's own mlflow calls nest under it.

Before this, the kernel only had ``MLFLOW_RUN_ID``: MLflow's first ``start_run`` in the notebook resumed the stage
run whatever it asked for, so ``with mlflow.start_run(nested=True, run_name="lr=0.1")`` renamed the stage run, the
``with`` ended it, and the next iterations became top-level runs with no parent and none of the pipeline's tags.

Now, when the notebook mentions mlflow, a silent snippet (:data:`BOOTSTRAP`, run before the first cell with the
kernel's own mlflow, whatever its version) makes the stage run the active run and wraps ``start_run``/``end_run``:

* ``start_run(nested=True, ...)`` starts a child of the active run (the stage run, or a child: grandchildren
  work) carrying the pipeline's tags (:func:`child_tags`): GoCD's, git's, the stage's, ``mlops_kit.role=notebook``
  and ``mlops_kit.stage_run``; a ``with`` block ends only that child;
* a plain ``start_run()`` (no ``run_id``, not nested) is the stage run itself: it keeps its name (a ``run_name``
  asked for is ignored, ``tags`` are set on it), as before this toolkit owned the nesting;
* ``end_run()`` while the stage run is the active one does nothing: the toolkit ends the stage run with the
  run's real outcome, so logging after it (or after a ``with mlflow.start_run():`` block) still lands in the stage
  run, and MLflow's own end at the kernel's exit cannot mark it FINISHED early.

Anything else (``start_run(run_id=...)``, another experiment's runs) goes to MLflow unchanged. A kernel without
mlflow, or an mlflow too old for the wrapper, runs the notebook exactly as before (the snippet swallows its own
errors: it must never be why a notebook fails).
"""

from __future__ import annotations

import json
from typing import Mapping

CHILD_TAGS_VAR = "MLOPS_KIT_CHILD_TAGS"  # the kernel's variable holding the children's tags (JSON)
CHILD_ROLE = "notebook"
_COPIED_PREFIXES = ("GO_", "mlflow.source.", "mlflow.user", "mlops_kit.stage")

BOOTSTRAP = r'''
def _mlops_kit_adopt_stage_run():
    import json, os
    try:
        import mlflow
        from mlflow.tracking import fluent
    except Exception:
        return
    stage_id = os.environ.get("MLFLOW_RUN_ID")
    child_tags = json.loads(os.environ.get("MLOPS_KIT_CHILD_TAGS") or "{}")
    if not stage_id or getattr(fluent, "_mlops_kit_stage_run", None):
        return
    start, end = fluent.start_run, fluent.end_run

    def _on_stage():
        run = fluent.active_run()
        return run if run is not None and run.info.run_id == stage_id else None

    def start_run(run_id=None, experiment_id=None, run_name=None, nested=False, *args, **kwargs):
        if run_id is None and not nested:
            tags = kwargs.pop("tags", None)
            stage = _on_stage() or (start(run_id=stage_id) if fluent.active_run() is None else None)
            if stage is not None:
                if tags:
                    mlflow.set_tags(tags)
                return stage
            kwargs["tags"] = tags
        elif run_id is None:
            if fluent.active_run() is None:
                start(run_id=stage_id)
            kwargs["tags"] = {**child_tags, **(kwargs.get("tags") or {})}
        if run_id is not None:
            return start(run_id, experiment_id, run_name, nested, *args, **kwargs)
        kept = os.environ.pop("MLFLOW_RUN_ID", None)  # else MLflow resumes the stage run (kept for subprocesses)
        try:
            return start(run_id, experiment_id, run_name, nested, *args, **kwargs)
        finally:
            if kept is not None:
                os.environ["MLFLOW_RUN_ID"] = kept

    def end_run(*args, **kwargs):
        if _on_stage() is None:
            return end(*args, **kwargs)

    try:
        start(run_id=stage_id)
    except Exception:
        return
    for module in (fluent, mlflow):
        module.start_run, module.end_run = start_run, end_run
    fluent._mlops_kit_stage_run = stage_id

_mlops_kit_adopt_stage_run()
del _mlops_kit_adopt_stage_run
'''


def child_tags(stage_tags: Mapping[str, str], stage_run_id: str) -> str:
    """The tags a run the notebook nests under the stage run gets (JSON for :data:`CHILD_TAGS_VAR`): who ran it
    and where (GoCD, git, the user, the stage), marked as the notebook's own. Never the pipeline-instance key: the
    toolkit reads runs holding it as the instance's stage runs."""
    copied = {k: v for k, v in stage_tags.items() if k.startswith(_COPIED_PREFIXES)}
    return json.dumps({**copied, "mlops_kit.role": CHILD_ROLE, "mlops_kit.stage_run": stage_run_id})
