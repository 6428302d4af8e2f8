"""mlops_kit.rehearsal.schedule: the run as GoCD schedules it (stages in order, the jobs of a stage in parallel,
each in its own copy; data only through artifacts), run for real on small XML files through run_pipeline.py."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from helpers_gocd import WRITE_ENV, cruise_xml, job_xml, py_task, rehearse, stage_jobs_xml, stage_xml


def _two_stage_xml() -> str:
    first = stage_xml("make", py_task(WRITE_ENV) + py_task("open('secret.txt', 'w').write('not published')")
                      + py_task("from pathlib import Path; Path('out/data').mkdir(); "
                                "Path('out/data/x.txt').write_text('42')"),
                      artifacts='<artifact type="build" src="out/data" dest="d" /><artifact type="build" '
                                'src="out/env.json" />')
    second = stage_xml("use", '<fetchartifact artifactOrigin="gocd" stage="make" job="make" srcdir="d/data" '
                              'dest="inputs" />' + py_task(
        "from pathlib import Path; import os; assert Path('inputs/data/x.txt').read_text() == '42'; "
        "Path('out').mkdir(exist_ok=True); Path('out/saw_secret.txt').write_text(str(os.path.exists('secret.txt')))"),
        artifacts='<artifact type="build" src="out/saw_secret.txt" />')
    var = '<environmentvariables><variable name="MLFLOW_TRACKING_URI"><value>http://gocd-only</value></variable>' \
          '<variable name="ML_VENV_ROOT"><value>C:\\ml_venvs</value></variable></environmentvariables>'
    return cruise_xml(first + second, pipeline_extra=var)


def test_two_stages_pass_data_only_through_artifacts(tmp_path: Path) -> None:
    done = rehearse(tmp_path, _two_stage_xml())
    assert done.returncode == 0, done.stdout + done.stderr
    store = tmp_path / "my repo/.pipeline/artifacts/demo/1"
    assert (store / "make/1/make/d/data/x.txt").read_text() == "42"
    assert (store / "use/1/use/saw_secret.txt").read_text() == "False", "each job has its own fresh working copy"
    env = json.loads((store / "make/1/make/env.json").read_text())
    assert env["GO_PIPELINE_NAME"] == "demo" and env["GO_PIPELINE_COUNTER"] == "1"
    assert env["GO_STAGE_NAME"] == env["GO_JOB_NAME"] == "make" and env["GO_PIPELINE_LABEL"] == "1"
    assert env["MLFLOW_TRACKING_URI"] == f"sqlite:///{(tmp_path / 'my repo' / 'mlflow.db').as_posix()}"
    assert "ML_VENV_ROOT" not in env, "the XML's Windows path is for agents; the tools use their own default"
    assert Path(env["prefix"]).resolve() == Path(sys.prefix).resolve(), "'python' is the toolkit's Python"
    assert "[make/make]" in done.stdout and "stage" in done.stdout and "results:" in done.stdout

    done = rehearse(tmp_path, _two_stage_xml(), "--shared-workdir", "--tracking-uri", "http://127.0.0.1:1",
                    "--venv-root", str(tmp_path / "venvs"), "--env", "LEVEL=cli")
    assert done.returncode == 0, done.stderr
    store = tmp_path / "my repo/.pipeline/artifacts/demo/2"
    assert (store / "use/1/use/saw_secret.txt").read_text() == "True", "--shared-workdir shares one folder"
    env = json.loads((store / "make/1/make/env.json").read_text())
    assert env["GO_PIPELINE_COUNTER"] == "2" and env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:1"
    assert env["ML_VENV_ROOT"] == str(tmp_path / "venvs") and env["LEVEL"] == "cli"


def test_without_git_the_label_says_unversioned(tmp_path: Path, git_missing: None) -> None:
    """The example's label template ``${COUNT}-${repo[:8]}`` gave ``1-unversio`` without git."""
    xml = cruise_xml(stage_xml("make", py_task(WRITE_ENV), artifacts='<artifact type="build" src="out/env.json" />'))
    done = rehearse(tmp_path, xml.replace('name="demo"', 'name="demo" labeltemplate="${COUNT}-${repo[:8]}"'))
    assert done.returncode == 0, done.stdout + done.stderr
    env = json.loads((tmp_path / "my repo/.pipeline/artifacts/demo/1/make/1/make/env.json").read_text())
    assert env["GO_PIPELINE_LABEL"] == "1-unversioned" and env["GO_REVISION"] == "unversioned"
    assert "(label 1-unversioned)" in done.stdout


def test_failed_task_runif_and_stop_after_failed_stage(tmp_path: Path) -> None:
    tasks = (py_task("open('ran1', 'w')") + py_task("raise SystemExit(3)") + py_task("open('skipped', 'w')")
             + py_task("open('on_failure', 'w')", "failed") + py_task("open('always', 'w')", "any"))
    xml = cruise_xml(stage_xml("first", tasks, artifacts='<artifact type="build" src="ran1" />'
                                                         '<artifact type="build" src="skipped" />')
                     + stage_xml("second", py_task("open('never', 'w')")))
    done = rehearse(tmp_path, xml)
    out, err = done.stdout, done.stderr
    assert done.returncode == 7, out + err
    work = tmp_path / "my repo/.pipeline/work/demo/1/first/first"
    assert {p.name for p in work.iterdir()} >= {"ran1", "on_failure", "always"}
    assert not (work / "skipped").exists()
    assert not (tmp_path / "my repo/.pipeline/work/demo/1/second").exists()
    assert (tmp_path / "my repo/.pipeline/artifacts/demo/1/first/1/first/ran1").exists(), "published even on failure"
    assert "task failed with exit code 3" in out and "FAILED" in out and "not run" in out
    assert err.strip().count("\n") == 0 and "first/first" in err and "task 2" in err


