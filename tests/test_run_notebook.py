"""End to end: ``scripts/run_notebook.py`` on real venvs (built by create_venv.py), real kernels, real papermill,
a real MLflow server read back with ``MlflowClient``; a notebook's own MLflow calls on the default SQLite store
(served by the tracking worker) from stage venvs with other mlflow versions."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import nbformat
import pytest
from mlflow import MlflowClient

from helpers import (
    NEW_PROCESS_GROUP,
    POSIX_SIGNALS,
    SCRIPTS,
    TOOLKIT_PYTHON,
    WINDOWS,
    default_ctrl_c,
    free_port,
    kill_tree,
)
from helpers_notebook import NOTEBOOKS, env_with, one_error_line, private_mlflow_server, run_nb

pytestmark = pytest.mark.slow

GOCD = {"GO_PIPELINE_NAME": "churn", "GO_PIPELINE_COUNTER": "17", "GO_PIPELINE_LABEL": "17-abc",
        "GO_STAGE_NAME": "train", "GO_STAGE_COUNTER": "1", "GO_JOB_NAME": "train", "GO_TRIGGER_USER": "ana",
        "GO_SERVER_URL": "https://gocd.example:8154/go", "GO_REVISION_REPO": "0123abcd",
        "GO_SECRET_DB_PASSWORD": "never-logged", "SOME_OTHER_VAR": "never-logged"}


def _runs(uri: str, experiment: str) -> list:
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    return client.search_runs([exp.experiment_id], order_by=["attributes.start_time ASC"])


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> set[str]:
    found: set[str] = set()
    for item in client.list_artifacts(run_id, path):
        if item.is_dir:
            found |= _artifacts(client, run_id, item.path)
        else:
            found.add(item.path)
    return found


def test_server_run_logs_params_tags_metrics_artifacts(tmp_path: Path, venv_mlflow: Path, mlflow_server: str) -> None:
    work = tmp_path / "work dir with spaces"
    work.mkdir()
    params_file = work / "my params.yaml"
    params_file.write_text("alpha: 0.75\ncfg:\n  layers: [64, 32]\n  optimizer:\n    name: adam\n"
                           "db_password: hunter2\nnote: short\n", encoding="utf-8")
    output = work / "out folder" / "outputs_out.ipynb"
    done = run_nb("--venv", str(venv_mlflow), "--notebook", str(NOTEBOOKS / "outputs.ipynb"), "--output", str(output),
                  "--params-file", str(params_file), "-p", "cfg.optimizer.lr", "0.01", "-p", "note", "x" * 7000,
                  "--tracking-uri", mlflow_server, "--experiment", "e2e server", "--log-output",
                  env=env_with(**GOCD), cwd=work)
    assert done.returncode == 0, done.stderr
    assert "alpha 0.75" in done.stdout  # --log-output streams cell output
    assert "metric 'label' is not a number" in done.stderr
    client = MlflowClient(mlflow_server)
    children = [r for r in _runs(mlflow_server, "e2e server") if r.data.tags.get("mlops_kit.role") == "stage"]
    assert len(children) == 1
    run = children[0]
    assert run.info.status == "FINISHED" and run.info.run_name == "train"
    p = run.data.params
    assert p["stage"] == "train" and p["python_version"].startswith("3.12.") and p["alpha"] == "0.75"
    assert p["cfg.layers"] == "[64, 32]" and p["cfg.optimizer.name"] == "adam" and p["cfg.optimizer.lr"] == "0.01"
    assert p["db_password"] == "***" and p["output_dir"] == str(work / "out folder" / "train_outputs")
    assert len(p["note"]) == 6000 and "truncated" in p["note"]
    assert {"git_commit", "git_branch", "git_dirty"} <= set(p)
    tags = run.data.tags
    for name in ("GO_PIPELINE_NAME", "GO_PIPELINE_COUNTER", "GO_PIPELINE_LABEL", "GO_STAGE_NAME", "GO_STAGE_COUNTER",
                 "GO_JOB_NAME", "GO_TRIGGER_USER", "GO_SERVER_URL", "GO_REVISION_REPO"):
        assert tags[name] == GOCD[name]
    assert "never-logged" not in json.dumps(tags) + json.dumps(p)
    assert tags["mlflow.source.name"].endswith("outputs.ipynb") and tags["mlflow.runName"] == "train"
    assert run.data.metrics == {"accuracy": 0.93, "loss": 0.25, "eval.f1": 0.5, "from_notebook": 42.0}
    arts = _artifacts(client, run.info.run_id)
    assert {"outputs_out.ipynb", "outputs_out.html", "environment/spec.yaml", "environment/pip_freeze.txt",
            "environment/env.json", "params/outputs_out.params.yaml", "outputs/plots/square.png",
            "outputs/table.csv", "outputs/metrics.json"} <= arts
    assert "params/my params.yaml" not in arts  # it holds a secret: only the masked copy is logged
    logged_nb = Path(client.download_artifacts(run.info.run_id, "outputs_out.ipynb", str(tmp_path)))
    assert "hunter2" not in logged_nb.read_text() and "hunter2" not in output.read_text()
    assert (output.parent / "train_outputs" / "plots" / "square.png").is_file()
    assert json.loads(tracking_manifest(output).read_text())["logged"] is True
    assert _served_store(output) is None  # a tracking server is used directly, even by a notebook using mlflow


def tracking_manifest(output: Path) -> Path:
    return output.with_name(output.stem + ".mlops_run.json")


def test_default_sqlite_store_and_venv_interpreter(tmp_path: Path, venv_small: Path) -> None:
    """No tracking option: sqlite:///mlflow.db in the current folder, artifacts in mlruns/ next to it."""
    cwd = tmp_path / "project"
    cwd.mkdir()
    done = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "venv_check.ipynb"),
                  "--output", "out/check.ipynb", "-p", "expected_prefix", str(venv_small), "-p", "expected_minor",
                  '"3.10"', cwd=cwd)
    assert done.returncode == 0, done.stderr + done.stdout
    assert (cwd / "mlflow.db").is_file()
    runs = _runs(f"sqlite:///{cwd / 'mlflow.db'}", "mlops_kit")
    assert [r.info.status for r in runs] == ["FINISHED"]
    run = runs[0]
    assert run.info.artifact_uri.startswith((cwd / "mlruns").as_uri())
    assert (cwd / "mlruns" / "mlops_kit" / run.info.run_id / "artifacts" / "check.html").is_file()
    assert run.data.params["python_version"].startswith("3.10.") and run.data.params["stage"] == "ingest"
    assert (cwd / "out" / "ingest_outputs").is_dir()  # default output folder: <output dir>/<stage>_outputs
    assert done.stdout.strip().splitlines()[-1] == str(cwd / "out" / "check.ipynb")
    assert _served_store(cwd / "out" / "check.ipynb") is None  # no mention of mlflow: no server started
    assert "mlflow_server" not in tracking_manifest(cwd / "out" / "check.ipynb").read_text()


