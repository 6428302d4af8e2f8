"""A team's tracking server, for real, on 127.0.0.1: a throwaway PostgreSQL cluster, moto's S3 server (the S3
emulation MLflow's own tests use) and ``mlflow server`` on both, in the two artifact modes a team chooses between.

* :func:`start_postgres`: ``initdb`` into a temporary folder and ``pg_ctl start`` on a free port of 127.0.0.1
  (the server binaries named by ``pg_config --bindir``; as the ``postgres`` account when we are root, since the
  server refuses root), password authentication (scram-sha-256) for a superuser with a random password; stopped
  and removed at the end, also when something failed.
* :func:`start_s3`: moto's ``ThreadedMotoServer`` in this process, random credentials.
* :func:`start_team_server`: ``mlflow server`` on that database, artifacts ``proxied`` (``--artifacts-destination
  s3://… --serve-artifacts``: clients need no S3 credentials) or ``direct`` (``--default-artifact-root s3://…``:
  clients hold ``AWS_*``/``MLFLOW_S3_ENDPOINT_URL`` and boto3). The database password reaches it as
  ``PGPASSWORD`` and the S3 keys as ``AWS_*`` variables, never on its command line (which ``ps`` shows to all).

Session fixtures (``team_pg``, ``team_s3``, ``team_server``, ``team_server_direct``) share one cluster, one S3 and
one server of each mode across the session. The bench (``bench/bench_team_server.py``) uses the same functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

import pytest

from helpers import NEW_PROCESS_GROUP, TOOLKIT_PYTHON, WINDOWS, copy_repo, free_port, stop_process_group, wait_healthy

ArtifactMode = Literal["proxied", "direct"]
PG_SUPERUSER = "mlflow_admin"
PG_SYSTEM_ACCOUNT = "postgres"  # Debian's account for the server binaries (PostgreSQL refuses to run as root)
BUCKET = "mlops-kit-artifacts"
# The server's SQLAlchemy pool per worker process: NullPool holds a connection only while a request uses it (see the
# README's "Team server"); the tests read pg_stat_activity to hold it to that.
SERVER_WORKERS = 2
POOL_ENV = {"MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "NullPool"}


# --- PostgreSQL -----------------------------------------------------------------------------------------------


def postgres_bindir() -> Path:
    """The folder of ``initdb``/``pg_ctl``: ``pg_config --bindir`` (Debian: /usr/lib/postgresql/<v>/bin), else the
    newest Debian one, else ``PATH``; a clear error naming the package when there is none."""
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        found = Path(subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                                    check=True).stdout.strip())
        if (found / _exe("initdb")).is_file():
            return found
    debian = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                    key=lambda p: [int(part) for part in p.parent.parent.name.split(".") if part.isdigit()])
    if debian:
        return debian[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl): install Debian's 'postgresql' package "
                       "(.ci/run does) or PostgreSQL for Windows, with its bin folder on PATH")


def _exe(name: str) -> str:
    return f"{name}.exe" if WINDOWS else name


def _as_server_account() -> list[str]:
    """The command prefix that runs a server binary as an unprivileged account: none unless we are root."""
    if WINDOWS or os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise RuntimeError("running as root without runuser: cannot start PostgreSQL as an unprivileged account")
    return [runuser, "-u", PG_SYSTEM_ACCOUNT, "--"]


@dataclass
class Postgres:
    """A running throwaway cluster: superuser ``user`` with ``password`` on 127.0.0.1:``port``."""

    bindir: Path
    root: Path
    port: int
    user: str
    password: str = field(repr=False)

    def uri(self, database: str, *, with_password: bool = False) -> str:
        """The SQLAlchemy URI MLflow takes; without the password unless asked (give it as ``PGPASSWORD``)."""
        secret = f":{self.password}" if with_password else ""
        return f"postgresql+psycopg2://{self.user}{secret}@127.0.0.1:{self.port}/{database}"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def dump(self, database: str) -> str:
        """``pg_dump`` of ``database`` as SQL text: everything the tracking store holds."""
        done = subprocess.run([str(self.bindir / _exe("pg_dump")), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                               self.user, "--no-owner", database], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "PGPASSWORD": self.password}, check=True)
        return done.stdout

    def connect(self, database: str = "postgres") -> Any:
        import psycopg2

        connection = psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, password=self.password,
                                      dbname=database, application_name="mlops_kit-tests")
        connection.autocommit = True
        return connection

    def create_database(self, name: str) -> None:
        with contextlib.closing(self.connect()) as connection, connection.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')

    def databases(self) -> list[str]:
        """The cluster's databases but PostgreSQL's own."""
        with contextlib.closing(self.connect()) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database WHERE datname NOT IN ('postgres', 'template0', "
                           "'template1') ORDER BY datname")
            return [row[0] for row in cursor.fetchall()]

    def connections(self, database: str) -> list[dict[str, Any]]:
        """The client connections to ``database`` (pg_stat_activity), this query's own left out."""
        with contextlib.closing(self.connect()) as connection, connection.cursor() as cursor:
            cursor.execute("SELECT pid, application_name, client_port, state FROM pg_stat_activity "
                           "WHERE datname = %s AND pid <> pg_backend_pid() AND backend_type = 'client backend'",
                           (database,))
            return [dict(zip(("pid", "application", "client_port", "state"), row)) for row in cursor.fetchall()]


