"""Stage venvs: built once, reused while nothing that defines them changed, never trusted when half built.

Layout: ``<venv_root>/<venv_name>/`` with the ``.mlops_kit`` ownership marker written right after the folder is
made, and the audit bundle ``audit/{pip_freeze.txt, spec.yaml, env.json}``; ``env.json`` is written last with
``os.replace`` and is the completion marker. A venv with the marker but no ``env.json`` (killed mid-install,
failed install, power cut) is rebuilt; a folder without the marker is not ours and is refused, never touched.

Cache key: the spec's content hash (packages, Python request, index settings), the resolved interpreter (path
and version), the installer, the ``--from-freeze`` file's content, the stage and kernel display name (both are
recorded in ``env.json`` and the kernelspec). Same key and a passing :func:`health_check` -> reuse, no install.

Concurrency: a :mod:`filelock` lock per venv name in ``<venv_root>/.locks/``; the "is it already valid?" check
is redone after the lock is taken, so of N builders one builds and the others wait, then reuse. With ``--force``
a waiter reuses a venv whose ``env.json`` was replaced while it waited (another forced run just rebuilt it), so
N forced runs rebuild once. A valid venv whose kernel is missing gets it re-registered without the lock
(the user's own Jupyter folder needs no write access to a machine-wide venv root).

Build order: create, install, :func:`health_check`, freeze, audit files, kernel, ``env.json``: a venv that fails
its check never gets a kernel. A ``--from-freeze`` file inside the venv (its own ``audit/pip_freeze.txt``) is
left in place while the folder is emptied, so a failed rebuild never loses it.

Index settings: the spec's ``index_url``/``extra_index_urls``, else the environment (``PIP_INDEX_URL``,
``PIP_EXTRA_INDEX_URL``, ``UV_DEFAULT_INDEX``/``UV_INDEX_URL``, ``UV_INDEX``/``UV_EXTRA_INDEX_URL``) are handed to
either installer through *its* environment variables (never on the command line, so a token in a URL cannot
leak into a log through an error message). ``pip.ini``/``pip.conf`` is read by pip only; uv ignores it, so put
corporate mirrors in the spec or in GoCD environment variables. With extra indexes uv keeps its default
``first-index`` strategy (a name found on an earlier index is never taken from a later one: protection against
dependency confusion), whereas pip takes the best version across all indexes; set
``UV_INDEX_STRATEGY=unsafe-best-match`` to get pip's behaviour from uv (uv reads it, we pass the environment on).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import stat
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import filelock
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from . import __version__, kernel, proc
from .errors import BadInput, EnvBuildError
from .inputs import read_input
from .interpreters import Interpreter
from .spec import StageSpec, mask_url_credentials

_PLATFORM = sys.platform  # seam: tests patch it to "win32" to exercise the Windows layout on Linux
SCHEMA = 1
MARKER = ".mlops_kit"
AUDIT = "audit"
ENV_JSON = "env.json"
FREEZE_TXT = "pip_freeze.txt"
SPEC_YAML = "spec.yaml"
INSTALLERS = ("uv", "pip")
LOCK_TIMEOUT = 4 * 3600.0
_TOOLKIT_ROOT = Path(__file__).resolve().parents[2]
_HEALTH_PROBE = (
    "import importlib.util as u, json, sys; print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3], "
    "'missing': [m for m in ('ipykernel', 'pip') if u.find_spec(m) is None]}))"
)

Echo = Callable[[str], None]


def echo_stderr(message: str) -> None:
    """The default ``echo``: one progress line to stderr (stdout is kept for the venv path)."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------------- layout


def default_venv_root() -> Path:
    """Per-user default venv root: ``%LOCALAPPDATA%\\mlops_kit\\venvs`` or ``~/.local/share/mlops_kit/venvs``."""
    if _PLATFORM == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
    else:
        base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mlops_kit" / "venvs"