def test_failing_notebook_is_written_logged_and_failed(tmp_path: Path, venv_small: Path, mlflow_server: str) -> None:
    output = tmp_path / "fail" / "fails_out.ipynb"
    done = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "fails.ipynb"), "--output", str(output),
                  "-p", "step", "2", "--tracking-uri", mlflow_server, "--experiment", "e2e failing")
    assert done.returncode == 5, done.stderr
    line = one_error_line(done.stderr)
    assert "ValueError" in line and "boom at step 2" in line and "cell 2" in line
    text = output.read_text()
    assert "boom at step 2" in text and "An Exception was encountered" in text and "never reached" in text
    (run,) = _runs(mlflow_server, "e2e failing")
    assert run.info.status == "FAILED"
    tags = run.data.tags
    assert tags["mlops_kit.failed_cell_index"] == "2" and tags["mlops_kit.error_name"] == "ValueError"
    assert tags["mlops_kit.error_value"] == "boom at step 2" and tags["mlops_kit.failure_kind"] == "cell-error"
    assert {"fails_out.ipynb", "fails_out.html"} <= _artifacts(MlflowClient(mlflow_server), run.info.run_id)


@pytest.mark.parametrize(("name", "extra", "kind"), [("sleeps", ["--cell-timeout", "2.5"], "timeout"),
                                                     ("dies", [], "kernel-died")])
def test_timeout_and_dead_kernel_fail_with_notebook_written(tmp_path: Path, venv_small: Path, name: str,
                                                            extra: list[str], kind: str) -> None:
    """Also: the local store served meanwhile (the notebook mentions mlflow) is stopped."""
    output = tmp_path / "new" / "nested folder" / f"{name}_out.ipynb"  # created, though --output-dir is elsewhere
    done = run_nb("--venv", str(venv_small), "--notebook", str(_mentioning_mlflow(name, tmp_path)), "--output",
                  str(output), "--output-dir", str(tmp_path / "outs"), *extra, cwd=tmp_path)
    assert done.returncode == 5, done.stderr
    assert kind in one_error_line(done.stderr)
    assert output.is_file() and "An Exception was encountered" in output.read_text()
    (run,) = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "mlops_kit")
    assert run.info.status == "FAILED" and run.data.tags["mlops_kit.failure_kind"] == kind
    _assert_server_gone(output)


