"""mlops_kit.rehearsal.settings: how a local run differs from an agent (paths, overrides, options)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from helpers_gocd import cruise_xml, py_task, rehearse, stage_xml
from mlops_kit.core.errors import BadInput
from mlops_kit.rehearsal import settings


def test_local_tracking_uri_is_absolute_on_windows_and_posix() -> None:
    assert settings.local_tracking_uri(PureWindowsPath(r"C:\Users\Ana Lopez\ml repo")) == \
        "sqlite:///C:/Users/Ana Lopez/ml repo/mlflow.db"
    assert settings.local_tracking_uri(PurePosixPath("/home/ana/repo")) == "sqlite:////home/ana/repo/mlflow.db"


def test_local_overrides_replace_the_agents_values(tmp_path: Path) -> None:
    found = settings.local_overrides(tmp_path, tracking_uri=None, venv_root=None, env=["LEVEL=cli", "EMPTY="])
    assert found == {"MLFLOW_TRACKING_URI": settings.local_tracking_uri(tmp_path), "ML_VENV_ROOT": None,
                     "LEVEL": "cli", "EMPTY": ""}
    with pytest.raises(BadInput, match="--env 'nope': expected NAME=VALUE"):
        settings.local_overrides(tmp_path, tracking_uri=None, venv_root=None, env=["nope"])


@pytest.mark.parametrize("args, expected", [
    (("--job-timeout", "inf"), "--job-timeout 'inf': expected a finite number of minutes >= 0, or 'never'"),
    (("--job-timeout", "-1"), "--job-timeout '-1'"),
    (("--job-timeout", "soon"), "--job-timeout 'soon': expected a number of minutes, or 'never'"),
    (("--keep", "0"), "--keep '0': expected a number of runs >= 1, or 'all'"),
    (("--cancel-grace", "nan"), "--cancel-grace 'nan'"),
])
def test_bad_rehearsal_options_are_one_line_exit_2(tmp_path: Path, args: tuple[str, ...], expected: str) -> None:
    done = rehearse(tmp_path, cruise_xml(stage_xml("a", py_task("pass"))), *args)
    assert done.returncode == 2 and expected in done.stderr and done.stderr.count("\n") == 1, done.stderr