def venv_root(arg: Path | str | None = None) -> Path:
    """The one rule for where stage venvs live (create_venv, run_notebook --spec and run_pipeline agree on it):
    ``--venv-root``, else ``ML_VENV_ROOT`` (GoCD sets it; a stray trailing space from ``set X=... `` is dropped),
    else :func:`default_venv_root`. Absolute, not resolved: a symlinked root keeps the name the user gave."""
    env = os.environ.get("ML_VENV_ROOT", "").strip()
    root = Path(arg) if arg is not None and str(arg).strip() else Path(env) if env else default_venv_root()
    return Path(os.path.abspath(root))


def venv_bin_dir(venv_dir: Path | str) -> Path:
    """``Scripts`` on Windows, ``bin`` elsewhere."""
    return Path(venv_dir) / ("Scripts" if _PLATFORM == "win32" else "bin")


def venv_python(venv_dir: Path | str) -> Path:
    """The venv's interpreter: ``Scripts\\python.exe`` on Windows, ``bin/python`` elsewhere."""
    return venv_bin_dir(venv_dir) / ("python.exe" if _PLATFORM == "win32" else "python")


# ---------------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class EnvRecord:
    """What ``audit/env.json`` says about a finished venv (``data`` is the raw JSON, for extra keys)."""

    venv_dir: Path
    stage: str
    venv_name: str
    venv_python: Path
    kernel_name: str
    kernel_display_name: str
    python_path: Path
    python_version: str
    python_source: str
    python_request: str
    platform: str
    installer: str
    installer_version: str
    spec_hash: str
    cache_key: str
    created_at: str
    toolkit_version: str
    toolkit_git_sha: str
    packages: tuple[str, ...]
    from_freeze_sha256: str | None
    data: dict[str, Any] = field(compare=False, repr=False)

    @property
    def audit_dir(self) -> Path:
        return self.venv_dir / AUDIT

    @property
    def env_file(self) -> Path:
        return self.audit_dir / ENV_JSON

    @property
    def freeze_file(self) -> Path:
        return self.audit_dir / FREEZE_TXT

    @property
    def spec_file(self) -> Path:
        return self.audit_dir / SPEC_YAML


def _record_from(data: dict[str, Any], venv_dir: Path) -> EnvRecord:
    python, installer, toolkit = data["python"], data["installer"], data["toolkit"]
    return EnvRecord(
        venv_dir=Path(venv_dir), stage=data["stage"], venv_name=data["venv_name"],
        venv_python=Path(data["venv_python"]), kernel_name=data["kernel_name"],
        kernel_display_name=data["kernel_display_name"], python_path=Path(python["path"]),
        python_version=python["version"], python_source=python.get("source", ""),
        python_request=python.get("request", ""), platform=data["platform"], installer=installer["name"],
        installer_version=installer["version"], spec_hash=data["spec_hash"], cache_key=data["cache_key"],
        created_at=data["created_at"], toolkit_version=toolkit["version"], toolkit_git_sha=toolkit["git_sha"],
        packages=tuple(data["packages"]), from_freeze_sha256=(data.get("from_freeze") or {}).get("sha256"),
        data=data,
    )