def test_malformed_output_is_a_failed_run_not_a_crash(tmp_path: Path, venv_small: Path, mlflow_server: str) -> None:
    """nbclient refusing a cell's output (NotebookValidationError) once cells ran: exit 5, run FAILED, notebook kept,
    and an HTML rendering problem only warns."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('before')"),
                nbformat.v4.new_code_cell("display({'image/png': 123}, raw=True)"),
                nbformat.v4.new_code_cell("print('never reached')")]
    source = tmp_path / "malformed.ipynb"
    nbformat.write(nb, str(source))
    output = tmp_path / "out" / "malformed_out.ipynb"
    done = run_nb("--venv", str(venv_small), "--notebook", str(source), "--output", str(output),
                  "--tracking-uri", mlflow_server, "--experiment", "e2e runner error", cwd=tmp_path)
    assert done.returncode == 5, done.stderr
    assert "runner-error in cell 1" in one_error_line(done.stderr)
    assert output.is_file() and "before" in output.read_text()
    (run,) = _runs(mlflow_server, "e2e runner error")
    assert run.info.status == "FAILED" and run.data.tags["mlops_kit.failure_kind"] == "runner-error"
    assert "malformed_out.ipynb" in _artifacts(MlflowClient(mlflow_server), run.info.run_id)
    assert json.loads(tracking_manifest(output).read_text())["logged"] is True


def test_pipeline_stages_nest_under_one_parent(tmp_path: Path, venv_small: Path, mlflow_server: str) -> None:
    def stage(counter: str, name: str) -> None:
        env = env_with(GO_PIPELINE_NAME="nested-pipe", GO_PIPELINE_COUNTER=counter, GO_STAGE_NAME=name)
        done = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "no_params.ipynb"),
                      "--output", str(tmp_path / counter / f"{name}.ipynb"), "--stage", name,
                      "--tracking-uri", mlflow_server, env=env)
        assert done.returncode == 0, done.stderr
        assert "no cell tagged 'parameters'" in done.stderr

    stage("1", "ingest")
    stage("1", "train")
    stage("2", "ingest")
    runs = _runs(mlflow_server, "nested-pipe")  # default experiment: GO_PIPELINE_NAME
    parents = [r for r in runs if r.data.tags.get("mlops_kit.role") == "pipeline"]
    children = [r for r in runs if r.data.tags.get("mlops_kit.role") == "stage"]
    assert len(parents) == 2 and len(children) == 3
    by_key = {p.data.tags["mlops_kit.pipeline_key"]: p.info.run_id for p in parents}
    assert set(by_key) == {"nested-pipe/1", "nested-pipe/2"}
    first = [c for c in children if c.data.tags["GO_PIPELINE_COUNTER"] == "1"]
    assert sorted(c.info.run_name for c in first) == ["ingest", "train"]
    assert {c.data.tags["mlflow.parentRunId"] for c in first} == {by_key["nested-pipe/1"]}
    assert all(p.info.status == "FINISHED" for p in parents)


def test_unreachable_server_fails_fast_without_running(tmp_path: Path, venv_small: Path) -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    output = tmp_path / "out" / "x.ipynb"
    done = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "outputs.ipynb"), "--output", str(output),
                  "--tracking-uri", uri)
    assert done.returncode == 6
    line = one_error_line(done.stderr)
    assert uri in line and "nothing was executed" in line
    assert not (tmp_path / "out").exists()


def test_credentials_in_the_tracking_uri_are_never_shown_or_stored(tmp_path: Path, venv_small: Path,
                                                                   mlflow_server: str) -> None:
    with_password = mlflow_server.replace("http://", "http://ana:s3cr3t@")  # the test server ignores credentials
    output = tmp_path / "out" / "creds.ipynb"
    done = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "no_params.ipynb"), "--output",
                  str(output), "--tracking-uri", with_password, "--experiment", "e2e credentials")
    assert done.returncode == 0, done.stderr
    assert "s3cr3t" not in done.stdout + done.stderr and "http://***@127.0.0.1" in done.stdout
    manifest = tracking_manifest(output).read_text()
    assert "s3cr3t" not in manifest and json.loads(manifest)["tracking_uri"] == mlflow_server
    assert len(_runs(mlflow_server, "e2e credentials")) == 1
    for userinfo, secret in (("ana:s3cr3t", "s3cr3t"), ("t0kenonly", "t0kenonly")):  # a token alone is a secret too
        down = f"http://{userinfo}@127.0.0.1:{free_port()}"
        done = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "no_params.ipynb"), "--output",
                      str(tmp_path / "o2.ipynb"), "--tracking-uri", down)
        assert done.returncode == 6 and secret not in done.stdout + done.stderr
        assert "http://***@127.0.0.1" in one_error_line(done.stderr)


def test_server_dying_mid_run_keeps_results_and_log_existing_uploads(tmp_path: Path, venv_small: Path,
                                                                     mlflow_server: str) -> None:
    output = tmp_path / "runs" / "late_out.ipynb"
    with private_mlflow_server(tmp_path / "private") as (uri, server):
        done = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "kills_server.ipynb"),
                      "--output", str(output), "-p", "server_pid", str(server.pid), "-p", "server_port",
                      uri.rsplit(":", 1)[1], "--tracking-uri", uri, "--experiment", "late upload")
    assert done.returncode == 6, done.stderr
    line = one_error_line(done.stderr)
    manifest = tracking_manifest(output)
    assert uri in line and "--log-existing" in line and str(manifest) in line
    assert output.is_file() and (output.parent / "ingest_outputs" / "result.txt").is_file()
    assert output.with_suffix(".html").is_file()
    assert json.loads(manifest.read_text())["logged"] is False

    done = run_nb("--log-existing", str(manifest), "--tracking-uri", mlflow_server)
    assert done.returncode == 0, done.stderr
    (run,) = _runs(mlflow_server, "late upload")
    assert run.info.status == "FINISHED" and run.data.params["server_port"] == uri.rsplit(":", 1)[1]
    assert {"late_out.ipynb", "late_out.html", "outputs/result.txt", "environment/env.json"} <= _artifacts(
        MlflowClient(mlflow_server), run.info.run_id)
    again = run_nb("--log-existing", str(manifest))
    assert again.returncode == 2 and "already logged" in one_error_line(again.stderr)


def test_git_missing_records_unknown(tmp_path: Path, venv_small: Path, git_missing: None) -> None:
    done = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "no_params.ipynb"),
                  "--output", str(tmp_path / "o.ipynb"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run,) = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "mlops_kit")
    assert run.data.params["git_commit"] == "unknown" and run.data.params["git_dirty"] == "unknown"
    assert "mlflow.source.git.commit" not in run.data.tags


def test_git_fields_from_the_notebooks_repo(tmp_path: Path, venv_small: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "nbs").mkdir(parents=True)
    shutil.copy(NOTEBOOKS / "no_params.ipynb", repo / "nbs" / "stage.ipynb")
    git = ["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q", "-b", "feature/x"], ["add", "."], ["commit", "-qm", "init"]):
        subprocess.run(["git", "-C", str(repo), *args] if args[0] != "commit" else [*git, *args], check=True)
    sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    done = run_nb("--venv", str(venv_small), "--notebook", str(repo / "nbs" / "stage.ipynb"),
                  "--output", str(tmp_path / "o.ipynb"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run,) = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "mlops_kit")
    p, tags = run.data.params, run.data.tags
    assert (p["git_commit"], p["git_branch"], p["git_dirty"]) == (sha, "feature/x", "False")
    assert tags["mlflow.source.git.commit"] == sha and tags["mlflow.source.name"] == "nbs/stage.ipynb"


@pytest.mark.parametrize(("args", "expected"), [
    (["--notebook", "{nb}/missing.ipynb"], "missing.ipynb: notebook not found"),
    (["--params-file", "{tmp}/none.yaml"], "none.yaml: params file not found"),
    (["--params-file", "{tmp}/list.yaml"], "list.yaml: the params file must be a YAML mapping"),
    (["-p", "not-a-name", "1"], "-p 'not-a-name'"),
    (["-p", "x", "[1,"], "-p x: value '[1,' is not valid YAML"),
    (["-p", "output_dir", "x"], "reserved"),
    (["--output", "{nb}/no_params.ipynb"], "must differ from --notebook"),
    (["--cell-timeout", "0"], "--cell-timeout 0"),
    (["--params-file", "{tmp}/many.yaml"], "many.yaml: 1500 parameters (nested keys counted one by one), at most"),
])
def test_bad_input_one_line_exit_2(tmp_path: Path, venv_small: Path, args: list[str], expected: str) -> None:
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    (tmp_path / "many.yaml").write_text("".join(f"k{i}: {i}\n" for i in range(1500)))  # a data file, not params
    base = {"--venv": str(venv_small), "--notebook": str(NOTEBOOKS / "no_params.ipynb"),
            "--output": str(tmp_path / "o.ipynb")}
    args = [a.format(nb=NOTEBOOKS, tmp=tmp_path) for a in args]
    for flag, value in base.items():
        if flag not in args:
            args += [flag, value]
    done = run_nb(*args, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert expected in one_error_line(done.stderr)
    assert not (tmp_path / "o.ipynb").exists() and not (tmp_path / "mlflow.db").exists()


def test_bad_input_is_exit_2_even_with_the_server_down(tmp_path: Path, venv_small: Path) -> None:
    """Inputs are checked before the store: a typo is not reported as an unreachable server."""
    done = run_nb("--venv", str(venv_small), "--notebook", str(tmp_path / "typo.ipynb"), "--output",
                  str(tmp_path / "o.ipynb"), "--tracking-uri", f"http://127.0.0.1:{free_port()}", cwd=tmp_path)
    assert done.returncode == 2 and "typo.ipynb: notebook not found" in one_error_line(done.stderr)


def test_bad_venv_one_line_exit_2(tmp_path: Path) -> None:
    plain = tmp_path / "plain venv"
    plain.mkdir()
    for venv, expected in ((tmp_path / "missing", "not a venv built by create_venv.py"),
                           (plain, "not a venv built by create_venv.py")):
        done = run_nb("--venv", str(venv), "--notebook", str(NOTEBOOKS / "no_params.ipynb"),
                      "--output", str(tmp_path / "o.ipynb"), cwd=tmp_path)
        assert done.returncode == 2
        assert expected in one_error_line(done.stderr) and str(venv) in done.stderr


def test_help_documents_conventions() -> None:
    done = run_nb("--help")
    assert done.returncode == 0
    for text in ("output_dir", "metrics.json", "<stage>_outputs", "--log-existing", "sqlite:///mlflow.db",
                 "mlops_kit", "PowerShell", "exit codes", "GO_PIPELINE_COUNTER"):
        assert text in done.stdout, text


def test_venv_from_spec_and_venv_root(tmp_path: Path, venv_small: Path) -> None:
    root = venv_small.parent
    spec = root / "ingest.yaml"  # written by build_venv next to the venvs
    done = run_nb("--spec", str(spec), "--venv-root", str(root), "--notebook", str(NOTEBOOKS / "no_params.ipynb"),
                  "--output", str(tmp_path / "o.ipynb"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "built from a different version" not in done.stderr
    changed = tmp_path / "ingest.yaml"
    changed.write_text(spec.read_text().replace("- six", "- six\n  - tomli"))
    done = run_nb("--spec", str(changed), "--venv-root", str(root), "--notebook", str(NOTEBOOKS / "no_params.ipynb"),
                  "--output", str(tmp_path / "o2.ipynb"), cwd=tmp_path)
    assert done.returncode == 0 and "built from a different version" in done.stderr
    other = tmp_path / "other.yaml"
    other.write_text(spec.read_text().replace("venv_name: nb_ingest_py310", "venv_name: never_built"))
    done = run_nb("--spec", str(other), "--venv-root", str(root), "--notebook", str(NOTEBOOKS / "no_params.ipynb"),
                  "--output", str(tmp_path / "o3.ipynb"), cwd=tmp_path)
    assert done.returncode == 2 and "create_venv.py --spec" in one_error_line(done.stderr)


def test_p_needs_name_and_value(tmp_path: Path, venv_small: Path) -> None:
    done = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "no_params.ipynb"),
                  "--output", str(tmp_path / "o.ipynb"), "-p", "lonely")
    assert done.returncode == 2 and "expected 2 arguments" in one_error_line(done.stderr)


@POSIX_SIGNALS
def test_ctrl_c_ends_the_run_killed_with_notebook_kept(tmp_path: Path, venv_small: Path) -> None:
    """Also: the local store served meanwhile (the notebook mentions mlflow) is stopped."""
    output = tmp_path / "out.ipynb"
    child = _start_sleeping_run(tmp_path, venv_small, output, _mentioning_mlflow("sleeps", tmp_path / "nb"))
    os.killpg(child.pid, signal.SIGINT)  # Ctrl-C reaches the whole console group
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 130, stderr  # Windows too: Ctrl-C is KeyboardInterrupt there, handled the same
    assert "error: interrupted" in stderr and output.is_file()
    (run,) = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "mlops_kit")
    assert run.info.status == "KILLED" and run.data.tags["mlops_kit.failure_kind"] == "interrupted"
    assert json.loads(tracking_manifest(output).read_text())["status"] == "KILLED"
    _assert_server_gone(output)


def test_unexpected_error_before_cells_ends_the_run_failed(tmp_path: Path, venv_small: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever goes wrong once the MLflow run exists, the run ends FAILED with a manifest (not RUNNING, exit 1)."""
    from mlops_kit.core.errors import NotebookFailed
    from mlops_kit.run import notebook, stage_run

    def broken(ex: object, nb: object) -> None:
        raise ValueError("unexpected inside the runner")

    monkeypatch.setattr(notebook, "execute", broken)  # stands in for a library bug before the first cell
    monkeypatch.chdir(tmp_path)
    output = tmp_path / "never" / "out.ipynb"
    request = stage_run.NotebookRunRequest(venv=venv_small, notebook=NOTEBOOKS / "venv_check.ipynb", output=output)
    with pytest.raises(NotebookFailed, match="runner-error: ValueError: unexpected inside the runner"):
        stage_run.run(request)
    (run,) = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "mlops_kit")
    assert run.info.status == "FAILED" and run.data.tags["mlops_kit.failure_kind"] == "runner-error"
    assert json.loads(tracking_manifest(output).read_text())["logged"] is True


