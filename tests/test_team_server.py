"""End to end on a team's tracking server: ``mlflow server`` on a real PostgreSQL cluster with its artifacts in S3
(moto's server), started by the tests (tests/helpers_team_server.py), as a team runs it for many agents at once.

Proven here: eight agents rehearsing the example pipeline at once; the database connections that load
takes, and that none is left; a 300 MB output folder through the artifact proxy (multipart); a notebook's own
mlflow calls in both artifact modes; replays from an agent that has nothing local; a server outage mid-stage and
the upload afterwards; no credential of the database or of S3 anywhere a run, a log or a console line is written.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from helpers import (
    NEW_PROCESS_GROUP,
    REPO_ROOT,
    SCRIPTS,
    TOOLKIT_PYTHON,
    free_port,
    run_script,
    stop_process_group,
    wait_healthy,
)
from helpers_notebook import NOTEBOOKS, env_with, one_error_line, run_nb
from helpers_team_server import (
    BUCKET,
    POOL_ENV,
    S3,
    Postgres,
    Rehearsal,
    TeamServer,
    agent_folders,
    peak_memory,
    record_figure,
    rehearse_at_once,
    start_team_server,
    wait_until,
)
from mlops_kit.core.paths import file_sha256
from mlops_kit.core.redact import redact

pytestmark = pytest.mark.slow

STAGES = ("ingest", "features", "train")
AGENTS = 8
EXPERIMENT = "ml-example-team"
# What every stage run logs besides its outputs (the example's stages are named like their notebooks).
STAGE_FILES = ("{s}_out.ipynb", "{s}_out.html", "environment/spec.yaml", "environment/pip_freeze.txt",
               "environment/spec.lock.txt", "environment/env.json", "params/{s}_out.params.yaml",
               "source/{s}_out.source.ipynb", "lineage/lineage.json")
CONSOLE_PROBLEMS = ("Traceback", "error:", "warning:", "IntegrityError", "UniqueViolation", "duplicate key",
                    "QueuePool limit", "too many clients")


def _artifacts(client: MlflowClient, run_id: str, path: str | None = None) -> dict[str, int | None]:
    """{artifact path: size} of a run, recursively."""
    found: dict[str, int | None] = {}
    for item in client.list_artifacts(run_id, path):
        found.update(_artifacts(client, run_id, item.path) if item.is_dir else {item.path: item.file_size})
    return found


def _runs(client: MlflowClient, experiment: str) -> list[Any]:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    return list(client.search_runs([found.experiment_id], max_results=1000))


def _keep_console(folder: Path, done: subprocess.CompletedProcess[str]) -> None:
    """A command's console kept with the test's files (the secrets test reads every file written)."""
    with open(folder / "console.log", "a", encoding="utf-8") as log:
        log.write(f"$ {redact(str(done.args))}\n{done.stdout}{done.stderr}\n")  # the command: the test's, masked


def _s3_prefix(server: TeamServer, client: MlflowClient, run: Any) -> str:
    """Where a run's artifacts sit in the bucket: ``mlflow-artifacts:/…`` (proxied) or ``s3://bucket/…``."""
    uri = run.info.artifact_uri
    if uri.startswith("mlflow-artifacts:"):
        return f"{server.prefix}/{uri.split(':', 1)[1].lstrip('/')}/"
    assert uri.startswith(f"s3://{BUCKET}/"), uri
    return uri[len(f"s3://{BUCKET}/"):] + "/"


# --- eight agents at once -------------------------------------------------------------------------------------


@dataclass
class EightAgents:
    rehearsals: list[Rehearsal]
    seconds: float
    connections: list[int]  # database connections seen at each sample while they ran
    left: list[dict[str, Any]]  # connections once they all ended


