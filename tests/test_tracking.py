"""Tracking: URI/experiment precedence, MLflow-safe params, GoCD tags, metrics.json, git info, the manifest, and
start/finish against the real MLflow server (no kernel)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import free_port, run_record
from mlops_kit import redact, runrecord, tracking
from mlops_kit.errors import BadInput, TrackingError

# --- where ---------------------------------------------------------------------------------------------------


# --- what -----------------------------------------------------------------------------------------------------


# --- manifest ---------------------------------------------------------------------------------------------------

def test_passwords_in_urls_are_hidden_and_never_stored(tmp_path: Path) -> None:
    assert redact.redact("at https://ana:p@ss:w0rd@host:5000/x and http://h") == \
        "at https://***@host:5000/x and http://h"
    assert redact.redact("sqlite:///C:/a b/mlflow.db") == "sqlite:///C:/a b/mlflow.db"
    assert redact.strip_credentials("https://ana:pw@host:5000/x?y=1") == "https://host:5000/x?y=1"
    assert redact.strip_credentials("http://host:5000") == "http://host:5000"
    path = tmp_path / "m.mlops_run.json"
    record = run_record("http://ana:pw@host:5000")
    runrecord.save_manifest(record, path)
    assert "pw" not in path.read_text() and runrecord.load_manifest(path).tracking_uri == "http://host:5000"
    assert record.tracking_uri == "http://ana:pw@host:5000"  # the run itself still uses them
    with pytest.raises(TrackingError) as err:
        tracking.preflight(f"http://ana:pw@127.0.0.1:{free_port()}")
    assert "://***@127.0.0.1" in str(err.value) and ":pw@" not in str(err.value) and "ana" not in str(err.value)


def test_log_existing_refuses_a_logged_run(tmp_path: Path) -> None:
    path = tmp_path / "m.mlops_run.json"
    runrecord.save_manifest(run_record("http://x:1", status="FINISHED", logged=True, run_id="abc"), path)
    with pytest.raises(BadInput, match="already logged"):
        tracking.log_existing(path)


# --- against the real server ------------------------------------------------------------------------------------

def test_unreachable_server_is_one_tracking_error() -> None:
    uri = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(TrackingError) as err:
        tracking.start_run(run_record(uri))
    assert uri in str(err.value) and "unreachable" in str(err.value)


@pytest.mark.slow
def test_start_and_finish_run_with_odd_values(tmp_path: Path, mlflow_server: str) -> None:
    out = tmp_path / "out dir"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "table.csv").write_text("a\n1\n")
    notebook = tmp_path / "x.ipynb"
    notebook.write_text("{}")
    params = runrecord.loggable_params({"stage": "train"}, {f"p{i}": i for i in range(150)} |
                                      {"weird": {"k ey:/x": "v" * 9000}})
    record = run_record(mlflow_server, params=params, tags=runrecord.loggable_tags({"long": "t" * 9000, "none": None}),
                     files=[[str(notebook), ""], [str(tmp_path / "missing.txt"), "x"]], folders=[[str(out), "outputs"]],
                     metrics={"acc": 0.5, "odd_": 1.0})
    tracking.apply_ids(record, tracking.start_run(record))
    record.status, record.failure = "FAILED", {"failure_kind": "cell-error", "error_value": "e" * 9000}
    record.end_time = int(time.time() * 1000)
    tracking.finish_run(record)
    client = MlflowClient(mlflow_server)
    run = client.get_run(record.run_id)
    assert run.info.status == "FAILED" and len(run.data.params) == 152
    assert len(run.data.params["weird.k ey__x"]) == runrecord.MAX_PARAM_VALUE
    assert len(run.data.tags["long"]) == runrecord.MAX_TAG_VALUE and "none" not in run.data.tags
    assert run.data.tags["mlops_kit.failure_kind"] == "cell-error"
    assert run.data.metrics == {"acc": 0.5, "odd_": 1.0}
    names = {a.path for a in client.list_artifacts(record.run_id)} | {
        a.path for a in client.list_artifacts(record.run_id, "outputs/sub")}
    assert {"x.ipynb", "outputs", "outputs/sub/table.csv"} <= names


@pytest.mark.slow
def test_parent_run_found_and_reused(mlflow_server: str) -> None:
    key = f"unit-pipe/{time.time_ns()}"
    first = run_record(mlflow_server, pipeline_key=key, pipeline_run_name="unit-pipe #1",
                    tags={"mlops_kit.role": "stage", "GO_PIPELINE_NAME": "unit-pipe"})
    second = run_record(mlflow_server, pipeline_key=key, run_name="score")
    ids1, ids2 = tracking.start_run(first), tracking.start_run(second)
    assert ids1["parent_run_id"] == ids2["parent_run_id"] is not None
    client = MlflowClient(mlflow_server)
    parent = client.get_run(ids1["parent_run_id"])
    assert parent.data.tags["mlops_kit.role"] == "pipeline" and parent.info.run_name == "unit-pipe #1"
    assert parent.data.tags["GO_PIPELINE_NAME"] == "unit-pipe"
    assert client.get_run(ids2["run_id"]).data.tags["mlflow.parentRunId"] == parent.info.run_id


@pytest.mark.slow
def test_a_failed_stage_keeps_the_parent_failed(mlflow_server: str) -> None:
    key = f"fail-pipe/{time.time_ns()}"
    failed, passed = (run_record(mlflow_server, pipeline_key=key, run_name=name) for name in ("train", "report"))
    for record, status in ((failed, "FAILED"), (passed, "FINISHED")):
        tracking.apply_ids(record, tracking.start_run(record))
        record.status, record.end_time = status, int(time.time() * 1000)
        tracking.finish_run(record)
    client = MlflowClient(mlflow_server)
    assert failed.parent_run_id == passed.parent_run_id
    assert client.get_run(passed.run_id).info.status == "FINISHED"
    assert client.get_run(failed.parent_run_id).info.status == "FAILED"


@pytest.mark.slow
def test_parallel_stages_converge_on_one_parent(mlflow_server: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    key = f"race-pipe/{time.time_ns()}"
    records = [run_record(mlflow_server, pipeline_key=key, run_name=f"job{i}", tags={"mlops_kit.role": "stage"})
               for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        ids = list(pool.map(tracking.start_run, records))
    assert len({i["parent_run_id"] for i in ids}) == 1
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("unit tracking")
    active = client.search_runs([exp.experiment_id], f"tags.`mlops_kit.pipeline_key` = '{key}'")
    parents = [r.info.run_id for r in active if r.data.tags.get("mlops_kit.role") == "pipeline"]
    assert parents == [ids[0]["parent_run_id"]]


@pytest.mark.slow
def test_log_existing_finishes_the_run_it_started(tmp_path: Path, mlflow_server: str) -> None:
    """The store came back: the run created before it went away is completed, not duplicated."""
    notebook = tmp_path / "late.ipynb"
    notebook.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    files = [[str(notebook), ""], [str(tmp_path / "late.html"), ""]]
    record = run_record(mlflow_server, experiment="unit late", files=files, metrics={"m": 2.0},
                     executed_notebook=str(notebook), html=str(tmp_path / "late.html"))
    tracking.apply_ids(record, tracking.start_run(record))
    record.params_logged, record.status = True, "FINISHED"
    manifest = tmp_path / "late.mlops_run.json"
    runrecord.save_manifest(record, manifest)
    done = tracking.log_existing(manifest)
    assert done.run_id == record.run_id and runrecord.load_manifest(manifest).logged
    client = MlflowClient(mlflow_server)
    run = client.get_run(record.run_id)
    assert run.info.status == "FINISHED" and run.data.metrics == {"m": 2.0}
    assert {a.path for a in client.list_artifacts(record.run_id)} == {"late.ipynb", "late.html"}  # HTML rendered
    exp = client.get_experiment_by_name("unit late")
    assert len(client.search_runs([exp.experiment_id])) == 1


@pytest.mark.slow
def test_html_that_cannot_be_rendered_only_warns(tmp_path: Path, mlflow_server: str,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """finish_run never renders (the caller did, under its guard); log_existing renders a missing one or warns."""
    notebook = tmp_path / "broken.ipynb"
    notebook.write_text("not a notebook")
    html = tmp_path / "broken.html"
    record = run_record(mlflow_server, experiment="unit html", files=[[str(notebook), ""], [str(html), ""]],
                     executed_notebook=str(notebook), html=str(html))
    tracking.apply_ids(record, tracking.start_run(record))
    record.params_logged, record.status = True, "FINISHED"
    manifest = tmp_path / "broken.mlops_run.json"
    runrecord.save_manifest(record, manifest)
    assert tracking.log_existing(manifest).logged
    assert "HTML rendering failed" in capsys.readouterr().err and not html.exists()
    assert MlflowClient(mlflow_server).get_run(record.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_log_existing_finds_files_next_to_a_moved_manifest_and_warns_for_missing(
        tmp_path: Path, mlflow_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Downloaded GoCD artifacts: the manifest's folders are another machine's; its neighbours are used."""
    agent = "C:\\go agent\\pipelines\\p\\out"  # written on a Windows agent
    files = [[f"{agent}\\late.ipynb", ""], [f"{agent}\\late.html", ""], [f"{agent}\\late.params.yaml", "params"],
             [f"{agent}\\gone.txt", "environment"]]
    record = run_record(mlflow_server, experiment="unit moved", files=files, folders=[[f"{agent}\\ingest_outputs",
                                                                                  "outputs"]],
                     executed_notebook=files[0][0], html=files[1][0], status="FINISHED")
    here = tmp_path / "downloaded"
    (here / "ingest_outputs").mkdir(parents=True)
    (here / "ingest_outputs" / "r.txt").write_text("1")
    (here / "late.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    (here / "late.params.yaml").write_text("a: 1\n")
    manifest = here / "late.mlops_run.json"
    runrecord.save_manifest(record, manifest)
    done = tracking.log_existing(manifest)
    err = capsys.readouterr().err
    assert "gone.txt: listed in the manifest but not found" in err and "late.html" not in err
    client = MlflowClient(mlflow_server)
    names = {a.path for a in client.list_artifacts(done.run_id)} | {
        a.path for folder in ("params", "outputs") for a in client.list_artifacts(done.run_id, folder)}
    assert {"late.ipynb", "late.html", "params/late.params.yaml", "outputs/r.txt"} <= names
    assert not any(n.startswith("environment") for n in names)


def test_log_existing_never_creates_a_duplicate_when_the_lookup_fails(tmp_path: Path) -> None:
    """Only a definite "run not found" may make --log-existing create the run anew; a server error must not."""
    import http.server
    import threading

    requests: list[str] = []

    class Broken(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            requests.append(f"GET {self.path}")
            self.send_response(500)
            self.end_headers()

        do_POST = do_GET  # noqa: N815

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Broken)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        path = tmp_path / "m.mlops_run.json"
        uri = f"http://127.0.0.1:{server.server_address[1]}"
        runrecord.save_manifest(run_record(uri, status="FINISHED", run_id="abc123", params_logged=True), path)
        with pytest.raises(TrackingError, match="looking up the run failed"):
            tracking.log_existing(path)
    finally:
        server.shutdown()
        server.server_close()
    assert requests and not [r for r in requests if "runs/create" in r], requests
