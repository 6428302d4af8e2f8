"""Stage venvs: built once, reused while nothing that defines them changed, never trusted when half built.

Layout: ``<venv_root>/<venv_name>/`` with the ``.mlops_kit`` ownership marker written right after the folder is
made, and the audit bundle (:mod:`mlops_kit.envs.audit`); ``env.json`` is written last with ``os.replace`` and is the
completion marker. A venv with the marker but no ``env.json`` (killed mid-install, failed install, power cut) is
rebuilt; a folder without the marker is not ours and is refused, never touched.

Locks: a spec with a lock next to it (``specs/<stage>.lock.txt``, :mod:`mlops_kit.envs.lockfile`) is installed exactly
from it (:mod:`mlops_kit.envs.locked_install`: hashes required, nothing resolved, freeze verified); the lock is
checked (fresh, sealed, well-formed: what ``--check-lock`` checks) before the build lock is taken or anything is
emptied (refused: exit 2, nothing built). Without a lock the spec's packages are resolved at build time, and the
build says it is unpinned. An explicit ``--from-freeze`` wins over a lock. Whatever the install, the venv's
dependency closure is checked after it (``uv pip check`` / ``pip check``): a missing requirement is exit 4.

Cache key: the spec's content hash (packages, Python request, index settings), the resolved interpreter (path
and version), the installer, the ``--from-freeze`` file's content, the lock's sha256 (when installed from one),
the stage and kernel display name (both are recorded in ``env.json`` and the kernelspec). Same key and a passing
:func:`health_check` -> reuse, no install.

Concurrency: a :mod:`filelock` lock per venv name in ``<venv_root>/.locks/``; the "is it already valid?" check
is redone after the lock is taken, so of N builders one builds and the others wait, then reuse. With ``--force``
a waiter reuses a venv whose ``env.json`` was replaced while it waited (another forced run just rebuilt it), so
N forced runs rebuild once. A valid venv whose kernel is missing gets it re-registered without the lock
(the user's own Jupyter folder needs no write access to a machine-wide venv root).

Build order: create, install (:mod:`mlops_kit.envs.installers`, or
:func:`mlops_kit.envs.locked_install.install_from_lock`), the dependency closure check (``uv pip check`` / ``pip
check``), :func:`health_check`, freeze, audit files (the lock's copy too), kernel, ``env.json``: a venv that fails a
check (or its lock's verification) never gets a kernel or an ``env.json``, so it is never used. A ``--from-freeze`` file inside the venv (its own ``audit/pip_freeze.txt``) is
left in place while the folder is emptied, so a failed rebuild never loses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import filelock
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from .. import __version__
from ..core import git, paths
from ..core.console import Echo, progress
from ..core.errors import BadInput, EnvBuildError
from . import audit, installers, kernel, locked_install, lockfile, probe
from .audit import EnvRecord
from .installers import FrozenPins, IndexSettings
from .interpreters import Interpreter
from .spec import StageSpec

MARKER = ".mlops_kit"
LOCK_TIMEOUT = 4 * 3600.0
_HEALTH_PROBE = (
    "import importlib.util as u, json, sys; print(json.dumps({'version': '%d.%d.%d' % sys.version_info[:3], "
    "'missing': [m for m in ('ipykernel', 'pip') if u.find_spec(m) is None]}))"
)


def health_check(venv_dir: Path | str, record: EnvRecord) -> str | None:
    """Why the venv is unusable (its interpreter gone, broken, another version, moved), or ``None`` if usable."""
    venv_dir = Path(venv_dir)
    python = paths.venv_python(venv_dir)
    base = record.python.path
    if not paths.same_path(record.venv_path, venv_dir):
        return f"it was built at {record.venv_path} and moved (venvs are not relocatable)"
    if not python.exists():
        return f"its interpreter {python} is missing (base Python {base} removed?)"
    try:
        info = probe.ask(python, _HEALTH_PROBE, timeout=120)
    except probe.ProbeFailed:
        return f"its interpreter {python} does not run (base Python {base} removed or upgraded?)"
    if info["version"] != record.python.version:
        return (f"its interpreter reports Python {info['version']}, recorded {record.python.version} "
                "(base Python upgraded?)")
    if info["missing"]:
        return f"{' and '.join(info['missing'])} can no longer be imported in it"
    return None


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
    lock: lockfile.Lock | None

    @property
    def kernel_name(self) -> str:
        return kernel.kernel_name_for(self.spec.venv_name)

    @property
    def cache_key(self) -> str:
        payload = {
            "schema": audit.SCHEMA, "spec": self.spec.content_hash(), "stage": self.spec.stage,
            "kernel_display_name": self.spec.kernel_display_name, "installer": self.installer,
            "python": [str(self.interpreter.path), self.interpreter.version_text],
            "freeze": self.freeze.sha256 if self.freeze else None,
            **({"lock": self.lock.sha256} if self.lock else {}),  # absent, not None: unlocked venvs keep their key
        }
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def ensure_env(
    spec: StageSpec, *, venv_root: Path, interpreter: Interpreter, installer: str = "uv", force: bool = False,
    from_freeze: Path | None = None, kernel_scope: str = "user", audit_dir: Path | None = None,
    echo: Echo = progress,
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
        copied = audit.copy_bundle(result.record, Path(audit_dir))
        echo(f"audit bundle copied to {copied}")
    return result


def _make_plan(spec: StageSpec, venv_root: Path, interpreter: Interpreter, installer: str,
               from_freeze: Path | None, kernel_scope: str) -> _Plan:
    if installer not in installers.INSTALLERS:
        raise BadInput(f"--installer {installer!r}: choose one of {', '.join(installers.INSTALLERS)}")
    if kernel_scope not in kernel.SCOPES:
        raise BadInput(f"--kernel-scope {kernel_scope!r}: choose one of {', '.join(kernel.SCOPES)}")
    venv_dir = Path(os.path.abspath(venv_root)) / spec.venv_name
    interp = dataclasses.replace(interpreter, path=Path(os.path.abspath(interpreter.path)))
    freeze = installers.read_freeze(from_freeze) if from_freeze is not None else None
    return _Plan(spec, interp, installer, venv_dir, freeze, kernel_scope, installers.index_settings(spec),
                 lock_for(spec, from_freeze))


def lock_for(spec: StageSpec, from_freeze: Path | None = None) -> lockfile.Lock | None:
    """The spec's lock, checked fresh (stale or malformed: :class:`BadInput` before anything is touched), or
    ``None``: no lock next to the spec, or an explicit ``--from-freeze``, which wins over it."""
    if from_freeze is not None or not lockfile.lock_path(spec.source).exists():
        return None
    return lockfile.check_fresh(spec)


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
    if not (venv_dir / audit.AUDIT / audit.ENV_JSON).is_file():
        return None, f"a previous build did not finish (no {audit.AUDIT}/{audit.ENV_JSON})"
    try:
        record = audit.read_env(venv_dir)
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
        st = (plan.venv_dir / audit.AUDIT / audit.ENV_JSON).stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size, st.st_ino


def _built_meanwhile(plan: _Plan, before: tuple[int, int, int] | None) -> EnvRecord | None:
    """The record of a venv another run finished (same cache key) while we waited for the lock, else ``None``."""
    now = _env_stamp(plan)
    if now is None or now == before:
        return None
    try:
        record = audit.read_env(plan.venv_dir)
    except BadInput:
        return None
    return record if record.cache_key == plan.cache_key else None


def _changes(record: EnvRecord, plan: _Plan) -> str:
    spec, interp, out = plan.spec, plan.interpreter, []
    old, new = set(record.packages), set(spec.packages)
    if old != new:
        diff = [f"+{p}" for p in sorted(new - old)] + [f"-{p}" for p in sorted(old - new)]
        out.append(f"package list changed ({', '.join(diff)})")
    if record.python.request != spec.python.text:
        out.append(f"Python request changed ({record.python.request!r} -> {spec.python.text!r})")
    if (record.python.path, record.python.version) != (str(interp.path), interp.version_text):
        out.append(f"interpreter changed ({record.python.version} at {record.python.path} -> "
                   f"{interp.version_text} at {interp.path})")
    if record.installer.name != plan.installer:
        out.append(f"installer changed ({record.installer.name} -> {plan.installer})")
    recorded_freeze = record.from_freeze.sha256 if record.from_freeze else None
    if recorded_freeze != (plan.freeze.sha256 if plan.freeze else None):
        out.append("no longer built from a freeze file" if plan.freeze is None else
                   f"now built from the freeze file {plan.freeze.path}" if recorded_freeze is None else
                   f"freeze file changed ({plan.freeze.path})")
    old_lock, new_lock = (record.lock.sha256 if record.lock else None), (plan.lock.sha256 if plan.lock else None)
    if old_lock != new_lock:
        out.append(f"lock changed ({plan.lock.path})" if old_lock and plan.lock else
                   f"now installed from the lock {plan.lock.path}" if plan.lock else "no longer installed from a lock")
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
    return EnvResult(plan.venv_dir, paths.venv_python(plan.venv_dir), record, "rebuilt" if existed else "built",
                     reason, kdir)


def _reuse(plan: _Plan, record: EnvRecord, echo: Echo, why: str | None = None) -> EnvResult:
    echo(f"reusing {plan.venv_dir} ({why or 'spec and interpreter unchanged'})")
    kdir = None
    if plan.kernel_scope != "none":
        kdir = kernel.kernel_dir(plan.kernel_name, plan.kernel_scope)
        if not _kernel_ok(plan):
            echo(f"kernel {plan.kernel_name!r} missing or outdated in {plan.kernel_scope} scope: registering it")
            kdir = _register(plan)
    return EnvResult(plan.venv_dir, paths.venv_python(plan.venv_dir), record, "reused", None, kdir)


def _register(plan: _Plan) -> Path | None:
    return kernel.register_kernel(plan.venv_dir, name=plan.kernel_name,
                                  display_name=plan.spec.kernel_display_name, scope=plan.kernel_scope)


# ---------------------------------------------------------------------------------------------------- build


def _build(plan: _Plan, echo: Echo) -> tuple[EnvRecord, Path | None]:
    """Marker first, env.json last; any failure leaves a marked venv without env.json (rebuilt next time)."""
    venv_dir = plan.venv_dir
    _make_marked_dir(venv_dir, keep=plan.freeze.path if plan.freeze else None)
    env = installers.installer_env(plan.installer, plan.index)
    try:
        installer_version = installers.create_venv(venv_dir, plan.interpreter.path, prompt=plan.spec.venv_name,
                                                   installer=plan.installer, env=env, echo=echo,
                                                   seed=plan.lock is None)
        installed = _install(plan, env, echo)
        _check_closure(plan, env)
        record = _record(plan, installer_version, installed)
        reason = health_check(venv_dir, record)  # before the kernel: never register a kernel for a broken venv
        if reason:
            raise EnvBuildError(f"{venv_dir}: built but unusable: {reason}")
        freeze = installed.freeze if installed else installers.freeze(venv_dir, installer=plan.installer, env=env)
    except EnvBuildError as exc:
        raise EnvBuildError(f"{exc} ({venv_dir} is left marked incomplete and will be rebuilt on the next run)") \
            from None
    kdir = _register(plan)
    audit.write_bundle(record, freeze=freeze, spec_text=plan.spec.text,
                       lock_data=plan.lock.data if plan.lock else None)
    return record, kdir


def _install(plan: _Plan, env: dict[str, str], echo: Echo) -> locked_install.Installed | None:
    """Exactly the lock (verified) when the spec has one; else resolve the spec's packages (or the freeze file's
    pins) as before locks existed, saying that the build is not pinned and how to pin it."""
    if plan.lock is not None:
        return locked_install.install_from_lock(plan.spec, plan.venv_dir, lock=plan.lock, installer=plan.installer,
                                                 index=plan.index, echo=echo)
    lock = lockfile.lock_path(plan.spec.source)
    if plan.freeze is None:
        echo(f"unpinned build ({plan.spec.source} has no lock: versions are resolved today); pin it with: "
             f"{lockfile.refresh_command(plan.spec.source)}")
    elif lock.exists():
        echo(f"--from-freeze {plan.freeze.path} wins over the lock {lock}: installing the freeze file's pins")
    requirements = _requirements(plan, echo)
    echo(f"installing {len(requirements)} requirement(s) with {plan.installer}{plan.index.describe()}")
    installers.install(plan.venv_dir, requirements, installer=plan.installer, env=env, echo=echo)
    return None


def _check_closure(plan: _Plan, env: dict[str, str]) -> None:
    """After any install (from a lock, resolved, from a freeze file): every installed package's requirements are
    installed too, in versions it accepts; else :class:`EnvBuildError` (a lock missing a package that is needed,
    a ``--no-deps`` install of an incomplete list). A venv that fails it never gets a kernel or env.json."""
    broken = installers.broken_requirements(plan.venv_dir, installer=plan.installer, env=env)
    if not broken:
        return
    shown = "; ".join(broken[:5]) + (f" (and {len(broken) - 5} more)" if len(broken) > 5 else "")
    fix = (f"; the lock {plan.lock.path} is not whole: re-lock with: "
           f"{lockfile.refresh_command(plan.spec.source)}") if plan.lock else ""
    raise EnvBuildError(f"{plan.venv_dir}: installed packages miss requirements: {shown}{fix}")


def _requirements(plan: _Plan, echo: Echo) -> list[str]:
    """The spec's packages (or the freeze file's pins) plus ipykernel, which every stage kernel needs."""
    reqs = list(plan.freeze.requirements if plan.freeze else plan.spec.packages)
    names = {canonicalize_name(Requirement(r).name) for r in reqs}
    if plan.freeze:
        missing = [p for p in plan.spec.packages if canonicalize_name(Requirement(p).name) not in names]
        if missing:
            echo(f"warning: {plan.freeze.path} does not pin {', '.join(missing)} from the spec; installing the "
                 "freeze file only")
    if "ipykernel" not in names:
        reqs.append("ipykernel")  # not pinned: the resolver picks one that supports this Python (3.8 included)
    return reqs


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
    kept = {paths.norm(venv_dir / MARKER)} | ({paths.norm(keep)} if keep is not None else set())
    try:
        (venv_dir / audit.AUDIT / audit.ENV_JSON).unlink(missing_ok=True)
        _delete_children(venv_dir, kept)
    except OSError as exc:
        raise EnvBuildError(f"cannot delete {venv_dir} for the rebuild ({exc}); close Jupyter kernels or "
                            "programs using it and retry") from None


def _delete_children(folder: Path, kept: set[str]) -> None:
    for child in folder.iterdir():
        name = paths.norm(child)
        if name in kept:
            continue
        if child.is_dir() and not child.is_symlink():
            if any(k.startswith(name + os.sep) for k in kept):
                _delete_children(child, kept)
            else:
                paths.rmtree(child)
        else:
            child.unlink()


def _record(plan: _Plan, installer_version: str, installed: locked_install.Installed | None) -> EnvRecord:
    spec, interp = plan.spec, plan.interpreter
    return EnvRecord(
        stage=spec.stage, venv_name=spec.venv_name, venv_path=str(plan.venv_dir),
        venv_python=str(paths.venv_python(plan.venv_dir)), kernel_name=plan.kernel_name,
        kernel_display_name=spec.kernel_display_name,
        python=audit.PythonInfo(path=str(interp.path), version=interp.version_text, source=interp.source,
                                implementation=interp.implementation, request=spec.python.text,
                                managed=interp.managed),
        platform=platform.platform(), sys_platform=paths._PLATFORM,
        installer=audit.InstallerInfo(plan.installer, installer_version), index=plan.index.masked(),
        spec_hash=spec.content_hash(), cache_key=plan.cache_key, created_at=_utc_now(),
        toolkit=audit.ToolkitInfo(__version__, git.toolkit_sha()), packages=list(spec.packages),
        spec_source=str(Path(os.path.abspath(spec.source))),
        from_freeze=(audit.FreezeSource(str(Path(os.path.abspath(plan.freeze.path))), plan.freeze.sha256)
                     if plan.freeze else None),
        lock=_lock_info(installed), venv_dir=plan.venv_dir,
    )


def _lock_info(installed: locked_install.Installed | None) -> audit.LockInfo | None:
    if installed is None:
        return None
    lock = installed.lock
    return audit.LockInfo(path=str(Path(os.path.abspath(lock.path))), sha256=lock.sha256, python=lock.python,
                          spec_hash=lock.spec_hash, resolved_at=lock.header["resolved-at"], pins=len(installed.pins),
                          removed=list(installed.removed))


def _utc_now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