@pytest.fixture(scope="module")
def eight_agents(team_server: TeamServer, team_pg: Postgres, example_venv_root: Path,
                 tmp_path_factory: pytest.TempPathFactory) -> EightAgents:
    """The example pipeline rehearsed by eight agents at once, each in its own working folder (its own clone, its own
    state folder: pipeline counter 1 everywhere), all against the team server; the server's database sampled."""
    folders = agent_folders(tmp_path_factory.mktemp("agents"), AGENTS)
    samples: list[int] = []
    begin = time.monotonic()
    done = rehearse_at_once(folders, "--tracking-uri", team_server.url, "--venv-root", str(example_venv_root),
                            "--env", f"MLFLOW_EXPERIMENT_NAME={EXPERIMENT}", "--keep", "1",
                            env={**os.environ, "MLOPS_REUSE": "never"},  # eight that execute (a load test)
                            while_running=lambda: samples.append(len(team_pg.connections("mlflow"))))
    seconds = time.monotonic() - begin
    left = team_pg.connections("mlflow")
    record_figure(f"{AGENTS} rehearsals of the example at once on PostgreSQL + S3",
                  f"{seconds:.0f} s; database connections: at most {max(samples)} "
                  f"({len(samples)} samples), {len(left)} after")
    return EightAgents(done, seconds, samples, left)


def test_eight_agents_rehearse_the_example_at_once(eight_agents: EightAgents, team_server: TeamServer,
                                                   team_s3: S3) -> None:
    """8 working folders, 8 rehearsals at once: exit 0 x8, 8 parents x 3 stage runs, every artifact in MLflow and in
    S3 (size for size with what the agent published), nothing left RUNNING, each stage's input linked to the run
    of its own pipeline instance that produced it, no error or warning in any console."""
    for rehearsal in eight_agents.rehearsals:
        assert rehearsal.code == 0, rehearsal.output[-6000:]
        assert not [p for p in CONSOLE_PROBLEMS if p in rehearsal.output], rehearsal.output[-6000:]
    client = MlflowClient(team_server.url)
    runs = _runs(client, EXPERIMENT)
    assert not [r.info.run_id for r in runs if r.info.status != "FINISHED"]
    parents = [r for r in runs if r.data.tags.get("mlops_kit.role") == "pipeline"]
    assert len(parents) == AGENTS and len({p.data.tags["mlops_kit.pipeline_key"] for p in parents}) == AGENTS
    assert len(runs) == AGENTS * (1 + len(STAGES))
    keys = {}
    for parent in parents:
        stages = {r.info.run_name: r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id}
        assert sorted(stages) == sorted(STAGES), parent.info.run_name
        keys[parent.data.tags["mlops_kit.pipeline_key"]] = stages
        for consumer, producer in (("features", "ingest"), ("train", "features")):
            (dataset,) = stages[consumer].inputs.dataset_inputs
            tags = {t.key: t.value for t in dataset.tags}
            assert tags["mlops_kit.producer_run_id"] == stages[producer].info.run_id, (parent.info.run_name, consumer)
    for rehearsal in eight_agents.rehearsals:  # each agent's published outputs, file for file, size for size
        published = _published(rehearsal)
        assert len({m["pipeline_key"] for m in published.values()}) == 1
        for stage, manifest in published.items():
            run = keys[manifest["pipeline_key"]][stage]
            assert run.info.run_id == manifest["run_id"]
            logged = _artifacts(client, run.info.run_id)
            expected = {name.format(s=stage) for name in STAGE_FILES}
            assert expected <= set(logged), (stage, sorted(expected - set(logged)))
            outputs = _job_folder(rehearsal, stage) / f"{stage}_outputs"
            for path in outputs.rglob("*"):
                if path.is_file():
                    assert logged.get(f"outputs/{path.relative_to(outputs).as_posix()}") == path.stat().st_size
            in_s3 = team_s3.objects(prefix=_s3_prefix(team_server, client, run))
            assert len(in_s3) == len(logged) and sorted(in_s3.values()) == sorted(logged.values()), stage
    # eight trains registered at once on PostgreSQL: eight versions, each its run's, the alias on one of them
    versions = client.search_model_versions("name = 'ml-example-classifier'")
    trains = [stages["train"].info.run_id for stages in keys.values()]
    assert sorted(v.run_id for v in versions) == sorted(trains)
    assert client.get_model_version_by_alias("ml-example-classifier", "champion").run_id in trains


def _job_folder(rehearsal: Rehearsal, stage: str) -> Path:
    """What the agent published for a stage's job (GoCD's artifacts of run 1)."""
    return rehearsal.folder / ".pipeline" / "artifacts" / "ml-example" / "1" / stage / "1" / stage


