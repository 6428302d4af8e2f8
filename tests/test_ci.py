"""What CI runs is what the README tells a newcomer to run, with the packages pinned where the README says."""

from __future__ import annotations

import re

from packaging.requirements import Requirement

from helpers import REPO_ROOT


def _readme_test_line(shell: str) -> str:
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    section = text[text.index("**2. Run the tests**"):]
    found = re.search(rf"^\| {re.escape(shell)} \| `(.+)` \|$", section, re.MULTILINE)
    assert found, f"README: no {shell} line under 'Run the tests'"
    return found.group(1)


def _pins(name: str) -> dict[str, Requirement]:
    lines = (REPO_ROOT / name).read_text(encoding="utf-8").splitlines()
    reqs = [Requirement(line.split("#")[0]) for line in lines if line.split("#")[0].strip()]
    return {r.name.lower(): r for r in reqs}


def test_ci_runs_the_readme_test_command_then_mypy_and_holds_the_coverage_floor() -> None:
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    command = _readme_test_line("Linux/macOS")
    assert command in ci, "CI must run the README's Linux/macOS test line as it is"
    floor = [line for line in ci if line.startswith(".venv/bin/python -m coverage report --fail-under=")]
    assert len(floor) == 1 and ci.index(floor[0]) > ci.index(command)
    assert float(floor[0].split("--fail-under=")[1].split()[0]) > 0
    assert ".venv/bin/python -m mypy" in ci[ci.index(command):], "mypy over scripts/ ([tool.mypy]) after the install"


def test_every_readme_test_line_installs_both_requirements_files() -> None:
    for shell in ("Linux/macOS", "Windows cmd", "PowerShell"):
        line = _readme_test_line(shell)
        assert "-r requirements.txt -r requirements-test.txt" in line and line.count("pytest") == 1, shell


def test_requirements_are_exact_pins_and_test_packages_stay_out_of_the_runtime() -> None:
    runtime, test = _pins("requirements.txt"), _pins("requirements-test.txt")
    for name, req in {**runtime, **test}.items():
        assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", name
    assert not runtime.keys() & test.keys(), "a package is in both files"
    assert {"pytest", "coverage", "pytest-cov", "mypy"} <= test.keys() and "pytest" not in runtime