def read_env(venv_dir: Path | str) -> EnvRecord:
    """The record of a finished venv; :class:`BadInput` when ``venv_dir`` is not one (missing or incomplete)."""
    venv_dir = Path(venv_dir)
    path = venv_dir / AUDIT / ENV_JSON
    if not path.is_file():
        raise BadInput(f"{venv_dir}: not a venv built by create_venv.py (no {AUDIT}/{ENV_JSON}); build it with "
                       "'python scripts/create_venv.py --spec specs/<stage>.yaml'")
    try:
        return _record_from(json.loads(path.read_text(encoding="utf-8")), venv_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(f"{path}: unreadable venv record ({type(exc).__name__}: {exc}); rebuild with --force") from None


def health_check(venv_dir: Path | str, record: EnvRecord) -> str | None:
    """Why the venv is unusable (its interpreter gone, broken, another version, moved), or ``None`` if usable."""
    venv_dir = Path(venv_dir)
    python = venv_python(venv_dir)
    if _norm(record.data.get("venv_path", venv_dir)) != _norm(venv_dir):
        return f"it was built at {record.data.get('venv_path')} and moved (venvs are not relocatable)"
    if not python.exists():
        return f"its interpreter {python} is missing (base Python {record.python_path} removed?)"
    try:
        result = proc.run([python, "-I", "-c", _HEALTH_PROBE], check=False, timeout=120)
        info = json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else None
    except (proc.CommandError, ValueError, IndexError):
        info = None
    if info is None:
        return f"its interpreter {python} does not run (base Python {record.python_path} removed or upgraded?)"
    if info["version"] != record.python_version:
        return (f"its interpreter reports Python {info['version']}, recorded {record.python_version} "
                "(base Python upgraded?)")
    if info["missing"]:
        return f"{' and '.join(info['missing'])} can no longer be imported in it"
    return None


def _norm(path: Path | str) -> str:
    return os.path.normcase(os.path.abspath(path))


# ---------------------------------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class FrozenPins:
    """A validated ``pip freeze`` file: exact pins only (``name==version`` or ``name @ url``)."""

    path: Path
    requirements: tuple[str, ...]
    sha256: str


def read_freeze(path: Path | str) -> FrozenPins:
    """Read a freeze file for ``--from-freeze``; :class:`BadInput` naming the file and line on anything else."""
    path = Path(path)
    text = read_input(path, "freeze file")
    reqs = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split(" #", 1)[0].strip()
        if line and not line.startswith("#"):
            reqs.append(_pinned(line, path, number))
    if not reqs:
        raise BadInput(f"{path}: freeze file lists no packages")
    digest = hashlib.sha256("\n".join(sorted(reqs)).encode()).hexdigest()
    return FrozenPins(path, tuple(reqs), digest)


def _pinned(line: str, path: Path, number: int) -> str:
    where = f"{path}: line {number}: {line!r}"
    if line.startswith("-"):
        raise BadInput(f"{where}: installer options and editable (-e) installs cannot be rebuilt exactly; "
                       "keep only name==version lines")
    try:
        req = Requirement(line)
    except InvalidRequirement as exc:
        raise BadInput(f"{where}: not a requirement ({str(exc).splitlines()[0]})") from None
    specs = list(req.specifier)
    exact = len(specs) == 1 and specs[0].operator in ("==", "===") and "*" not in specs[0].version
    if not (req.url or exact):
        raise BadInput(f"{where}: not pinned to one version (expected name==version, as pip freeze writes)")
    return line


@dataclass(frozen=True)
class IndexSettings:
    """Where packages come from; ``origin`` says which source won (spec, environment or installer default)."""

    url: str | None = None
    extra_urls: tuple[str, ...] = ()
    origin: str = "installer default"

    def masked(self) -> dict[str, Any]:
        """For env.json and messages: credentials in URLs replaced by ``***``."""
        return {"url": mask_url_credentials(self.url) if self.url else None,
                "extra_urls": [mask_url_credentials(u) for u in self.extra_urls], "origin": self.origin}


def index_settings(spec: StageSpec, environ: Mapping[str, str] | None = None) -> IndexSettings:
    """The spec's index settings, else the usual environment variables (pip's and uv's names)."""
    if spec.index_url or spec.extra_index_urls:
        return IndexSettings(spec.index_url, tuple(spec.extra_index_urls), "spec")
    env = os.environ if environ is None else environ
    url = next((env[k] for k in ("PIP_INDEX_URL", "UV_DEFAULT_INDEX", "UV_INDEX_URL") if env.get(k)), None)
    extras = tuple(u for k in ("PIP_EXTRA_INDEX_URL", "UV_INDEX", "UV_EXTRA_INDEX_URL") for u in env.get(k, "").split())
    if url or extras:
        return IndexSettings(url, tuple(dict.fromkeys(extras)), "environment")
    return IndexSettings()


def _installer_env(installer: str, index: IndexSettings) -> dict[str, str]:
    """The installer's environment: ours, with the index settings spelled the way that installer reads them."""
    env = dict(os.environ)
    if index.origin == "installer default":
        return env
    names = ("UV_DEFAULT_INDEX", "UV_INDEX") if installer == "uv" else ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL")
    for stale in ("UV_DEFAULT_INDEX", "UV_INDEX_URL", "UV_INDEX", "UV_EXTRA_INDEX_URL", "PIP_INDEX_URL",
                  "PIP_EXTRA_INDEX_URL"):
        env.pop(stale, None)
    if index.url:
        env[names[0]] = index.url
    if index.extra_urls:
        env[names[1]] = " ".join(index.extra_urls)
    return env


# ---------------------------------------------------------------------------------------------------- ensure


@dataclass(frozen=True)
class EnvResult:
    """What :func:`ensure_env` did: ``action`` is ``built``, ``rebuilt`` or ``reused``; ``reason`` says why."""

    venv_dir: Path
    python: Path
    record: EnvRecord
    action: str
    reason: str | None = None
    kernel_dir: Path | None = None


@dataclass(frozen=True)
class _Plan:
    spec: StageSpec
    interpreter: Interpreter
    installer: str
    venv_dir: Path
    freeze: FrozenPins | None
    kernel_scope: str
    index: IndexSettings

    @property
    def kernel_name(self) -> str:
        return kernel.kernel_name_for(self.spec.venv_name)

    @property
    def cache_key(self) -> str:
        payload = {
            "schema": SCHEMA, "spec": self.spec.content_hash(), "stage": self.spec.stage,
            "kernel_display_name": self.spec.kernel_display_name, "installer": self.installer,
            "python": [str(self.interpreter.path), self.interpreter.version_text],
            "freeze": self.freeze.sha256 if self.freeze else None,
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def ensure_env(
    spec: StageSpec, *, venv_root: Path, interpreter: Interpreter, installer: str = "uv", force: bool = False,
    from_freeze: Path | None = None, kernel_scope: str = "user", audit_dir: Path | None = None,
    echo: Echo = echo_stderr,
) -> EnvResult:
    """Reuse the stage's venv if still valid, else (re)build it; register its kernel; copy the audit bundle."""
    plan = _make_plan(spec, venv_root, interpreter, installer, from_freeze, kernel_scope)
    refuse_unowned(plan.venv_dir)
    record = None if force else _usable(plan)[0]
    if record is not None:  # no lock: re-registering a kernel in the user's own Jupyter dir needs no write access
        result = _reuse(plan, record, echo)
    else:
        before = _env_stamp(plan)
        with _build_lock(plan, echo):
            result = _ensure_locked(plan, force=force, before=before, echo=echo)
    if audit_dir is not None:
        copied = copy_audit(result.record, Path(audit_dir))
        echo(f"audit bundle copied to {copied}")
    return result


def _make_plan(spec: StageSpec, venv_root: Path, interpreter: Interpreter, installer: str,
               from_freeze: Path | None, kernel_scope: str) -> _Plan:
    if installer not in INSTALLERS:
        raise BadInput(f"--installer {installer!r}: choose one of {', '.join(INSTALLERS)}")
    if kernel_scope not in kernel.SCOPES:
        raise BadInput(f"--kernel-scope {kernel_scope!r}: choose one of {', '.join(kernel.SCOPES)}")
    venv_dir = Path(os.path.abspath(venv_root)) / spec.venv_name
    interp = dataclasses.replace(interpreter, path=Path(os.path.abspath(interpreter.path)))
    freeze = read_freeze(from_freeze) if from_freeze is not None else None
    return _Plan(spec, interp, installer, venv_dir, freeze, kernel_scope, index_settings(spec))


def refuse_unowned(venv_dir: Path) -> None:
    """:class:`BadInput` if ``venv_dir`` exists but was not made by this tool (no marker, not an empty folder)."""
    if not os.path.lexists(venv_dir) or (venv_dir / MARKER).is_file():
        return
    if venv_dir.is_dir() and not venv_dir.is_symlink() and not any(venv_dir.iterdir()):
        return  # an empty folder holds nothing we could damage
    raise BadInput(f"{venv_dir}: exists but was not created by create_venv.py (no {MARKER} marker); refusing to "
                   "touch it: move it away or choose another --venv-root or venv_name")


def _kernel_ok(plan: _Plan) -> bool:
    return kernel.registered_for(plan.venv_dir, name=plan.kernel_name,
                                 display_name=plan.spec.kernel_display_name, scope=plan.kernel_scope)


def _usable(plan: _Plan) -> tuple[EnvRecord | None, str | None]:
    """``(record, None)`` when the venv can be reused as is, else ``(None, why not)`` (shown to the user)."""
    venv_dir = plan.venv_dir
    if not venv_dir.exists():
        return None, "not built yet"
    if not (venv_dir / AUDIT / ENV_JSON).is_file():
        return None, f"a previous build did not finish (no {AUDIT}/{ENV_JSON})"
    try:
        record = read_env(venv_dir)
    except BadInput as exc:
        return None, str(exc)
    if record.cache_key != plan.cache_key:
        return None, _changes(record, plan)
    reason = health_check(venv_dir, record)
    return (None, f"health check failed: {reason}") if reason else (record, None)


def _env_stamp(plan: _Plan) -> tuple[int, int, int] | None:
    """Identity of the current env.json (each build replaces it: a new stamp), ``None`` when there is none.
    Compared before/after waiting for the lock, so no clock is involved (a venv root on a share has its own)."""
    try:
        st = (plan.venv_dir / AUDIT / ENV_JSON).stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _built_meanwhile(plan: _Plan, before: tuple[int, int, int] | None) -> EnvRecord | None:
    """The record of a venv another run finished (same cache key) while we waited for the lock, else ``None``."""
    now = _env_stamp(plan)
    if now is None or now == before:
        return None
    try:
        record = read_env(plan.venv_dir)
    except BadInput:
        return None
    return record if record.cache_key == plan.cache_key else None


def _changes(record: EnvRecord, plan: _Plan) -> str:
    spec, interp, out = plan.spec, plan.interpreter, []
    old, new = set(record.packages), set(spec.packages)
    if old != new:
        diff = [f"+{p}" for p in sorted(new - old)] + [f"-{p}" for p in sorted(old - new)]
        out.append(f"package list changed ({', '.join(diff)})")
    if record.python_request != spec.python.text:
        out.append(f"Python request changed ({record.python_request!r} -> {spec.python.text!r})")
    if (str(record.python_path), record.python_version) != (str(interp.path), interp.version_text):
        out.append(f"interpreter changed ({record.python_version} at {record.python_path} -> "
                   f"{interp.version_text} at {interp.path})")
    if record.installer != plan.installer:
        out.append(f"installer changed ({record.installer} -> {plan.installer})")
    if record.from_freeze_sha256 != (plan.freeze.sha256 if plan.freeze else None):
        out.append("no longer built from a freeze file" if plan.freeze is None else
                   f"now built from the freeze file {plan.freeze.path}" if record.from_freeze_sha256 is None else
                   f"freeze file changed ({plan.freeze.path})")
    if (record.stage, record.kernel_display_name) != (spec.stage, spec.kernel_display_name):
        out.append("stage or kernel display name changed")
    if not out and record.spec_hash != spec.content_hash():
        out.append("index settings changed")
    return "; ".join(out) or "built by an older toolkit (cache key format changed)"


@contextlib.contextmanager
def _build_lock(plan: _Plan, echo: Echo) -> Iterator[None]:
    """Hold ``<venv_root>/.locks/<venv_name>.lock``; say so when another process holds it."""
    lock_file = _prepare_root(plan.venv_dir.parent) / f"{plan.spec.venv_name.lower()}.lock"
    try:
        lock = filelock.FileLock(str(lock_file))
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            echo(f"waiting for another build of {plan.venv_dir} to finish (lock {lock_file})")
            lock.acquire(timeout=LOCK_TIMEOUT)
    except filelock.Timeout:
        raise EnvBuildError(f"gave up after {LOCK_TIMEOUT:.0f}s waiting for lock {lock_file}") from None
    except OSError as exc:  # read-only .locks folder, the lock path is a folder, ...
        raise EnvBuildError(f"cannot take the build lock {lock_file} ({exc}); check that the venv root is "
                            "writable for this account") from None
    try:
        yield
    finally:
        lock.release()


def _prepare_root(root: Path) -> Path:
    """Create the venv root (git-ignored when we create it, e.g. inside a GoCD working copy); return .locks."""
    created = not root.exists()
    try:
        (root / ".locks").mkdir(parents=True, exist_ok=True)
        if created:
            (root / ".gitignore").write_text("# created by mlops_kit create_venv.py\n*\n", encoding="utf-8")
    except OSError as exc:
        raise BadInput(f"{root}: cannot create the venv root ({exc})") from None
    return root / ".locks"


def _ensure_locked(plan: _Plan, *, force: bool, before: tuple[int, int, int] | None, echo: Echo) -> EnvResult:
    """Under the lock: reuse what a concurrent run just built, else build (no health check when forced)."""
    refuse_unowned(plan.venv_dir)  # re-checked: someone may have made the folder meanwhile
    record, reason = (_built_meanwhile(plan, before), "--force given") if force else _usable(plan)
    if record is not None:
        return _reuse(plan, record, echo, why="another run just built it" if force else None)
    existed = plan.venv_dir.exists()
    started = time.monotonic()
    if existed:
        echo(f"rebuilding {plan.venv_dir}: {reason}")
    else:
        echo(f"building {plan.venv_dir} (Python {plan.interpreter.version_text} at {plan.interpreter.path}, "
             f"installer {plan.installer})")
    record, kdir = _build(plan, echo)
    echo(f"built {plan.venv_dir} in {time.monotonic() - started:.1f}s"
         + (f" (kernel {plan.kernel_name!r} registered in {kdir})" if kdir else ""))
    return EnvResult(plan.venv_dir, venv_python(plan.venv_dir), record, "rebuilt" if existed else "built",
                     reason, kdir)


def _reuse(plan: _Plan, record: EnvRecord, echo: Echo, why: str | None = None) -> EnvResult:
    echo(f"reusing {plan.venv_dir} ({why or 'spec and interpreter unchanged'})")
    kdir = None
    if plan.kernel_scope != "none":
        kdir = kernel.kernel_dir(plan.kernel_name, plan.kernel_scope)
        if not _kernel_ok(plan):
            echo(f"kernel {plan.kernel_name!r} missing or outdated in {plan.kernel_scope} scope: registering it")
            kdir = _register(plan)
    return EnvResult(plan.venv_dir, venv_python(plan.venv_dir), record, "reused", None, kdir)


def _register(plan: _Plan) -> Path | None:
    return kernel.register_kernel(plan.venv_dir, name=plan.kernel_name,
                                  display_name=plan.spec.kernel_display_name, scope=plan.kernel_scope)


# ---------------------------------------------------------------------------------------------------- build


def _build(plan: _Plan, echo: Echo) -> tuple[EnvRecord, Path | None]:
    """Marker first, env.json last; any failure leaves a marked venv without env.json (rebuilt next time)."""
    venv_dir = plan.venv_dir
    _make_marked_dir(venv_dir, keep=plan.freeze.path if plan.freeze else None)
    env = _installer_env(plan.installer, plan.index)
    installer_version = _create_venv(plan, env, echo)
    _install(plan, env, echo)
    data = _record_data(plan, installer_version)
    record = _record_from(data, venv_dir)
    reason = health_check(venv_dir, record)  # before the kernel: never register a kernel for a broken venv
    if reason:
        raise EnvBuildError(f"{venv_dir}: built but unusable: {reason}")
    freeze = _freeze(plan, env)
    audit = venv_dir / AUDIT
    audit.mkdir(exist_ok=True)
    (audit / FREEZE_TXT).write_text(freeze, encoding="utf-8")
    (audit / SPEC_YAML).write_text(plan.spec.text, encoding="utf-8")
    kdir = _register(plan)
    write_json_atomic(audit / ENV_JSON, data)
    return record, kdir


def _make_marked_dir(venv_dir: Path, *, keep: Path | None = None) -> None:
    """Create (or empty) the venv folder, keeping/writing the ownership marker before anything else.

    ``keep``: the ``--from-freeze`` file, left in place when it lives in the venv (its own audit/pip_freeze.txt),
    so a failed or killed rebuild never loses the user's only copy; a finished build overwrites it."""
    if venv_dir.exists():
        _empty_owned(venv_dir, keep)
    venv_dir.mkdir(exist_ok=True)
    marker = {"created_by": "mlops_kit create_venv.py", "created_at": _utc_now(), "toolkit": __version__}
    (venv_dir / MARKER).write_text(json.dumps(marker) + "\n", encoding="utf-8")


def _empty_owned(venv_dir: Path, keep: Path | None = None) -> None:
    """Delete an owned venv's content; env.json first (a crash midway leaves an incomplete venv); the marker is
    kept (a crash never leaves an unmarked folder we would then refuse), and so is ``keep``."""
    kept = {_norm(venv_dir / MARKER)} | ({_norm(keep)} if keep is not None else set())
    try:
        (venv_dir / AUDIT / ENV_JSON).unlink(missing_ok=True)
        _delete_children(venv_dir, kept)
    except OSError as exc:
        raise EnvBuildError(f"cannot delete {venv_dir} for the rebuild ({exc}); close Jupyter kernels or "
                            "programs using it and retry") from None


def _delete_children(folder: Path, kept: set[str]) -> None:
    for child in folder.iterdir():
        name = _norm(child)
        if name in kept:
            continue
        if child.is_dir() and not child.is_symlink():
            if any(k.startswith(name + os.sep) for k in kept):
                _delete_children(child, kept)
            else:
                _rmtree(child)
        else:
            child.unlink()


def _rmtree(path: Path) -> None:
    """``shutil.rmtree`` that clears the read-only bit Windows puts on some files (e.g. from git) and retries."""

    def clear_readonly(func: Callable[[str], Any], target: str, _exc: Any) -> None:
        os.chmod(target, stat.S_IWRITE)
        func(target)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=clear_readonly)
    else:
        shutil.rmtree(path, onerror=clear_readonly)


def _uv() -> str:
    import uv

    return uv.find_uv_bin()


def _step(what: str, cmd: list[Any], plan: _Plan, env: Mapping[str, str], echo: Echo, *,
          stream: bool = True) -> proc.Result:
    """Run one build step; a failure becomes one :class:`EnvBuildError` line (exit 4)."""
    try:
        return proc.run(cmd, env=env, stream=stream, echo=lambda line: echo(line.rstrip("\r\n")))
    except proc.CommandError as exc:
        raise EnvBuildError(f"{what} failed: {exc} ({plan.venv_dir} is left marked incomplete and will be "
                            "rebuilt on the next run)") from None


def _create_venv(plan: _Plan, env: Mapping[str, str], echo: Echo) -> str:
    """Create the venv with pip in it (``%pip`` in Jupyter); return the installer's version."""
    venv_dir, base = plan.venv_dir, plan.interpreter.path
    if plan.installer == "uv":
        uv = _uv()
        _step("creating the venv", [uv, "venv", "--seed", "--allow-existing", "--no-project", "--python", base,
                                    "--prompt", plan.spec.venv_name, venv_dir], plan, env, echo)
        return _version_of([uv, "--version"], plan, env)
    _step("creating the venv", [base, "-m", "venv", "--prompt", plan.spec.venv_name, venv_dir], plan, env, echo)
    return _version_of([venv_python(venv_dir), "-m", "pip", "--version"], plan, env)


def _version_of(cmd: list[Any], plan: _Plan, env: Mapping[str, str]) -> str:
    out = _step("asking the installer's version", cmd, plan, env, lambda _: None, stream=False).stdout.split()
    return out[1] if len(out) > 1 else "unknown"


def _install(plan: _Plan, env: Mapping[str, str], echo: Echo) -> None:
    reqs = list(plan.freeze.requirements if plan.freeze else plan.spec.packages)
    names = {canonicalize_name(Requirement(r).name) for r in reqs}
    if plan.freeze:
        missing = [p for p in plan.spec.packages if canonicalize_name(Requirement(p).name) not in names]
        if missing:
            echo(f"warning: {plan.freeze.path} does not pin {', '.join(missing)} from the spec; installing the "
                 "freeze file only")
    if "ipykernel" not in names:
        reqs.append("ipykernel")  # not pinned: the resolver picks one that supports this Python (3.8 included)
    python = venv_python(plan.venv_dir)
    if plan.installer == "uv":
        cmd = [_uv(), "pip", "install", "--python", python, *reqs]
    else:
        cmd = [python, "-m", "pip", "install", "--disable-pip-version-check", *reqs]
    echo(f"installing {len(reqs)} requirement(s) with {plan.installer}" + (
        f" from {plan.index.masked()['url'] or 'the default index'} ({plan.index.origin})"
        if plan.index.origin != "installer default" else ""))
    _step(f"installing packages with {plan.installer}", cmd, plan, env, echo)


def _freeze(plan: _Plan, env: Mapping[str, str]) -> str:
    python = venv_python(plan.venv_dir)
    if plan.installer == "uv":
        cmd = [_uv(), "pip", "freeze", "--python", python]
    else:
        cmd = [python, "-m", "pip", "freeze", "--all", "--disable-pip-version-check"]
    return _step("freezing the installed packages", cmd, plan, env, lambda _: None, stream=False).stdout


def _record_data(plan: _Plan, installer_version: str) -> dict[str, Any]:
    spec, interp = plan.spec, plan.interpreter
    return {
        "schema": SCHEMA, "stage": spec.stage, "venv_name": spec.venv_name, "venv_path": str(plan.venv_dir),
        "venv_python": str(venv_python(plan.venv_dir)), "kernel_name": plan.kernel_name,
        "kernel_display_name": spec.kernel_display_name,
        "python": {"path": str(interp.path), "version": interp.version_text, "source": interp.source,
                   "implementation": interp.implementation, "request": spec.python.text},
        "platform": platform.platform(), "sys_platform": _PLATFORM,
        "installer": {"name": plan.installer, "version": installer_version},
        "index": plan.index.masked(), "spec_hash": spec.content_hash(), "cache_key": plan.cache_key,
        "created_at": _utc_now(), "toolkit": {"version": __version__, "git_sha": toolkit_git_sha()},
        "packages": list(spec.packages), "spec_source": str(Path(os.path.abspath(spec.source))),
        "from_freeze": ({"path": str(Path(os.path.abspath(plan.freeze.path))), "sha256": plan.freeze.sha256}
                        if plan.freeze else None),
    }


def toolkit_git_sha() -> str:
    """The toolkit checkout's commit, or ``unknown`` (not a git checkout, or git not installed)."""
    if not (_TOOLKIT_ROOT / ".git").exists():
        return "unknown"
    try:
        result = proc.run(["git", "-C", _TOOLKIT_ROOT, "rev-parse", "HEAD"], check=False, timeout=30)
    except proc.CommandError:
        return "unknown"
    sha = result.stdout.strip()
    return sha if result.returncode == 0 and sha else "unknown"


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: dict[str, Any], *, indent: int = 2) -> None:
    """Write JSON through a temp file unique to this call and ``os.replace``: readers never see half a file,
    and concurrent writers (two registrations of one kernel) never race on the temp name."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.write(json.dumps(data, indent=indent) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def copy_audit(record: EnvRecord, dest: Path) -> Path:
    """Copy the audit bundle into ``dest`` (created if needed), env.json last; return ``dest``."""
    if dest.exists() and not dest.is_dir():
        raise BadInput(f"--audit-dir {dest}: exists and is not a folder")
    if _norm(dest) == _norm(record.audit_dir):
        return dest
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for src in (record.freeze_file, record.spec_file, record.env_file):
            shutil.copyfile(src, dest / src.name)
    except OSError as exc:
        raise BadInput(f"--audit-dir {dest}: cannot copy the audit bundle ({exc})") from None
    return dest