def _published(rehearsal: Rehearsal) -> dict[str, dict[str, Any]]:
    """{stage: its run manifest} as the agent published them (run id, pipeline key): what GoCD's operator has."""
    return {stage: json.loads((_job_folder(rehearsal, stage) / "notebooks" / f"{stage}_out.mlops_run.json")
                              .read_text(encoding="utf-8")) for stage in STAGES}


def test_database_connections_stay_bounded_under_load_and_none_remain(eight_agents: EightAgents) -> None:
    """The server holds a connection only while a request uses it (NullPool): under the load of eight agents it
    never holds more than the agents have requests in flight, and none once they ended (MLflow's default pool keeps
    five per worker process idle for ever, and refuses requests past fifteen per worker)."""
    assert POOL_ENV == {"MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool"}
    assert max(eight_agents.connections) >= 1, "the samples never saw the server at work"
    assert max(eight_agents.connections) <= AGENTS, eight_agents.connections  # one runner per agent at a time
    assert eight_agents.left == []


def test_a_runner_on_the_database_itself_holds_no_connection_while_its_notebook_runs(
        tmp_path: Path, venv_small: Path, team_pg: Postgres) -> None:
    """A runner given the database's URI (no server) connects only for its calls: nothing idle on the team's
    database while the notebook runs, nothing after; the password in the URI is shown nowhere."""
    database = "mlflow_direct_db"
    team_pg.create_database(database)
    uri = team_pg.uri(database, with_password=True)
    output = tmp_path / "out" / "waits_out.ipynb"
    started, release = tmp_path / "started", tmp_path / "release"
    with open(tmp_path / "console.log", "wb") as console:
        runner = subprocess.Popen([str(TOOLKIT_PYTHON), str(SCRIPTS / "run_notebook.py"), "--venv", str(venv_small),
                                   "--notebook", str(NOTEBOOKS / "waits.ipynb"), "--output", str(output),
                                   "-p", "started_file", str(started), "-p", "release_file", str(release),
                                   "--tracking-uri", uri, "--experiment", "team direct db"],
                                  stdout=console, stderr=subprocess.STDOUT, cwd=tmp_path, **NEW_PROCESS_GROUP)
        try:
            wait_until(started.exists, 180, "the notebook started")
            while_running = team_pg.connections(database)
            release.touch()
            assert runner.wait(timeout=180) == 0, (tmp_path / "console.log").read_text()
        finally:
            stop_process_group(runner)
    assert while_running == [] and team_pg.connections(database) == []
    text = (tmp_path / "console.log").read_text()
    assert team_pg.password not in text and "postgresql+psycopg2://***@127.0.0.1" in text
    manifest = json.loads(output.with_name("waits_out.mlops_run.json").read_text(encoding="utf-8"))
    assert manifest["tracking_uri"] == f"postgresql+psycopg2://127.0.0.1:{team_pg.port}/{database}"
    assert manifest["logged"] is True


# --- a large output folder through the proxy ------------------------------------------------------------------