def _pg(bindir: Path, name: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([*_as_server_account(), str(bindir / _exe(name)), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=tempfile.gettempdir())
    if done.returncode != 0:
        raise RuntimeError(f"{name} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


@contextlib.contextmanager
def start_postgres(*, max_connections: int = 100) -> Iterator[Postgres]:
    """A new cluster in a temporary folder (removed at the end, also after a failure), started on a free port of
    127.0.0.1 with no Unix socket; settings for a throwaway cluster (no fsync: its data dies with the session)."""
    bindir = postgres_bindir()
    root = Path(tempfile.mkdtemp(prefix="mlops_kit-pg-"))  # not under pytest's tmp: the server account must enter it
    account = _as_server_account()
    data, log, pwfile = root / "data", root / "server.log", root / "pw"
    password = secrets.token_urlsafe(18)
    pwfile.write_text(password + "\n", encoding="utf-8")
    if account:
        shutil.chown(root, PG_SYSTEM_ACCOUNT)
        shutil.chown(pwfile, PG_SYSTEM_ACCOUNT)
    started = False
    try:
        _pg(bindir, "initdb", "-D", str(data), "-U", PG_SUPERUSER, f"--pwfile={pwfile}", "--auth=scram-sha-256",
            "-E", "UTF8", "--locale=C", "--no-sync")
        pwfile.unlink()
        port = free_port()
        with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = ''\n"
                       f"max_connections = {max_connections}\nfsync = off\nsynchronous_commit = off\n"
                       "full_page_writes = off\n")
        _pg(bindir, "pg_ctl", "-D", str(data), "-l", str(log), "-w", "-t", "60", "start")
        started = True
        yield Postgres(bindir, root, port, PG_SUPERUSER, password)
    finally:
        if started:
            with contextlib.suppress(Exception):
                _pg(bindir, "pg_ctl", "-D", str(data), "-m", "immediate", "-w", "-t", "60", "stop")
        shutil.rmtree(root, ignore_errors=True)


# --- S3 -------------------------------------------------------------------------------------------------------


@dataclass
class S3:
    """moto's S3 on 127.0.0.1: ``endpoint`` and the keys a client needs (any keys work; these are random so a test
    can look for them wherever they must not be)."""

    endpoint: str
    access_key: str
    secret_key: str = field(repr=False)
    region: str = "us-east-1"

    def env(self) -> dict[str, str]:
        """What an S3 client (the server; a direct-mode client) is given."""
        return {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_DEFAULT_REGION": self.region, "MLFLOW_S3_ENDPOINT_URL": self.endpoint}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region)

    def objects(self, bucket: str = BUCKET, prefix: str = "") -> dict[str, int]:
        """{key: size} of every object under ``prefix``."""
        found: dict[str, int] = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            found.update({item["Key"]: item["Size"] for item in page.get("Contents", [])})
        return found


@contextlib.contextmanager
def start_s3(buckets: tuple[str, ...] = (BUCKET,)) -> Iterator[S3]:
    from moto.server import ThreadedMotoServer

    requests_log = logging.getLogger("werkzeug")  # moto's server logs every request (to stderr by default)
    level = requests_log.level
    requests_log.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = S3(f"http://{host}:{port}", "AKIA" + secrets.token_hex(8).upper(), secrets.token_urlsafe(30))
    try:
        for bucket in buckets:
            s3.client().create_bucket(Bucket=bucket)
        yield s3
    finally:
        server.stop()
        requests_log.setLevel(level)


# --- mlflow server --------------------------------------------------------------------------------------------


@dataclass
class TeamServer:
    """``mlflow server`` on PostgreSQL + S3; :meth:`stop` and :meth:`start` again on the same port (an outage)."""

    url: str
    mode: ArtifactMode
    prefix: str  # where its artifacts go in the bucket
    command: list[str]
    env: dict[str, str] = field(repr=False)
    log: Path
    process: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT, env=self.env,
                                            cwd=self.log.parent, **NEW_PROCESS_GROUP)
        wait_healthy(self.url, self.process, self.log)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            stop_process_group(self.process)
        self.process = None

    def client_env(self, s3: S3) -> dict[str, str]:
        """What a client of this server sets: the URL, plus S3's endpoint and keys in direct mode."""
        return {"MLFLOW_TRACKING_URI": self.url, **(s3.env() if self.mode == "direct" else {})}


def server_command(backend_uri: str, mode: ArtifactMode, port: int, *, prefix: str, workers: int) -> list[str]:
    """The ``mlflow server`` command line of the README's "Team server" section."""
    artifacts = (["--artifacts-destination", f"s3://{BUCKET}/{prefix}", "--serve-artifacts"] if mode == "proxied"
                 else ["--default-artifact-root", f"s3://{BUCKET}/{prefix}", "--no-serve-artifacts"])
    return [str(TOOLKIT_PYTHON), "-m", "mlflow", "server", "--backend-store-uri", backend_uri, *artifacts,
            "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]


def server_env(pg: Postgres | None, s3: S3 | None, extra: Mapping[str, str] | None = None, *,
               pool: Mapping[str, str] = POOL_ENV) -> dict[str, str]:
    """The server's environment: credentials as variables (never on its command line), the pool settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "PG"))}
    env.update({**(s3.env() if s3 else {}), **pool, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", **(extra or {})})
    if pg is not None:
        env["PGPASSWORD"] = pg.password
    return env


@contextlib.contextmanager
def start_team_server(root: Path, pg: Postgres, s3: S3, *, mode: ArtifactMode = "proxied", database: str = "mlflow",
                      workers: int = SERVER_WORKERS, extra_env: Mapping[str, str] | None = None,
                      pool: Mapping[str, str] = POOL_ENV) -> Iterator[TeamServer]:
    """A health-checked ``mlflow server`` on ``database`` of ``pg`` (created when missing), artifacts in S3 under
    ``<database>/<mode>/``; stopped at the end. ``pool``: the SQLAlchemy pool variables ({} = MLflow's default)."""
    root.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(Exception):  # psycopg2's DuplicateDatabase: a second server on the same database
        pg.create_database(database)
    port = free_port()
    prefix = f"{database}/{mode}"
    server = TeamServer(f"http://127.0.0.1:{port}", mode, prefix,
                        server_command(pg.uri(database), mode, port, prefix=prefix, workers=workers),
                        server_env(pg, s3, extra_env, pool=pool), root / f"server-{mode}.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


@contextlib.contextmanager
def start_sqlite_server(root: Path, *, workers: int = SERVER_WORKERS) -> Iterator[TeamServer]:
    """The same server on a SQLite file with its artifacts in a local folder (what a team outgrows), for comparison."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    command = [str(TOOLKIT_PYTHON), "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts", "--host", "127.0.0.1",
               "--port", str(port), "--workers", str(workers)]
    server = TeamServer(f"http://127.0.0.1:{port}", "proxied", "", command, server_env(None, None, pool={}),
                        root / "server-sqlite.log")
    try:
        server.start()
        yield server
    finally:
        server.stop()


# --- session fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def team_pg() -> Iterator[Postgres]:
    with start_postgres() as pg:
        yield pg


@pytest.fixture(scope="session")
def team_s3() -> Iterator[S3]:
    with start_s3() as s3:
        yield s3


@pytest.fixture(scope="session")
def team_server(tmp_path_factory: pytest.TempPathFactory, team_pg: Postgres, team_s3: S3) -> Iterator[TeamServer]:
    """The team's server, artifacts proxied to S3 (clients hold no S3 credentials)."""
    with start_team_server(tmp_path_factory.mktemp("team-server"), team_pg, team_s3, mode="proxied") as server:
        yield server


@pytest.fixture(scope="session")
def team_server_direct(tmp_path_factory: pytest.TempPathFactory, team_pg: Postgres, team_s3: S3
                       ) -> Iterator[TeamServer]:
    """A server whose artifacts go direct to S3 (clients hold the S3 keys and boto3), on a database of its own: its
    experiments' artifact locations are ``s3://`` ones."""
    with start_team_server(tmp_path_factory.mktemp("team-server-direct"), team_pg, team_s3, mode="direct",
                           database="mlflow_direct") as server:
        yield server


def wait_until(predicate: Any, timeout: float, what: str, pause: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(pause)


# --- many agents at once --------------------------------------------------------------------------------------


@dataclass
class Rehearsal:
    """One ``run_pipeline.py`` started by :func:`rehearse_at_once`: its folder, exit code, output and wall time."""

    folder: Path
    code: int
    output: str
    seconds: float


def agent_folders(root: Path, count: int) -> list[Path]:
    """``count`` separate working folders holding the repository's files (no .git), as ``count`` agents' clones."""
    folders = []
    for i in range(count):
        folder = root / f"agent {i}"  # a space, as in "C:\\GoCD agents\\..."
        if not folder.is_dir():
            copy_repo(folder)
        folders.append(folder)
    return folders


def rehearse_at_once(folders: list[Path], *args: str, env: Mapping[str, str] | None = None,
                     while_running: Any = None, timeout: float = 1200) -> list[Rehearsal]:
    """``run_pipeline.py *args`` in each folder, all started together; ``while_running()`` is called every 0.2 s
    until they all ended."""
    begin = time.monotonic()
    running = []
    for folder in folders:
        out = open(folder / "rehearsal.log", "wb")  # noqa: SIM115 - closed below, once the process ended
        cmd = [str(TOOLKIT_PYTHON), str(folder / "scripts" / "run_pipeline.py"), *args]
        running.append((folder, out, subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=folder,
                                                      env=None if env is None else dict(env))))
    ended: dict[Path, float] = {}
    try:
        while len(ended) < len(running):
            if time.monotonic() - begin > timeout:
                raise AssertionError(f"rehearsals still running after {timeout:g} s")
            for folder, _, process in running:
                if folder not in ended and process.poll() is not None:
                    ended[folder] = time.monotonic() - begin
            if while_running is not None:
                while_running()
            time.sleep(0.2)
    finally:
        for _, out, process in running:
            if process.poll() is None:
                process.kill()
                process.wait()
            out.close()
    return [Rehearsal(folder, process.returncode,
                      (folder / "rehearsal.log").read_text(encoding="utf-8", errors="replace"), ended[folder])
            for folder, _, process in running]


# --- figures --------------------------------------------------------------------------------------------------


def peak_memory(cmd: list[str], *, cwd: Path, env: dict[str, str], timeout: float = 900
                ) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    """Run ``cmd`` (a runner: ``run_notebook.py``) and sample its processes' memory every 0.1 s: the peak resident
    size of the runner itself, of its MLflow helper process and of the kernel, in bytes."""
    import psutil

    peaks = {"runner": 0, "mlflow helper": 0, "kernel": 0}
    with open(cwd / "runner.out", "w+", encoding="utf-8") as out, open(cwd / "runner.err", "w+",
                                                                       encoding="utf-8") as err:
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, text=True)
        runner = psutil.Process(process.pid)
        deadline = time.monotonic() + timeout
        while process.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(psutil.Error):
                for proc in [runner, *runner.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        role = _role(proc, runner)
                        peaks[role] = max(peaks[role], proc.memory_info().rss)
            time.sleep(0.1)
        if process.poll() is None:
            process.kill()
        process.wait()
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, process.returncode, out.read(), err.read()), peaks


def _role(proc: Any, runner: Any) -> str:
    if proc.pid == runner.pid:
        return "runner"
    line = " ".join(proc.cmdline())
    return "kernel" if "ipykernel" in line else "mlflow helper" if "multiprocessing" in line else "kernel"


_FIGURES: list[tuple[str, str]] = []


def record_figure(what: str, figure: str) -> None:
    """A measurement worth reading in CI's log: printed in the session's summary."""
    _FIGURES.append((what, figure))


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if _FIGURES:
        terminalreporter.section("team server figures")
        for what, figure in _FIGURES:
            terminalreporter.write_line(f"{what}: {figure}")