def test_unsupported_element_fails_before_anything_runs(tmp_path: Path) -> None:
    done = rehearse(tmp_path, cruise_xml(stage_xml("a", py_task("open('ran', 'w')") + '<ant target="x" />')))
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and "<ant>" in done.stderr and done.stderr.strip().count("\n") == 0
    assert not (tmp_path / "my repo/.pipeline").exists()


def test_shared_workdir_still_honours_clean_working_dir_and_fetch_materials(tmp_path: Path) -> None:
    first = stage_xml("one", py_task("open('left_over', 'w')"))
    second = stage_xml("two", py_task("import os; assert not os.path.exists('left_over'); "
                                      "assert os.path.exists('README.txt'); open('ok2', 'w')"),
                       artifacts='<artifact type="build" src="ok2" />').replace(
        '<stage name="two">', '<stage name="two" cleanWorkingDir="true">')
    third = stage_xml("three", py_task("import os; assert not os.path.exists('README.txt'); open('ok3', 'w')"),
                      artifacts='<artifact type="build" src="ok3" />').replace(
        '<stage name="three">', '<stage name="three" cleanWorkingDir="true" fetchMaterials="false">')
    done = rehearse(tmp_path, cruise_xml(first + second + third), "--shared-workdir")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cleaning working directory" in done.stdout


def _stamped_sleep(job: str, out: Path, seconds: float, exit_code: int = 0) -> str:
    """A task that prints, sleeps, and records when it slept (start, end) in ``out/<job>``."""
    return py_task(f"import time; from pathlib import Path; t0 = time.time(); print('{job} sleeps', flush=True); "
                   f"time.sleep({seconds}); Path(r'{out}', '{job}').write_text(f'{{t0}} {{time.time()}}'); "
                   f"raise SystemExit({exit_code})")


def _stage_row(out: str, stage: str) -> tuple[str, float, float]:
    """(status, wall seconds, sum of its jobs' seconds) from the summary's stage row."""
    found = re.search(rf"^{stage}\s+(\S+(?: \S+)?)\s+([\d.]+) \(jobs in parallel; sum of jobs ([\d.]+)\)$", out,
                      re.MULTILINE)
    assert found, out
    return found.group(1), float(found.group(2)), float(found.group(3))


@pytest.mark.slow
def test_jobs_of_a_stage_run_in_parallel_each_with_its_own_copy_and_log(tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    xml = cruise_xml(stage_jobs_xml(
        "s", job_xml("a", py_task("open('mine_a', 'w')") + _stamped_sleep("a", stamps, 4)),
        job_xml("b", py_task("import os; assert not os.path.exists('mine_a'); open('mine_b', 'w')")
                + _stamped_sleep("b", stamps, 4))) + stage_xml("after", py_task("pass")))
    done = rehearse(tmp_path, xml)
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    (a0, a1), (b0, b1) = ([float(x) for x in (stamps / job).read_text().split()] for job in ("a", "b"))
    assert max(a0, b0) < min(a1, b1), "the two jobs' sleeps overlap"
    status, wall, total = _stage_row(out, "s")
    assert status == "passed" and wall / total < 0.8, (wall, total)  # about the time of one job, not of two
    assert "==== " in out and "stage s: 2 jobs in parallel" in out and "[s/a] a sleeps" in out
    store = tmp_path / "my repo/.pipeline/artifacts/demo/1/s/1"
    for mine, other in (("a", "b"), ("b", "a")):
        log = (store / mine / "cruise-output" / "console.log").read_text()
        assert f"{mine} sleeps" in log and f"{other} sleeps" not in log and "[s/" not in log
        assert not (tmp_path / f"my repo/.pipeline/work/demo/1/s/{mine}/mine_{other}").exists()


def test_a_failing_job_fails_the_stage_after_its_sibling_completed(tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    xml = cruise_xml(stage_jobs_xml(
        "s", job_xml("fails", py_task("raise SystemExit(3)")),
        job_xml("slow", _stamped_sleep("slow", stamps, 2) + py_task("open('done', 'w')"),
                artifacts='<artifact type="build" src="done" />')) + stage_xml("after", py_task("pass")))
    done = rehearse(tmp_path, xml)
    out = done.stdout
    assert done.returncode == 7, out + done.stderr
    assert out.index("[s/fails] [go] job failed") < out.index("[s/slow] [go] job passed") \
        < out.index("[local] stage s failed")
    assert (tmp_path / "my repo/.pipeline/artifacts/demo/1/s/1/slow/done").is_file(), "the sibling ran to its end"
    assert re.search(r"^after\s+not run", out, re.MULTILINE) and "s/fails failed at task 1" in done.stderr
