"""The pre-flight of an agent (``scripts/doctor.py``): every row of a new agent's first hour, each ``ok``, ``warn``,
``fail`` or ``n/a`` with what was found and, when it is not ok, the exact fix.

Rows: the account and its profile (a Windows service account's defaults live under ``%ProgramData%``), the venv root
(where from, writable), its path budget and the long-paths setting (Windows; ``n/a`` elsewhere), the Python of every
spec (found where, or what happens at the first build, or the fix), uv, git, the MLflow tracking store (a server:
reachable and its version from ``/version``; a SQLite store: the file and its schema revision against this
toolkit's MLflow), free disk under the venv root, the console's encoding. Each check runs on its own: one that
raises (a bug in the doctor, not a finding about the agent) is an ``error`` row naming the exception and the log of
its traceback, and the other rows still run. Secrets in URIs are masked in every row.

The verdict (:func:`verdict`): ``ready`` (no ``fail``, no ``error``; warnings allowed), ``not_ready`` (a check
failed: the agent needs the fix) or ``error`` (the doctor itself broke). ``doctor.py`` exits 0 for ``ready`` and 1
otherwise, as the issue asks; ``--json``'s ``result`` tells a failed check from a crash.

Nothing is built, downloaded or written (a write test makes and removes one empty folder).
"""

from __future__ import annotations

import base64
import dataclasses
import importlib.metadata
import importlib.util
import os
import re
import shutil
import socket
import sqlite3
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from ..core import cli, paths, proc, registry
from ..core.errors import ToolkitError
from ..core.redact import redact, register_secret, strip_credentials
from ..envs import build, installers, interpreters, managed, pathbudget, spec
from . import store

Status = Literal["ok", "warn", "fail", "n/a", "error"]
Verdict = Literal["ready", "not_ready", "error"]
MIN_FREE_GIB = 2.0  # below: fail (the example's three venvs and the uv cache take about 1.5 GiB)
LOW_FREE_GIB = 10.0  # below: warn
_TIMEOUT = 5.0


@dataclass(frozen=True)
class Row:
    check: str
    status: Status
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Request:
    """What to check: the specs (files or folders), the venv root and tracking URI as the tools would take them."""

    specs: tuple[Path, ...] = ()
    venv_root: Path | None = None
    tracking_uri: str | None = None


def run_checks(request: Request) -> list[Row]:
    """Every row, in the order of a new agent's first hour."""
    root = paths.venv_root(request.venv_root)
    stages, rows = _stages(request.specs)
    checks: list[tuple[str, Callable[[], Row]]] = [
        ("account", _account), ("venv root", lambda: _venv_root(root, request.venv_root)),
        ("long paths", _long_paths), ("path budget", lambda: _budget(root, stages)),
        *[(f"python {s.stage}", lambda s=s: _python(s, root)) for s in stages], ("uv", _uv), ("git", _git),
        ("mlflow", lambda: _tracking(request.tracking_uri)), ("free disk", lambda: _disk(root)),
        ("console encoding", _console)]
    for name, check in checks:
        try:
            rows.append(check())
        except Exception as exc:  # noqa: BLE001 - one broken check is an error row, the others still run
            rows.append(Row(name, "error", f"the check itself broke: {type(exc).__name__}: {exc} (traceback saved "
                                           f"to {cli.write_crash_log()}; please report it)"))
    return [dataclasses.replace(r, detail=redact(r.detail), fix=redact(r.fix)) for r in rows]


def _stages(given: Sequence[Path]) -> tuple[list[spec.StageSpec], list[Row]]:
    """The specs to check (default: ``specs/`` here), each read; one that cannot be read is a failed row."""
    files = list(given) or ([Path("specs")] if Path("specs").is_dir() else [])
    if not files:
        return [], [Row("specs", "warn", "no --spec given and no specs/ folder here: no stage Python checked",
                        "run doctor.py in the pipeline's working copy, or give --spec")]
    stages, rows = [], []
    for file in spec.spec_files(files):
        try:
            stages.append(spec.load_spec(file))
        except ToolkitError as exc:
            rows.append(Row(f"spec {file.name}", "fail", str(exc)))
    return stages, rows


# ---------------------------------------------------------------------------------------------- the machine


def _account() -> Row:
    service = paths.service_account()
    if service is not None:
        return Row("account", "ok", f"{service.describe()}; the venv root (managed Pythons beside it), uv cache "
                                    f"and Jupyter kernels default to {paths.service_data_dir()}")
    from ..core import account

    return Row("account", "ok", account.current().describe())


