"""mlops_kit.run.upload: a run uploaded later from its manifest (the store was down, or the runner vanished), against
the real MLflow server: completed not duplicated, files found next to a moved manifest, a manifest written by an
earlier version still read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow import MlflowClient

from helpers import REPO_ROOT, run_record
from mlops_kit.core.errors import BadInput, TrackingError
from mlops_kit.run import runrecord, tracking, upload
from mlops_kit.run.runrecord import RunFile


def test_log_existing_refuses_a_logged_run(tmp_path: Path) -> None:
    path = tmp_path / "m.mlops_run.json"
    runrecord.save_manifest(run_record("http://x:1", status="FINISHED", logged=True, run_id="abc"), path)
    with pytest.raises(BadInput, match="already logged"):
        upload.upload_manifest(path)


@pytest.mark.slow
def test_log_existing_finishes_the_run_it_started(tmp_path: Path, mlflow_server: str) -> None:
    """The store came back: the run created before it went away is completed, not duplicated."""
    notebook = tmp_path / "late.ipynb"
    notebook.write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    files = [RunFile(str(notebook)), RunFile(str(tmp_path / "late.html"))]
    record = run_record(mlflow_server, experiment="unit late", files=files, metrics={"m": 2.0},
                     executed_notebook=str(notebook), html=str(tmp_path / "late.html"))
    tracking.apply_ids(record, tracking.start_run(record))
    record.params_logged, record.status = True, "FINISHED"
    manifest = tmp_path / "late.mlops_run.json"
    runrecord.save_manifest(record, manifest)
    done = upload.upload_manifest(manifest)
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
    record = run_record(mlflow_server, experiment="unit html", files=[RunFile(str(notebook)), RunFile(str(html))],
                     executed_notebook=str(notebook), html=str(html))
    tracking.apply_ids(record, tracking.start_run(record))
    record.params_logged, record.status = True, "FINISHED"
    manifest = tmp_path / "broken.mlops_run.json"
    runrecord.save_manifest(record, manifest)
    assert upload.upload_manifest(manifest).logged
    assert "HTML rendering failed" in capsys.readouterr().err and not html.exists()
    assert MlflowClient(mlflow_server).get_run(record.run_id).info.status == "FINISHED"


@pytest.mark.slow
def test_log_existing_finds_files_next_to_a_moved_manifest_and_warns_for_missing(
        tmp_path: Path, mlflow_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Downloaded GoCD artifacts: the manifest's folders are another machine's; its neighbours are used."""
    agent = "C:\\go agent\\pipelines\\p\\out"  # written on a Windows agent
    files = [RunFile(f"{agent}\\late.ipynb"), RunFile(f"{agent}\\late.html"),
             RunFile(f"{agent}\\late.params.yaml", "params"), RunFile(f"{agent}\\gone.txt", "environment")]
    record = run_record(mlflow_server, experiment="unit moved", files=files,
                        folders=[RunFile(f"{agent}\\ingest_outputs", "outputs")],
                        executed_notebook=files[0].local, html=files[1].local, status="FINISHED")
    here = tmp_path / "downloaded"
    (here / "ingest_outputs").mkdir(parents=True)
    (here / "ingest_outputs" / "r.txt").write_text("1")
    (here / "late.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    (here / "late.params.yaml").write_text("a: 1\n")
    manifest = here / "late.mlops_run.json"
    runrecord.save_manifest(record, manifest)
    done = upload.upload_manifest(manifest)
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
            upload.upload_manifest(path)
    finally:
        server.shutdown()
        server.server_close()
    assert requests and not [r for r in requests if "runs/create" in r], requests


@pytest.mark.slow
def test_a_manifest_written_by_an_earlier_version_is_uploaded(tmp_path: Path, mlflow_server: str) -> None:
    """A Windows agent's manifest from before this version, downloaded with the job's files: --log-existing to the
    team's server logs it, its lineage (hashed inputs, the producer they named) included."""
    here = tmp_path / "downloaded"
    (here / "ingest_outputs").mkdir(parents=True)
    (here / "ingest_outputs" / "clean.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    (here / "ingest_out.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}')
    (here / "ingest_out.params.yaml").write_text("rows: 1\n", encoding="utf-8")
    manifest = here / "ingest_out.mlops_run.json"
    manifest.write_bytes((REPO_ROOT / "tests" / "data" / "manifest_schema1.json").read_bytes())
    result = upload.log_existing(upload.UploadRequest(manifest, tracking_uri=mlflow_server, experiment="unit main"))
    assert result.logged and result.status == "FINISHED" and runrecord.load_manifest(manifest).logged
    client = MlflowClient(mlflow_server)
    run = client.get_run(result.run_id)
    assert run.data.params["api_token"] == "***" and run.data.metrics["rows"] == 1.0
    names = {a.path for a in client.list_artifacts(result.run_id)} | {
        a.path for folder in ("params", "outputs", "lineage") for a in client.list_artifacts(result.run_id, folder)}
    assert {"ingest_out.ipynb", "ingest_out.html", "params/ingest_out.params.yaml", "outputs/clean.csv",
            "lineage/lineage.json"} <= names
    logged = json.loads(Path(client.download_artifacts(result.run_id, "lineage/lineage.json", str(tmp_path)))
                        .read_text(encoding="utf-8"))
    assert logged["inputs"][0]["files"][1]["producer"]["run_id"] == "0123456789abcdef0123456789abcdef"
    assert logged["outputs"]["path"] == str(here / "ingest_outputs") and run.data.tags[
        "mlops_kit.outputs.sha256"] == logged["outputs"]["sha256"]
    assert [d.dataset.name for d in run.inputs.dataset_inputs] == ["input_dir: data"]