def test_a_300_mb_output_folder_goes_through_the_proxy_complete(tmp_path: Path, venv_small: Path,
                                                                 team_server: TeamServer, team_s3: S3) -> None:
    """One 200 MB file (uploaded in 10 MiB parts straight to S3 through presigned URLs, the server only signs) and
    ten of 10 MB (through the proxy): every byte arrives (sha256 after download), the runner's memory stays far
    below the big file's size; the time and peak memory are in the session's summary."""
    output = tmp_path / "out" / "big_out.ipynb"
    cmd = [str(TOOLKIT_PYTHON), str(SCRIPTS / "run_notebook.py"), "--venv", str(venv_small), "--notebook",
           str(NOTEBOOKS / "big_outputs.ipynb"), "--output", str(output), "--tracking-uri", team_server.url,
           "--stage", "big", "--experiment", "team big outputs"]
    begin = time.monotonic()
    done, peaks = peak_memory(cmd, cwd=tmp_path, env=dict(os.environ))
    seconds = time.monotonic() - begin
    _keep_console(tmp_path, done)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(team_server.url)
    (run,) = _runs(client, "team big outputs")
    folder = output.parent / "big_outputs"
    local = {p.relative_to(folder).as_posix(): p for p in folder.rglob("*.bin")}
    assert len(local) == 11 and sum(p.stat().st_size for p in local.values()) == 300 * 1024**2
    downloaded = Path(client.download_artifacts(run.info.run_id, "outputs", str(tmp_path / "download")))
    for name, path in local.items():
        assert file_sha256(downloaded / name) == file_sha256(path), name
    prefix = _s3_prefix(team_server, client, run)
    etag = team_s3.client().head_object(Bucket=BUCKET, Key=f"{prefix}outputs/weights.bin")["ETag"]
    assert etag.strip('"').endswith("-20"), f"not a 20-part multipart upload: {etag}"
    record_figure("300 MB output folder through the proxy (run_notebook.py, whole stage)",
                  f"{seconds:.1f} s; peak memory: runner {peaks['runner'] / 2**20:.0f} MB + MLflow helper "
                  f"{peaks['mlflow helper'] / 2**20:.0f} MB (kernel {peaks['kernel'] / 2**20:.0f} MB)")
    assert max(peaks["runner"], peaks["mlflow helper"]) < 250 * 1024**2, peaks  # neither held the 200 MB file


# --- a notebook's own mlflow calls ----------------------------------------------------------------------------