# --- a notebook's own MLflow calls on the default store: served by the tracking worker -------------------------

SERVED_LOG = ".mlflow_server.log"
DEAD_PROXY = "http://127.0.0.1:9"  # a proxy set for the internet must not be asked for the local server
PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")
LINUX_PROC = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="finds processes in /proc")
# which stage venv logs a scikit-learn model (mlflow 1.29's package brings no scikit-learn)
MLFLOW_VENVS = {"venv_mlflow2": True, "venv_mlflow": True, "venv_mlflow129": False}


def _mentioning_mlflow(name: str, folder: Path) -> Path:
    """A copy of test notebook ``name`` whose code mentions mlflow (a comment is enough): the runner then serves
    the local store while it runs, even for a venv without mlflow."""
    nb = nbformat.read(str(NOTEBOOKS / f"{name}.ipynb"), as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("# the notebook would call mlflow here"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.ipynb"
    nbformat.write(nb, str(path))
    return path


def _served_store(output: Path) -> tuple[int, int] | None:
    """Port and process of the store served for the run that wrote ``output`` (from its log); None: none was."""
    log = output.with_name(output.stem + SERVED_LOG)
    if not log.exists():
        return None
    text = log.read_text(encoding="utf-8")
    found = re.search(r"serving .+ at http://127\.0\.0\.1:(\d+) \(.*process (\d+)\)", text)
    assert found, text
    return int(found[1]), int(found[2])


def _running(pid: int) -> bool:
    """Process ``pid`` exists and is not a zombie (Linux /proc; without /proc only the port is checked)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _server_gone(port: int, pid: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0 and not _running(pid)


def _assert_server_gone(output: Path, *, stopped: bool = True) -> None:
    """The store served for that run is gone: its port refuses and its process (the tracking worker) has exited;
    with ``stopped``, the runner stopped it itself (its log says so) before writing the run's final status."""
    served = _served_store(output)
    assert served is not None, "no local store was served"
    assert _server_gone(*served), served
    if stopped:
        assert "stopped serving" in output.with_name(output.stem + SERVED_LOG).read_text(encoding="utf-8")


@pytest.mark.parametrize("venv_fixture", list(MLFLOW_VENVS))
def test_notebook_logs_itself_on_the_default_store(tmp_path: Path, venv_fixture: str,
                                                   request: pytest.FixtureRequest) -> None:
    """mlflow 2.x, mlflow-skinny (no SQLite support at all) and the seed's 1.29 on Python 3.8 cannot open the
    toolkit's SQLite store themselves; served over HTTP, everything they log lands in the stage run."""
    venv = request.getfixturevalue(venv_fixture)
    output = tmp_path / "out" / "logs_out.ipynb"
    env = {k: v for k, v in env_with(**dict.fromkeys(PROXY_VARS, DEAD_PROXY)).items() if k.lower() != "no_proxy"}
    done = run_nb("--venv", str(venv), "--notebook", str(NOTEBOOKS / "logs_itself.ipynb"), "--output", str(output),
                  cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (run,) = _runs(uri, "mlops_kit")
    run_id = run.info.run_id
    seen = json.loads(next(output.parent.glob("*_outputs/seen.json")).read_text())
    assert seen["tracking_uri"].startswith("http://127.0.0.1:") and seen["run_id"] == run_id
    client = MlflowClient(uri)
    assert run.info.status == "FINISHED"
    assert [m.value for m in client.get_metric_history(run_id, "nb_metric")] == [0.5, 0.75]
    assert run.data.metrics == {"nb_metric": 0.75, "from_runner": 1.0}  # the notebook's and metrics.json
    assert run.data.params["nb_param"] == f"p-{seen['version']}" and run.data.params["stage"] in venv.name
    assert run.data.tags["nb_tag"] == f"t-{seen['version']}" and run.data.tags["mlops_kit.role"] == "stage"
    arts = _artifacts(client, run_id)
    assert {"logs_out.ipynb", "logs_out.html", "logs_out.mlflow_server.log", "environment/env.json",
            "params/logs_out.params.yaml", "outputs/seen.json", "outputs/metrics.json",  # the runner's
            "note.txt", "notes/note.txt", "dicts/d.json"} <= arts  # the notebook's
    assert ("figures/line.png" in arts) == bool(seen.get("log_figure"))
    assert bool(seen.get("sklearn_model")) is MLFLOW_VENVS[venv_fixture]
    if "model_id" in seen:  # mlflow 3.x: a logged model linked to the run, its files in the local store
        model = client.get_logged_model(seen["model_id"])
        assert model.source_run_id == run_id and model.artifact_location.startswith((tmp_path / "mlruns").as_uri())
    elif seen.get("sklearn_model"):
        assert "model/MLmodel" in arts
    own = client.get_run(seen["own_run_id"])  # an experiment the notebook created: artifacts stay local too
    assert client.get_experiment(own.info.experiment_id).artifact_location.startswith((tmp_path / "mlruns").as_uri())
    _assert_server_gone(output)


def test_failing_cell_after_log_metric_keeps_it_and_stops_the_server(tmp_path: Path, venv_mlflow: Path) -> None:
    output = tmp_path / "out" / "fails_out.ipynb"
    done = run_nb("--venv", str(venv_mlflow), "--notebook", str(NOTEBOOKS / "logs_itself.ipynb"), "--output",
                  str(output), "-p", "fail_after_metric", "true", cwd=tmp_path)
    assert done.returncode == 5, done.stderr[-3000:]
    assert "failing after log_metric" in one_error_line(done.stderr)
    (run,) = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "mlops_kit")
    assert run.info.status == "FAILED"  # written after the kernel's mlflow ended the run FINISHED at its exit
    assert run.data.metrics == {"nb_metric": 0.75} and run.data.tags["mlops_kit.failure_kind"] == "cell-error"
    assert "fails_out.mlflow_server.log" in _artifacts(MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}"),
                                                       run.info.run_id)
    _assert_server_gone(output)


def test_server_that_cannot_start_is_exit_6_and_the_run_failed(tmp_path: Path, venv_small: Path) -> None:
    output = tmp_path / "out" / "x.ipynb"
    (tmp_path / "out" / f"x{SERVED_LOG}").mkdir(parents=True)  # its log cannot be written: it cannot start
    done = run_nb("--venv", str(venv_small), "--notebook", str(_mentioning_mlflow("no_params", tmp_path)),
                  "--output", str(output), cwd=tmp_path)
    assert done.returncode == 6, done.stderr
    line = one_error_line(done.stderr)
    assert "cannot write its log" in line and f"x{SERVED_LOG}" in line and "nothing was executed" in line
    (run,) = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "mlops_kit")
    assert run.info.status == "FAILED" and run.data.tags["mlops_kit.failure_kind"] == "tracking-server"
    assert json.loads(tracking_manifest(output).read_text())["status"] == "FAILED"
    assert not output.exists()