def _venv_root(root: Path, given: Path | None) -> Row:
    where = ("--venv-root" if given is not None else "ML_VENV_ROOT" if os.environ.get("ML_VENV_ROOT", "").strip()
             else "the service account's default" if paths.service_folder("venvs") else "the per-user default")
    problem = paths.not_writable(root)
    if problem is not None:
        return Row("venv root", "fail", f"{root} ({where}) is not writable for this account ({problem})",
                   "set ML_VENV_ROOT (or --venv-root) to a folder this account can write, e.g. C:\\ml_venvs")
    return Row("venv root", "ok", f"{root} ({where}), writable")


def _long_paths() -> Row:
    if not paths.is_windows():
        return Row("long paths", "n/a", "Windows only (no 260-character limit here)")
    if registry.long_paths_enabled():
        return Row("long paths", "ok", f"on ({registry.LONG_PATHS_KEY} {registry.LONG_PATHS_VALUE}=1)")
    return Row("long paths", "ok", "off (Windows' default): every venv must fit 259 characters, see path budget")


def _budget(root: Path, stages: Sequence[spec.StageSpec]) -> Row:
    if not stages:
        return Row("path budget", "n/a" if not paths.is_windows() else "warn", "no spec to measure")
    worst = max((build.budget(root / s.venv_name, build.lock_for(s)) for s in stages), key=lambda e: e.file_length)
    if not paths.is_windows():
        return Row("path budget", "n/a", f"Windows only; here {worst.describe()}")
    problem = worst.over()
    if problem is not None and not registry.long_paths_enabled():
        return Row("path budget", "fail", problem, pathbudget.FIXES)
    status: Status = "warn" if worst.unmeasured else "ok"
    return Row("path budget", status, worst.describe(),
               "measure the unmeasured pins: python tools/measure_wheel_paths.py <lock>" if worst.unmeasured else "")


def _python(stage: spec.StageSpec, root: Path) -> Row:
    name = f"python {stage.python.text} ({stage.stage})"
    folder = managed.pythons_dir(root)
    try:
        found = interpreters.find_python(stage.python, managed=folder)
    except interpreters.NoMatchingPython as missing:
        policy = managed.download_policy()
        if policy.allowed:
            return Row(name, "warn", f"{missing.what}; the first build downloads it through uv into {folder}",
                       f"or {missing.install_hint}")
        return Row(name, "fail", f"{missing.what}, and downloads are off ({policy.why})", missing.install_hint)
    except ToolkitError as exc:  # a bad MLOPS_PYTHON_<X>_<Y>
        return Row(name, "fail", str(exc), f"point it at a Python {stage.python.text} interpreter (python.exe), or "
                                           "remove the variable to let discovery find one")
    return Row(name, "ok", f"{found.version_text} at {found.path} ({found.source})")


def _uv() -> Row:
    try:
        exe = installers.uv_bin()
    except (ImportError, FileNotFoundError) as exc:
        return Row("uv", "fail", f"not found ({exc})", "pip install -r requirements.txt in the toolkit's Python")
    done = proc.run([exe, "--version"], check=False, timeout=30)
    if done.returncode != 0:
        return Row("uv", "fail", f"{exe} does not run (exit {done.returncode})", "reinstall requirements.txt")
    return Row("uv", "ok", f"{done.stdout.strip()} at {exe}")


def _git() -> Row:
    exe = shutil.which("git")
    if exe is None:
        return Row("git", "warn", "not on PATH: runs record their git fields from GoCD's GO_REVISION_*, else unknown",
                   "install Git for Windows (or add it to this account's PATH) to record commits from the checkout")
    done = proc.run([exe, "--version"], check=False, timeout=30)
    return Row("git", "ok" if done.returncode == 0 else "warn", f"{done.stdout.strip() or 'does not run'} at {exe}")


def _disk(root: Path) -> Row:
    existing = Path(os.path.abspath(root))
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    free = shutil.disk_usage(existing).free / 2**30
    detail = f"{free:.1f} GiB free on the venv root's drive ({existing})"
    if free < MIN_FREE_GIB:
        return Row("free disk", "fail", detail, f"free at least {MIN_FREE_GIB:g} GiB, or move ML_VENV_ROOT")
    return Row("free disk", "warn" if free < LOW_FREE_GIB else "ok", detail)


