"""mlops_kit.run.tracking: a run started and finished against the real MLflow server (no kernel), odd values, the
pipeline's one parent run whatever the timing, a dataset input that collides."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

import pytest
from mlflow import MlflowClient

from helpers import free_port, run_record
from mlops_kit.core.errors import TrackingError
from mlops_kit.run import runrecord, tracking
from mlops_kit.run.runrecord import RunFile

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
                     files=[RunFile(str(notebook)), RunFile(str(tmp_path / "missing.txt"), "x")],
                     folders=[RunFile(str(out), "outputs")],
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
    assert ids1.parent_run_id == ids2.parent_run_id is not None
    client = MlflowClient(mlflow_server)
    parent = client.get_run(ids1.parent_run_id)
    assert parent.data.tags["mlops_kit.role"] == "pipeline" and parent.info.run_name == "unit-pipe #1"
    assert parent.data.tags["GO_PIPELINE_NAME"] == "unit-pipe"
    assert client.get_run(ids2.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id


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


def _lifecycle(record: runrecord.RunRecord, status: str, start: threading.Barrier | None = None) -> None:
    """One stage run from start to end, as run_notebook drives it (``start``: begin together with the others)."""
    if start is not None:
        start.wait(timeout=60)
    tracking.apply_ids(record, tracking.start_run(record))
    record.status, record.end_time = status, int(time.time() * 1000)
    tracking.finish_run(record)


def _family(uri: str, key: str, experiment: str = "unit tracking") -> tuple[list, list, int]:
    """(active parents, stage runs, candidates ever created) of pipeline instance ``key``."""
    from mlflow.entities import ViewType

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    query = f"tags.`mlops_kit.pipeline_key` = '{key}'"
    runs = client.search_runs([exp.experiment_id], query)
    every = client.search_runs([exp.experiment_id], query, run_view_type=ViewType.ALL)
    role = "mlops_kit.role"
    return ([r for r in runs if r.data.tags.get(role) == "pipeline"],
            [r for r in runs if r.data.tags.get(role) != "pipeline"],
            sum(r.data.tags.get(role) == "pipeline" for r in every))


def _assert_one_parent(uri: str, key: str, records: list[runrecord.RunRecord], status: str) -> int:
    parents, stages, candidates = _family(uri, key)
    assert len(parents) == 1, [p.info.run_id for p in parents]
    parent = parents[0].info.run_id
    assert sorted(r.info.run_id for r in stages) == sorted(r.run_id for r in records), "every stage run, none lost"
    assert all(r.data.tags["mlflow.parentRunId"] == parent for r in stages)
    assert parent in {r.parent_run_id for r in records}, "the last stage to finish names the final parent"
    assert parents[0].info.status == status
    return candidates


def _concurrent(uri: str, key: str, statuses: list[str], uris: list[str] | None = None) -> list[runrecord.RunRecord]:
    records = [run_record((uris or [uri])[i % len(uris or [uri])], pipeline_key=key, run_name=f"job{i}",
                          tags={"mlops_kit.role": "stage", "GO_PIPELINE_NAME": "race"}) for i in range(len(statuses))]
    start = threading.Barrier(len(records))
    with ThreadPoolExecutor(len(records)) as pool:
        list(pool.map(lambda pair: _lifecycle(*pair, start), zip(records, statuses, strict=True)))
    return records


@pytest.mark.slow
def test_concurrent_stage_runs_end_with_exactly_one_parent(mlflow_server: str) -> None:
    """Eight stage runs of one pipeline instance started together, one of them failing: one parent run for all."""
    key = f"race-pipe/{time.time_ns()}"
    records = _concurrent(mlflow_server, key, ["FINISHED"] * 7 + ["FAILED"])
    _assert_one_parent(mlflow_server, key, records, "FAILED")


@contextlib.contextmanager
def slow_proxy(url: str, delay: float) -> Iterator[str]:
    """A TCP proxy on 127.0.0.1 in front of ``url`` that holds every chunk ``delay`` seconds, each way: a slow server
    (or network) as its clients see it. Loopback only; stopped with every connection on exit."""
    target = urlsplit(url)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop, sockets = threading.Event(), []

    def pipe(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                time.sleep(delay)
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def accept() -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection((target.hostname, target.port))
            sockets.extend((client, upstream))
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=pipe, args=(a, b), daemon=True).start()

    acceptor = threading.Thread(target=accept, daemon=True)
    acceptor.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        acceptor.join(timeout=5)
        listener.close()
        for sock in sockets:
            sock.close()


@pytest.mark.slow
def test_convergence_with_a_delayed_server(mlflow_server: str) -> None:
    """Half of the stage runs reach the same server through a proxy that delays every exchange."""
    key = f"slow-pipe/{time.time_ns()}"
    with slow_proxy(mlflow_server, 0.05) as slow:
        records = _concurrent(mlflow_server, key, ["FINISHED"] * 6, uris=[mlflow_server, slow])
    _assert_one_parent(mlflow_server, key, records, "FINISHED")


@pytest.mark.slow
@pytest.mark.parametrize("attempt", [1, 2])
def test_a_candidate_created_after_other_stages_finished_is_repaired(
        mlflow_server: str, monkeypatch: pytest.MonkeyPatch, attempt: int) -> None:
    """The worst timing, forced: stage 'late' reads the family (empty) and stalls; stage 'early' runs start to end
    (creating its parent); stage 'next' starts after 'early' finished and joins that parent; only then does 'late'
    go on and create a second candidate. Whichever has the smaller id wins: one parent, all three nested."""
    stalled, go_on = threading.Event(), threading.Event()

    def pause(point: str) -> None:
        if point == "searched" and threading.current_thread().name == "late":
            stalled.set()
            assert go_on.wait(timeout=60)

    monkeypatch.setattr(tracking, "_pause", pause)
    key = f"late-pipe/{attempt}/{time.time_ns()}"
    early, after, late = (run_record(mlflow_server, pipeline_key=key, run_name=n) for n in ("early", "next", "late"))
    failure: list[BaseException] = []
    thread = threading.Thread(target=lambda: _catch(failure, _lifecycle, late, "FAILED"), name="late")
    thread.start()
    assert stalled.wait(timeout=60)
    _lifecycle(early, "FINISHED")
    _lifecycle(after, "FINISHED")
    assert early.parent_run_id == after.parent_run_id, "a stage starting after another finished joins its parent"
    go_on.set()
    thread.join(timeout=120)
    assert not failure, failure
    assert _assert_one_parent(mlflow_server, key, [early, after, late], "FAILED") == 2, "two candidates were made"


def _catch(failure: list[BaseException], function: Callable[..., None], *args: object) -> None:
    try:
        function(*args)
    except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
        failure.append(exc)


@pytest.mark.slow
def test_a_dataset_input_colliding_with_another_runs_is_logged_on_the_next_attempt(mlflow_server: str) -> None:
    """MLflow's store looks a dataset up, then inserts it: two runs logging the same input content at once can
    collide on its unique key (seen with three rehearsals at once). The client below plays that moment for real:
    another run logs the same dataset first, and this run's first attempt fails as the loser's does."""
    from mlflow.entities import Dataset, DatasetInput
    from mlflow.exceptions import MlflowException

    client = MlflowClient(mlflow_server)
    experiment = client.create_experiment(f"collide-{time.time_ns()}")
    run = client.create_run(experiment).info.run_id
    dataset = DatasetInput(Dataset("input_dir: data", "0" * 32, "local", "{}"))

    class Collides:
        calls = 0

        def log_inputs(self, run_id: str, datasets: list[DatasetInput]) -> None:
            self.calls += 1
            if self.calls == 1:
                client.log_inputs(client.create_run(experiment).info.run_id, datasets=datasets)
                raise MlflowException("UNIQUE constraint failed: datasets.experiment_id, datasets.name, "
                                      "datasets.digest")
            client.log_inputs(run_id, datasets=datasets)

    collides = Collides()
    tracking._log_inputs(collides, run, [dataset])
    assert collides.calls == 2
    assert [d.dataset.name for d in client.get_run(run).inputs.dataset_inputs] == ["input_dir: data"]