@LINUX_PROC
def test_killed_runner_leaves_no_server_and_no_process(tmp_path: Path, venv_small: Path, isolated_home: Path) -> None:
    """``kill -9`` of run_notebook: its tracking worker (serving the store) and the kernel leave by themselves."""
    output = tmp_path / "out.ipynb"
    child = _start_sleeping_run(tmp_path, venv_small, output, _mentioning_mlflow("sleeps", tmp_path / "nb"))
    try:
        served = _served_store(output)
        assert served is not None and not _server_gone(*served)
        os.kill(child.pid, signal.SIGKILL)  # the runner only: its worker and kernel are left to themselves
        child.communicate(timeout=30)
        deadline = time.monotonic() + 30
        while not (_server_gone(*served) and not _ours(isolated_home)) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert _server_gone(*served), served
        assert not _ours(isolated_home)  # the kernel: its connection file is in this test's Jupyter runtime folder
    finally:
        kill_tree(child.pid)


def _ours(home: Path) -> list[str]:
    """Command lines of running processes that name a path under ``home`` (Linux /proc)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(home) in text and _running(int(cmdline.parent.name)):
            found.append(text)
    return found


# --- failure paths that must end clean -------------------------------------------------------------------------


def _start_sleeping_run(tmp_path: Path, venv: Path, output: Path,
                        nb: Path = NOTEBOOKS / "sleeps.ipynb") -> subprocess.Popen:
    """run_notebook.py on a notebook that sleeps in its second cell; returns once that cell runs."""
    child = subprocess.Popen([str(TOOLKIT_PYTHON), str(SCRIPTS / "run_notebook.py"), "--venv", str(venv),
                              "--notebook", str(nb), "--output", str(output)],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=None if WINDOWS else default_ctrl_c, **NEW_PROCESS_GROUP)
    deadline = time.monotonic() + 120
    while not output.is_file() and time.monotonic() < deadline:  # papermill saves it as the first cell starts
        time.sleep(0.2)
    time.sleep(1.5)
    return child


@POSIX_SIGNALS
def test_sigterm_is_handled_like_ctrl_c(tmp_path: Path, venv_small: Path) -> None:
    """GoCD cancels a job on a Linux agent with SIGTERM: the run ends KILLED, notebook and manifest kept."""
    import signal

    output = tmp_path / "out.ipynb"
    child = _start_sleeping_run(tmp_path, venv_small, output)
    os.kill(child.pid, signal.SIGTERM)
    _, stderr = child.communicate(timeout=120)
    assert child.returncode == 143, stderr  # POSIX only; on Windows a cancel is TerminateProcess: exit code 1
    assert one_error_line(stderr) == "error: terminated (SIGTERM)" and "Traceback" not in stderr
    assert output.is_file() and "time.sleep(120)" in output.read_text()
    (run,) = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "mlops_kit")
    assert run.info.status == "KILLED" and run.data.tags["mlops_kit.failure_kind"] == "interrupted"
    manifest = json.loads(tracking_manifest(output).read_text())
    assert manifest["status"] == "KILLED" and manifest["logged"] is True


def test_kill_9_leaves_a_manifest_that_closes_the_run(tmp_path: Path, venv_small: Path) -> None:
    """Nothing catches kill -9: the manifest written at the start lets --log-existing end the run KILLED."""

    output = tmp_path / "out.ipynb"
    child = _start_sleeping_run(tmp_path, venv_small, output)
    kill_tree(child.pid)
    child.communicate(timeout=60)
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    (run,) = _runs(store, "mlops_kit")
    manifest = tracking_manifest(output)
    assert run.info.status == "RUNNING" and json.loads(manifest.read_text())["run_id"] == run.info.run_id
    done = run_nb("--log-existing", str(manifest), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    (run,) = _runs(store, "mlops_kit")
    assert run.info.status == "KILLED" and run.data.tags["mlops_kit.failure_kind"] == "runner-vanished"
    assert json.loads(manifest.read_text())["logged"] is True


def test_the_next_run_of_an_output_closes_a_vanished_run_and_two_at_once_are_refused(
        tmp_path: Path, venv_small: Path) -> None:

    output = tmp_path / "out.ipynb"
    child = _start_sleeping_run(tmp_path, venv_small, output)
    second = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "no_params.ipynb"), "--output",
                    str(output), cwd=tmp_path)
    assert second.returncode == 2 and "another run_notebook.py is writing this output" in one_error_line(
        second.stderr)
    kill_tree(child.pid)
    child.communicate(timeout=60)
    done = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "no_params.ipynb"), "--output",
                  str(output), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "as KILLED: its runner vanished" in done.stderr
    old, new = _runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "mlops_kit")
    assert (old.info.status, new.info.status) == ("KILLED", "FINISHED")


@pytest.mark.parametrize("where", ["/proc/no-such/out.ipynb", "a-file/out.ipynb"])
def test_an_output_folder_that_cannot_be_made_is_bad_input_before_anything_runs(
        tmp_path: Path, venv_small: Path, where: str) -> None:
    (tmp_path / "a-file").write_text("x")
    output = Path(where) if where.startswith("/") else tmp_path / where
    done = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "no_params.ipynb"), "--output",
                  str(output), cwd=tmp_path)
    assert done.returncode == 2 and "--output" in one_error_line(done.stderr)
    assert not (tmp_path / "mlflow.db").exists(), "nothing ran, no store was created"


@pytest.mark.parametrize("output_dir", [".", "out"])
def test_an_output_folder_that_holds_the_store_or_the_notebook_is_refused(
        tmp_path: Path, venv_small: Path, output_dir: str) -> None:
    (tmp_path / "mlruns").mkdir()
    done = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "no_params.ipynb"), "--output",
                  "out/x.ipynb", "--output-dir", output_dir, cwd=tmp_path)
    line = one_error_line(done.stderr)
    assert done.returncode == 2 and "--output-dir" in line
    assert ("tracking store" if output_dir == "." else "executed notebook") in line
    assert not (tmp_path / "mlflow.db").exists() and sorted(os.listdir(tmp_path / "mlruns")) == []


@pytest.mark.parametrize(("option", "value"), [("--cell-timeout", "inf"), ("--start-timeout", "inf"),
                                               ("--cell-timeout", "nan"), ("--start-timeout", "0")])
def test_timeouts_must_be_finite_positive_seconds(tmp_path: Path, venv_small: Path, option: str, value: str) -> None:
    done = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "no_params.ipynb"), "--output",
                  str(tmp_path / "o.ipynb"), option, value, cwd=tmp_path)
    assert done.returncode == 2 and option in one_error_line(done.stderr)


SECRETS = ("hunter2pw", "t0kenonly", "c0nnpw", "b3arer", "pp4ss", "envs3cret")


def test_secret_values_reach_no_file_and_not_the_store(tmp_path: Path, venv_small: Path) -> None:
    """Secrets inside values (URL user info at any depth, token-only URLs, connection strings, keys named bearer)
    are masked in the MLflow params, the params copy, the manifest, the executed notebook and its HTML."""
    params_file = tmp_path / "p.yaml"
    params_file.write_text(
        "db_url: postgresql://etl:hunter2pw@db.example/sales\n"
        "sources: [https://t0kenonly@git.example/repo.git, plain]\n"
        "cfg:\n  conn: 'Server=db;User Id=etl;Password=c0nnpw;'\n  bearer: b3arer\n", encoding="utf-8")
    output = tmp_path / "out" / "s.ipynb"
    done = run_nb("--venv", str(venv_small), "--notebook", str(NOTEBOOKS / "no_params.ipynb"), "--output",
                  str(output), "--params-file", str(params_file), "-p", "mirror", "https://ana:pp4ss@m.example/x",
                  cwd=tmp_path, env=env_with(GO_SERVER_URL="https://svc:envs3cret@gocd.example/go",
                                             GO_PIPELINE_NAME="p", GO_PIPELINE_COUNTER="1"))
    assert done.returncode == 0, done.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file() and p != params_file]
    assert any(p.suffix == ".html" for p in written) and any(p.name == "mlflow.db" for p in written)
    for path in written:
        data = path.read_bytes()
        leaked = [s for s in SECRETS if s.encode() in data]
        assert not leaked, f"{path}: {leaked}"
    assert not [s for s in SECRETS if s in done.stdout + done.stderr]
    (run,) = [r for r in _runs(f"sqlite:///{tmp_path / 'mlflow.db'}", "p") if r.data.tags.get("mlops_kit.role") ==
              "stage"]
    assert run.data.params["db_url"] == "postgresql://***@db.example/sales"
    assert run.data.params["cfg.bearer"] == "***" and "Password=***" in run.data.params["cfg.conn"]


# --- a cp1252 console (issue 22) ----------------------------------------------------------------------------------

_NON_ASCII = "café ✓ 日本"
_CP1252_RUNNER = ("import runpy, sys\n"
                  "sys.stdout.reconfigure(encoding='cp1252'); sys.stderr.reconfigure(encoding='cp1252')\n"
                  "sys.argv = sys.argv[1:]\nrunpy.run_path(sys.argv[0], run_name='__main__')\n")


def _non_ascii_notebook(folder: Path) -> Path:
    """Prints non-ASCII itself and through a child Python, and shows the UTF-8 settings its kernel got."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(
        "import os, subprocess, sys\n"
        f"print({_NON_ASCII!r})\n"
        f"child = subprocess.run([sys.executable, '-c', \"print({_NON_ASCII!r})\"], capture_output=True, text=True)\n"
        "print('child:', child.stdout.strip(), child.returncode)\n"
        "print('kernel env:', os.environ.get('PYTHONUTF8'), os.environ.get('PYTHONIOENCODING'))\n")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path = folder / "non_ascii.ipynb"
    nbformat.write(nb, path)
    return path