def _console() -> Row:
    encoding = (getattr(sys.stdout, "encoding", None) or "unknown").lower()
    settings = ", ".join(f"{n}={os.environ[n]}" for n in ("PYTHONUTF8", "PYTHONIOENCODING") if n in os.environ)
    detail = f"{encoding}{f' ({settings})' if settings else ''}"
    if encoding.replace("-", "") in ("utf8", "utf8sig"):
        return Row("console encoding", "ok", detail)
    return Row("console encoding", "warn", f"{detail}: the toolkit's lines show ? for what it cannot print (kernels "
                                           "and child processes run in UTF-8 anyway)",
               "set PYTHONUTF8=1 for the agent (the example XML does) to see every character in the job log")


# ---------------------------------------------------------------------------------------------- MLflow


DATABASE_PORTS = {"postgresql": 5432, "postgres": 5432, "mysql": 3306, "mssql": 1433, "oracle": 1521}


def _tracking(uri: str | None) -> Row:
    given = (uri or os.environ.get("MLFLOW_TRACKING_URI") or "").strip()
    for secret in (os.environ.get("MLFLOW_TRACKING_PASSWORD"), os.environ.get("MLFLOW_TRACKING_TOKEN"),
                   *re.findall(r"://[^/@\s]*?:([^/@\s]+)@", given)):
        register_secret(secret)  # masked even where a server or a socket error repeats it alone
    try:
        target = store.resolve_target(uri, None)
        urlsplit(target.uri).port  # noqa: B018 - a port that is not a number raises here, not in a check
    except (ToolkitError, ValueError) as exc:  # the user's URI, not a bug: a failed row
        problem = str(exc) if isinstance(exc, ToolkitError) else f"{given!r} is not a tracking URI ({exc})"
        return Row("mlflow", "fail", problem, "fix --tracking-uri or MLFLOW_TRACKING_URI: http://host:5000, "
                                              "sqlite:///mlflow.db, postgresql://host/db")
    shown = redact(target.uri)
    scheme = urlsplit(target.uri).scheme.lower()
    if scheme in ("http", "https"):
        return _server(target.uri, shown)
    db = store.sqlite_file(target.uri)
    if db is not None:
        return _sqlite(db)
    if scheme.split("+")[0] in DATABASE_PORTS:
        return _database(target.uri, shown)
    return Row("mlflow", "warn", f"{shown}: not checked (only servers, databases and SQLite stores are)")


def _database(uri: str, shown: str) -> Row:
    """A database store (a runner given the team's database URI): its port answers; the schema is the first run's."""
    parts = urlsplit(uri)
    try:
        port = parts.port or DATABASE_PORTS[parts.scheme.lower().split("+")[0]]
        with socket.create_connection((parts.hostname or "localhost", port), timeout=_TIMEOUT):
            pass
    except (OSError, ValueError) as exc:
        return Row("mlflow", "fail", f"{shown} is unreachable ({getattr(exc, 'strerror', None) or exc})",
                   "start the database or fix MLFLOW_TRACKING_URI (the pipeline XML's variable)")
    return Row("mlflow", "ok", f"{shown}: the database answers on port {port} (its schema is checked by the first "
                               "run)")


def _server(uri: str, shown: str) -> Row:
    request = urllib.request.Request(strip_credentials(uri).rstrip("/") + "/version", headers=_auth(uri))
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT) as response:
            version = response.read(200).decode("utf-8", "replace").strip()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return Row("mlflow", "fail", f"{shown} refused the request (HTTP {exc.code})",
                       "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN)")
        if exc.code >= 500:
            return Row("mlflow", "fail", f"{shown} answers with an error (HTTP {exc.code})",
                       "look at the tracking server's log (its database or artifact store may be down)")
        return Row("mlflow", "warn", f"{shown} answers but has no /version (HTTP {exc.code}): an old or proxied "
                                     "server")
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Row("mlflow", "fail", f"{shown} is unreachable ({reason})",
                   "start the tracking server or fix MLFLOW_TRACKING_URI (the pipeline XML's variable)")
    return Row("mlflow", "ok", f"{shown}: MLflow server {version}; this toolkit's client {_mlflow_version()}")


def _auth(uri: str) -> dict[str, str]:
    """The credentials MLflow's client would send: the URI's user info, else its documented variables."""
    parts = urlsplit(uri)
    user = parts.username or os.environ.get("MLFLOW_TRACKING_USERNAME")
    password = parts.password or os.environ.get("MLFLOW_TRACKING_PASSWORD")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    token = os.environ.get("MLFLOW_TRACKING_TOKEN")
    return {"Authorization": f"Bearer {token}"} if token else {}