@pytest.mark.parametrize(("mode", "venv_fixture"), [("proxied", "venv_mlflow"), ("direct", "venv_mlflow_s3")])
def test_the_notebooks_own_mlflow_calls_land_in_the_stage_run(mode: str, venv_fixture: str, tmp_path: Path,
                                                              team_s3: S3, request: pytest.FixtureRequest,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A stage venv with its own mlflow-skinny logs metrics, params, tags and artifacts into the stage run: through
    the server (proxied; the notebook holds no S3 credential), or straight to S3 (direct; the agent holds the keys,
    the stage venv boto3)."""
    server: TeamServer = request.getfixturevalue("team_server" if mode == "proxied" else "team_server_direct")
    venv = request.getfixturevalue(venv_fixture)  # named as a parameter: its build starts with the session
    output = tmp_path / "out" / "logs_out.ipynb"
    done = run_nb("--venv", str(venv), "--notebook", str(NOTEBOOKS / "logs_itself.ipynb"), "--output", str(output),
                  "--stage", "logs", "--tracking-uri", server.url, "--experiment", f"team own calls {mode}", cwd=tmp_path,
                  env=env_with(**server.client_env(team_s3)))
    _keep_console(tmp_path, done)
    assert done.returncode == 0, done.stderr[-3000:]
    for name, value in server.client_env(team_s3).items():  # this test reads the artifacts as such a client
        monkeypatch.setenv(name, value)
    client = MlflowClient(server.url)
    (run,) = _runs(client, f"team own calls {mode}")
    seen = json.loads((output.parent / "logs_outputs" / "seen.json").read_text())
    assert seen["run_id"] == run.info.run_id and seen["tracking_uri"] == server.url
    assert run.info.status == "FINISHED"
    assert run.data.metrics == {"nb_metric": 0.75, "from_runner": 1.0}
    assert run.data.params["nb_param"] == f"p-{seen['version']}" and run.data.tags["nb_tag"] == f"t-{seen['version']}"
    logged = _artifacts(client, run.info.run_id)
    assert {"note.txt", "notes/note.txt", "dicts/d.json", "logs_out.ipynb", "outputs/seen.json"} <= set(logged)
    assert run.info.artifact_uri.startswith("mlflow-artifacts:" if mode == "proxied" else f"s3://{BUCKET}/")
    in_s3 = team_s3.objects(prefix=_s3_prefix(server, client, run))
    assert len(in_s3) == len(logged), sorted(set(logged) ^ {k.split("/artifacts/", 1)[1] for k in in_s3})


# --- replays by an agent with nothing local -------------------------------------------------------------------


def test_replays_from_an_agent_with_nothing_local(eight_agents: EightAgents, team_server: TeamServer,
                                                  example_venv_root: Path, tmp_path: Path) -> None:
    """Another agent replays agent 0's train stage run and its whole pipeline run: agent 0's folders are gone, so the
    notebooks, parameters, environments and every input come from the server (artifacts from S3); reproduced."""
    agent = eight_agents.rehearsals[0]
    published = _published(agent)
    gone = agent.folder.rename(agent.folder.with_name(agent.folder.name + " (gone)"))
    client = MlflowClient(team_server.url)
    train = published["train"]["run_id"]
    parent = client.get_run(train).data.tags["mlflow.parentRunId"]  # the manifest's may predate the repair
    fresh = tmp_path / "another agent"
    fresh.mkdir()
    for run_id, name in ((train, "stage"), (parent, "pipeline")):
        done = run_script("replay_run.py", run_id, "--tracking-uri", team_server.url, "--venv-root",
                          str(example_venv_root / "replay"), "--experiment", "team replays", "--workdir",
                          str(fresh / name), cwd=fresh)
        assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]
        assert "DIFFERENT" not in done.stdout and "NOT REPRODUCED" not in done.stdout, done.stdout[-3000:]
        assert str(agent.folder) not in done.stdout and gone.is_dir()
    replays = [r for r in _runs(client, "team replays") if "mlops_kit.replay_verdict" in r.data.tags]
    assert {r.data.tags["mlops_kit.replay_of"] for r in replays} >= {train, parent}
    assert {r.data.tags["mlops_kit.replay_verdict"] for r in replays} == {"reproduced"}


def test_a_ninth_agent_reuses_every_stage_from_the_others_through_the_server(
        eight_agents: EightAgents, team_server: TeamServer, example_venv_root: Path,
        tmp_path_factory: pytest.TempPathFactory) -> None:
    """Issue 19.7: an agent with its own clone and state finds each stage's origin among the eight's runs by tag
    search on PostgreSQL, fetches its results from S3 through the server and checks them: three stages reused,
    nested under its own pipeline run, their outputs byte for byte the origins'."""
    (done,) = rehearse_at_once(agent_folders(tmp_path_factory.mktemp("ninth agent"), 1), "--tracking-uri",
                               team_server.url, "--venv-root", str(example_venv_root), "--env",
                               f"MLFLOW_EXPERIMENT_NAME={EXPERIMENT}", "--keep", "1", env=os.environ)
    assert done.code == 0, done.output[-6000:]
    assert set(re.findall(r"reused run \w+ \((\w+), ", done.output)) == set(STAGES), done.output[-6000:]
    client = MlflowClient(team_server.url)
    executed = {r.info.run_id: r.data.tags["mlflow.parentRunId"] for r in _runs(client, EXPERIMENT)
                if r.data.tags.get("mlops_kit.role") == "stage" and "mlops_kit.reused_from" not in r.data.tags}
    parents = set()
    for stage, manifest in _published(done).items():
        run = client.get_run(manifest["run_id"])
        origin = run.data.tags["mlops_kit.reused_from"]
        assert origin in executed and run.info.status == "FINISHED", stage
        assert run.data.tags["mlops_kit.outputs.sha256"] == client.get_run(origin).data.tags["mlops_kit.outputs.sha256"]
        parents.add(run.data.tags["mlflow.parentRunId"])
    assert len(parents) == 1 and not parents & set(executed.values())


# --- an outage mid-stage --------------------------------------------------------------------------------------


def test_a_server_down_for_20_s_mid_stage_then_log_existing_uploads_once(
        tmp_path: Path, venv_small: Path, team_pg: Postgres, team_s3: S3) -> None:
    """The team's server stops while the notebook runs and comes back 20 s later: the stage ends with exit 6 and
    keeps its files; ``--log-existing`` then uploads the run once (one run, FINISHED, every file in S3); a second
    ``--log-existing`` is refused."""
    with start_team_server(tmp_path / "server", team_pg, team_s3, mode="proxied", workers=1) as server:
        output = tmp_path / "out" / "waits_out.ipynb"
        started, release = tmp_path / "started", tmp_path / "release"
        runner = subprocess.Popen([str(TOOLKIT_PYTHON), str(SCRIPTS / "run_notebook.py"), "--venv", str(venv_small),
                                   "--notebook", str(NOTEBOOKS / "waits.ipynb"), "--output", str(output),
                                   "-p", "started_file", str(started), "-p", "release_file", str(release),
                                   "--stage", "waits", "--tracking-uri", server.url, "--experiment", "team outage"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
        try:
            wait_until(started.exists, 180, "the notebook started")
            server.stop()
            down = time.monotonic()
            release.touch()
            stdout, stderr = runner.communicate(timeout=120)
        finally:
            if runner.poll() is None:
                runner.kill()
        _keep_console(tmp_path, subprocess.CompletedProcess(runner.args, runner.returncode, stdout, stderr))
        assert runner.returncode == 6, stdout + stderr
        assert "--log-existing" in one_error_line(stderr)
        manifest = output.with_name("waits_out.mlops_run.json")
        assert output.is_file() and (output.parent / "waits_outputs" / "result.txt").is_file()
        assert json.loads(manifest.read_text(encoding="utf-8"))["logged"] is False
        time.sleep(max(0.0, 20 - (time.monotonic() - down)))
        server.start()

        done = run_nb("--log-existing", str(manifest))
        _keep_console(tmp_path, done)
        assert done.returncode == 0, done.stderr
        client = MlflowClient(server.url)
        (run,) = _runs(client, "team outage")
        assert run.info.status == "FINISHED"
        logged = _artifacts(client, run.info.run_id)
        assert {"waits_out.ipynb", "waits_out.html", "outputs/result.txt", "environment/env.json"} <= set(logged)
        assert len(team_s3.objects(prefix=_s3_prefix(server, client, run))) == len(logged)
        again = run_nb("--log-existing", str(manifest))
        _keep_console(tmp_path, again)
        assert again.returncode == 2 and "already logged" in one_error_line(again.stderr)
        assert len(_runs(client, "team outage")) == 1


# --- the README's commands -----------------------------------------------------------------------------------


def _readme_commands() -> str:
    """The Linux block of the README's "Team tracking server" section, as written."""
    text = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    found = re.search(r"<!-- team-server-linux[^>]*-->\n```sh\n(.*?)```", text, re.DOTALL)
    assert found, "README: the Linux block of the team server's commands is gone"
    return found[1]


def test_the_readmes_two_commands_start_a_team_server(tmp_path: Path, team_pg: Postgres, team_s3: S3) -> None:
    """The README's Linux commands, run as written in bash with this machine's database, S3, ports, credentials and
    worker count put in (and 127.0.0.1 for 0.0.0.0: a test listens on no other address): a run logged through it
    lands in PostgreSQL and its artifact in the bucket; a request naming another host is refused
    (``--allowed-hosts``)."""
    role_password, port = "readme-" + os.urandom(8).hex(), free_port()
    with contextlib.closing(team_pg.connect()) as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE ROLE mlflow LOGIN PASSWORD '{role_password}'")
        cursor.execute("CREATE DATABASE mlflow_readme OWNER mlflow")
    team_s3.client().create_bucket(Bucket="mlflow-artifacts")
    script = _readme_commands()
    for written, here in (("<database password>", role_password), ("<access key id>", team_s3.access_key),
                          ("<secret access key>", team_s3.secret_key),
                          ("http://minio.example.internal:9000", team_s3.endpoint),
                          ("@db.example.internal:5432/mlflow ", f"@127.0.0.1:{team_pg.port}/mlflow_readme "),
                          ("--host 0.0.0.0 --port 5000 --workers 4", f"--host 127.0.0.1 --port {port} --workers 1"),
                          ("mlflow.example.internal:5000", f"127.0.0.1:{port}"),
                          ("mlflow.example.internal,", "127.0.0.1,")):
        assert written in script, written
        script = script.replace(written, here)
    script = "set -e\n" + script.replace(".venv/bin/mlflow server", "exec .venv/bin/mlflow server")
    log = tmp_path / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "PG"))}
    with open(log, "wb") as out:  # the script on bash's stdin: its credentials in no file and on no command line
        server = subprocess.Popen(["bash", "-s"], stdin=subprocess.PIPE, cwd=REPO_ROOT, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, **NEW_PROCESS_GROUP)
        assert server.stdin is not None
        server.stdin.write(script.encode())
        server.stdin.close()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_healthy(url, server, log)
        client = MlflowClient(url)
        run = client.create_run(client.create_experiment("readme"))
        (tmp_path / "note.txt").write_text("through the README's server", encoding="utf-8")
        client.log_artifact(run.info.run_id, str(tmp_path / "note.txt"))
        assert next(iter(team_s3.objects("mlflow-artifacts", "team/"))).endswith("/artifacts/note.txt")
        with contextlib.closing(team_pg.connect("mlflow_readme")) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT count(*) FROM runs")
            assert cursor.fetchone() == (1,)
        import urllib.error
        import urllib.request

        request = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=1",
                                         headers={"Host": "attacker.example"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code in (400, 403)
    finally:
        stop_process_group(server)
    assert role_password not in log.read_text(encoding="utf-8", errors="replace")


# --- secrets --------------------------------------------------------------------------------------------------


def test_no_credential_reaches_a_run_a_log_or_a_console(team_pg: Postgres, team_s3: S3, team_server: TeamServer,
                                                        tmp_path_factory: pytest.TempPathFactory,
                                                        tmp_path: Path) -> None:
    """After everything above (direct-mode runs held the S3 keys, a runner held the database password in its URI):
    neither the database password nor an S3 key is in any file the tests' runs wrote (working folders, outputs,
    manifests, console logs, the servers' logs), in the tracking database (a full dump of each) or in any object of
    the bucket (every artifact of every run)."""
    secrets = {"database password": team_pg.password, "S3 secret key": team_s3.secret_key,
               "S3 access key": team_s3.access_key}
    found = [f"{what} in {path}" for path in [*_written(tmp_path_factory.getbasetemp()), team_pg.log]
             for what, value in secrets.items() if _holds(path, value.encode())]
    for database in team_pg.databases():
        dump = team_pg.dump(database)
        found += [f"{what} in the database {database}" for what, value in secrets.items() if value in dump]
    s3 = team_s3.client()
    for key, size in team_s3.objects().items():
        if size < 50 * 1024**2:  # the big random files are the test's own bytes
            data = s3.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            found += [f"{what} in s3://{BUCKET}/{key}" for what, value in secrets.items() if value.encode() in data]
    assert found == []


def _written(root: Path) -> list[Path]:
    """Every file under ``root`` but the venvs' (their packages are not the runs' writing)."""
    files = []
    for folder, subfolders, names in os.walk(root):
        if "pyvenv.cfg" in names:
            subfolders.clear()
            continue
        files += [Path(folder) / name for name in names if not os.path.islink(Path(folder) / name)]
    return files


def _holds(path: Path, value: bytes) -> bool:
    with open(path, "rb") as data:
        tail = b""
        for block in iter(lambda: data.read(1 << 22), b""):
            if value in tail + block:
                return True
            tail = block[-len(value):]
    return False


def test_credentials_in_the_tracking_uri_stay_out_of_the_notebooks_own_output(tmp_path: Path, venv_mlflow: Path,
                                                                             team_server: TeamServer) -> None:
    """A notebook that ends the stage run itself makes MLflow print where the run is; with the login in the URI
    (``http://user:password@host``) that would be the password, in the executed notebook published and logged."""
    password = "nb-" + os.urandom(8).hex()
    uri = team_server.url.replace("http://", f"http://ana:{password}@")  # the server ignores a login it does not ask
    output = tmp_path / "out" / "ends_out.ipynb"
    done = run_nb("--venv", str(venv_mlflow), "--notebook", str(NOTEBOOKS / "ends_run.ipynb"), "--output",
                  str(output), "--stage", "ends", "--tracking-uri", uri, "--experiment", "team login in uri",
                  cwd=tmp_path)
    _keep_console(tmp_path, done)
    assert done.returncode == 0, done.stderr[-3000:]
    (run,) = _runs(MlflowClient(team_server.url), "team login in uri")
    assert run.data.metrics["by_notebook"] == 1.0
    written = [p for p in _written(tmp_path) if _holds(p, password.encode())]
    assert written == []