def _cell_text(output: Path) -> str:
    cell = nbformat.read(output, as_version=4).cells[-1]
    return "".join(o.get("text", "") for o in cell.outputs)


def test_a_cp1252_console_runs_a_notebook_printing_non_ascii_and_keeps_it(tmp_path: Path, venv_small: Path) -> None:
    """A Windows agent's pipe is cp1252 (simulated: the runner's streams re-encoded, LANG=C, no UTF-8 variable):
    the runner prints its lines with ? for what cp1252 lacks instead of crashing, the kernel and its children get
    UTF-8, and the executed notebook and its HTML keep every character."""
    import html

    nb = _non_ascii_notebook(tmp_path)
    output = tmp_path / "out ✓" / "日本_out.ipynb"
    env = {k: v for k, v in env_with(LANG="C", LC_ALL="C").items() if k not in ("PYTHONUTF8", "PYTHONIOENCODING")}
    done = subprocess.run([str(TOOLKIT_PYTHON), "-c", _CP1252_RUNNER, str(SCRIPTS / "run_notebook.py"), "--venv",
                           str(venv_small), "--notebook", str(nb), "--output", str(output), "--log-output"],
                          capture_output=True, env=env, cwd=tmp_path, timeout=300, check=False)
    stdout, stderr = done.stdout.decode("cp1252"), done.stderr.decode("cp1252")
    assert done.returncode == 0, stderr
    assert "café ? ??" in stdout and f"executed notebook: {tmp_path / 'out ?' / '??_out.ipynb'}" in stdout
    text = _cell_text(output)
    assert f"{_NON_ASCII}\nchild: {_NON_ASCII} 0\nkernel env: 1 utf-8\n" == text
    assert _NON_ASCII in html.unescape(output.with_suffix(".html").read_text(encoding="utf-8"))
    from mlflow import MlflowClient  # the copy logged to the (default, local) store keeps them too

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()])
    logged = Path(client.download_artifacts(run.info.run_id, output.name, str(tmp_path / "logged")))
    assert _cell_text(logged) == text

    # PYTHONIOENCODING set by the user (as the brief of the issue simulates the console) is the user's choice: the
    # kernel gets it, the notebook and its HTML still keep every character (its output goes through Jupyter).
    again = subprocess.run([str(TOOLKIT_PYTHON), str(SCRIPTS / "run_notebook.py"), "--venv", str(venv_small),
                            "--notebook", str(nb), "--output", str(tmp_path / "again.ipynb"), "--log-output"],
                           capture_output=True, env={**env, "PYTHONIOENCODING": "cp1252"}, cwd=tmp_path, timeout=300,
                           check=False)
    assert again.returncode == 0, again.stderr.decode("cp1252")
    assert "café ? ??" in again.stdout.decode("cp1252")
    text = _cell_text(tmp_path / "again.ipynb")
    assert text.startswith(f"{_NON_ASCII}\nchild:  1\n") and text.endswith("kernel env: 1 cp1252\n")