def _sqlite(db: Path) -> Row:
    db = Path(os.path.abspath(db))
    if not db.is_file():
        problem = paths.not_writable(db.parent)
        if problem is not None:
            return Row("mlflow", "fail", f"sqlite:///{db.as_posix()}: its folder is not writable ({problem})",
                       "run from a folder this account can write, or set MLFLOW_TRACKING_URI")
        return Row("mlflow", "ok", f"sqlite:///{db.as_posix()}: created by the first run (folder writable)")
    try:
        with sqlite3.connect(f"file:{db.as_posix()}?mode=ro", uri=True, timeout=_TIMEOUT) as connection:
            revision = str(connection.execute("select version_num from alembic_version").fetchone()[0])
    except sqlite3.Error as exc:
        return Row("mlflow", "fail", f"sqlite:///{db.as_posix()}: not an MLflow store ({exc})",
                   "point MLFLOW_TRACKING_URI at the team's store, or move the file away")
    known, head = _migrations()
    where = f"sqlite:///{db.as_posix()}: schema revision {revision}"
    if head is None or revision == head:
        return Row("mlflow", "ok", f"{where}, current for MLflow {_mlflow_version()}")
    if revision in known:
        return Row("mlflow", "ok", f"{where}, older than MLflow {_mlflow_version()}'s {head}: upgraded by the next run")
    return Row("mlflow", "fail", f"{where}, unknown to MLflow {_mlflow_version()} (a newer MLflow wrote it)",
               "upgrade the toolkit's mlflow (requirements.txt) to the version that wrote the store")


def _mlflow_version() -> str:
    try:
        return importlib.metadata.version("mlflow")
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _migrations() -> tuple[set[str], str | None]:
    """The schema revisions this toolkit's MLflow knows and its newest, read from its migration files (no import
    of mlflow: two seconds saved)."""
    found = importlib.util.find_spec("mlflow")
    if found is None or found.origin is None:
        return set(), None
    revisions, parents = set(), set()
    for script in (Path(found.origin).parent / "store" / "db_migrations" / "versions").glob("*.py"):
        text = script.read_text(encoding="utf-8", errors="replace")
        if (rev := re.search(r"^revision\s*=\s*['\"](\w+)['\"]", text, re.MULTILINE)) is not None:
            revisions.add(rev[1])
        down = re.search(r"^down_revision\s*=\s*(.*)$", text, re.MULTILINE)
        if down is not None:
            parents |= set(re.findall(r"['\"](\w+)['\"]", down[1]))
    heads = revisions - parents
    return revisions, next(iter(heads)) if len(heads) == 1 else None


# ---------------------------------------------------------------------------------------------- output


def render_table(rows: Sequence[Row]) -> str:
    """The rows for a person: check, status, what was found; the fix indented below a row that needs one."""
    width = max((len(r.check) for r in rows), default=5)
    status_width = max([4] + [len(r.status) for r in rows])  # ERROR, rare, widens the column
    lines = []
    for row in rows:
        lines.append(f"{row.check:<{width}}  {row.status.upper():<{status_width}}  {row.detail}")
        if row.fix and row.status in ("warn", "fail"):
            lines.append(f"{'':<{width + status_width}}    fix: {row.fix}")
    failed, broke, warned = (sum(r.status == status for r in rows) for status in ("fail", "error", "warn"))
    summary = ", ".join([f"{failed} check(s) failed"] * bool(failed)
                        + [f"{broke} check(s) could not run (a bug in doctor.py)"] * bool(broke)) or "all checks passed"
    lines += ["", summary + (f", {warned} warning(s)" if warned else "")]
    return "\n".join(lines)


def verdict(rows: Sequence[Row]) -> Verdict:
    """``error`` when a check broke (whatever the others found), else ``not_ready`` when one failed, else ``ready``."""
    statuses = {r.status for r in rows}
    return "error" if "error" in statuses else "not_ready" if "fail" in statuses else "ready"


def exit_code(result: Verdict) -> int:
    """The issue's contract: 0 when all pass (warnings allowed), 1 otherwise."""
    return 0 if result == "ready" else 1


def as_json(rows: Sequence[Row]) -> dict[str, object]:
    """The rows for a machine (a GoCD job's first task, a monitoring script): ``result`` is the verdict, the one
    field that tells a failed check (``not_ready``) from a broken doctor (``error``), both exit 1."""
    result = verdict(rows)
    return {"result": result, "exit_code": exit_code(result), "ok": result == "ready", "platform": paths._PLATFORM,
            "rows": [dataclasses.asdict(r) for r in rows]}


def crashed_json(message: str, code: int) -> dict[str, object]:
    """What ``--json`` prints when the doctor itself stops (a bug, Ctrl-C, a bad argument): no rows, the one line."""
    return {"result": "error", "exit_code": code, "ok": False, "platform": paths._PLATFORM, "error": redact(message),
            "rows": []}
