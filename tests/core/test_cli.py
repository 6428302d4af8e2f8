"""mlops_kit.core.cli and mlops_kit.core.errors: one exit-code table, printed by every --help and documented in the README."""

from __future__ import annotations

import re

import pytest

from helpers import REPO_ROOT, run_script
from mlops_kit.core import cli, errors


def _readme_exit_codes() -> dict[int, str]:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| (\d+) \| (.+?) \|$", section, re.MULTILINE)
    return {int(code): meaning.replace("`", "") for code, meaning in rows}


def test_readme_exit_code_table_is_the_code_table() -> None:
    assert _readme_exit_codes() == dict(errors.EXIT_CODES)


@pytest.mark.parametrize("tool", ["create_venv.py", "run_notebook.py", "run_pipeline.py", "replay_run.py", "doctor.py"])
def test_every_help_prints_the_table(tool: str) -> None:
    done = run_script(tool, "--help")
    assert done.returncode == 0 and cli.exit_codes_help() in done.stdout


def test_a_failure_is_one_redacted_line_with_its_code(capsys: pytest.CaptureFixture[str]) -> None:
    def main(_argv: list[str]) -> int:
        raise errors.TrackingError("server https://ana:hunter2@mlflow:5000 refused; Password=s3cret;")

    assert cli.run(main, []) == errors.EXIT_TRACKING
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "hunter2" not in err and "s3cret" not in err


def test_a_console_that_cannot_show_a_character_never_crashes_a_tool() -> None:
    """A Windows agent's pipe is cp1252: printing a path with ✓ or 日本 must not become an internal error."""
    import subprocess
    import sys

    from helpers import SCRIPTS

    code = ("import sys; sys.path.insert(0, sys.argv[1]); from mlops_kit.core import cli, console\n"
            "def main(argv):\n    print('out: café ✓ 日本'); console.warn('café ✓ 日本'); return 0\n"
            "sys.exit(cli.run(main, []))\n")
    done = subprocess.run([sys.executable, "-c", code, str(SCRIPTS)], capture_output=True, check=False,
                          env={"PYTHONIOENCODING": "cp1252", "LANG": "C", "LC_ALL": "C"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode("cp1252").strip() == "out: café ? ??"
    assert done.stderr.decode("cp1252").strip() == "warning: café ? ??"


def test_on_failure_is_told_the_line_and_the_code(capsys: pytest.CaptureFixture[str]) -> None:
    """A tool whose output is a document (doctor.py --json) prints one even when it fails."""
    told: list[tuple[str, int]] = []

    def bad_input(_argv: list[str]) -> int:
        raise errors.BadInput("specs/x.yaml: python_version: missing")

    assert cli.run(bad_input, [], on_failure=lambda line, code: told.append((line, code))) == 2
    assert cli.run(lambda _argv: 0, [], on_failure=lambda line, code: told.append((line, code))) == 0
    assert told == [("specs/x.yaml: python_version: missing", 2)] and capsys.readouterr().err.startswith("error: ")
