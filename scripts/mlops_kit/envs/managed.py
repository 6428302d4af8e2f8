"""The last step of finding a stage's Python: download a CPython build through uv into the toolkit's folder.

Order (:func:`find_or_download`): ``--python`` -> installed interpreters -> uv-managed ones already in the folder
(no network; all three in :mod:`mlops_kit.envs.interpreters`) -> **download**, when the policy allows it.

* **Policy** (:func:`download_policy`): ``--python-downloads {auto,never}``, else ``MLOPS_PYTHON_DOWNLOADS`` (for GoCD
  agents), else uv's own ``UV_PYTHON_DOWNLOADS`` (``never`` and ``manual`` both mean: not automatically), else
  ``auto``. Off, or a download that fails: :class:`PythonNotFound` (exit 3), one line naming the request, what was
  searched and the two ways out (install it; allow downloads or set a mirror). Never a uv traceback, never exit 4.
* **Folder** (:func:`pythons_dir`): ``UV_PYTHON_INSTALL_DIR`` when set, else ``pythons`` next to the venv root
  (``C:\\ml_venvs`` -> ``C:\\pythons``; the per-user default -> ``%LOCALAPPDATA%\\mlops_kit\\pythons``), so a
  service account without a roaming profile can write it and the venvs that use it live beside it. One rule for
  every account: a Windows service account's default venv root is ``%ProgramData%\\mlops_kit\\venvs``, so its
  Pythons default to ``%ProgramData%\\mlops_kit\\pythons`` (never under ``system32``).
* **Download**: ``uv python list <request> --only-downloads --output-format json`` names the build the request
  gets (newest final CPython patch uv's download list offers: its built-in one, or ``UV_PYTHON_DOWNLOADS_JSON_URL``;
  from ``UV_PYTHON_INSTALL_MIRROR`` when set); ``uv python install --no-bin --no-registry --install-dir <folder>
  <key>`` downloads it, checks its sha256 against that list and extracts it. Nothing is written to the user's PATH
  folders (``--no-bin``) or the Windows registry (``--no-registry``); settings that would contradict that, or the
  policy decided here, are not passed to uv. The archive passes through ``UV_PYTHON_CACHE_DIR`` (a folder of ours,
  removed after; or the user's own, left as is) so its sha256 is recorded: ``<build>/MLOPS_KIT_DOWNLOAD.json``,
  written last, which env.json then carries (``python.managed``).
* **Concurrency**: a :mod:`filelock` lock per build in ``<folder>/.locks/``; the folder is searched again once the
  lock is held, so of two builds needing the same missing Python one downloads and the other reuses it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Mapping

import filelock

from ..core import paths, proc
from ..core.console import Echo
from ..core.errors import BadInput, PythonNotFound
from ..core.redact import redact
from . import interpreters
from .installers import uv_bin
from .interpreters import Interpreter, NoMatchingPython
from .spec import PythonRequest

Downloads = Literal["auto", "never"]
CHOICES: tuple[Downloads, ...] = ("auto", "never")
ENV_VAR = "MLOPS_PYTHON_DOWNLOADS"
FOLDER_NAME = "pythons"
LOCK_TIMEOUT = 3600.0
_LIST_TIMEOUT = 300.0
# uv's own spellings of UV_PYTHON_DOWNLOADS (crates/uv-python/src/discovery.rs, PythonDownloads::from_str)
_UV_ON = ("auto", "automatic", "true", "1")
_UV_OFF = ("manual", "never", "false", "0")
# Not passed to our uv calls: the policy is decided here, the folder and the target are given explicitly, and
# nothing may go to PATH folders or the registry.
_UV_DROPPED = ("UV_PYTHON_DOWNLOADS", "UV_PYTHON", "UV_PYTHON_INSTALL_DIR", "UV_PYTHON_PREFERENCE", "UV_MANAGED_PYTHON",
               "UV_NO_MANAGED_PYTHON", "UV_PYTHON_INSTALL_BIN", "UV_PYTHON_BIN_DIR", "UV_PYTHON_INSTALL_REGISTRY",
               "UV_PYTHON_NO_REGISTRY")
_VERSION = re.compile(r"^\d+\.\d+\.\d+$")  # a final release (uv lists 3.16.0a2 too)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
ALLOW = ("or allow downloads: --python-downloads auto or MLOPS_PYTHON_DOWNLOADS=auto (then, without the internet, a "
         "mirror: UV_PYTHON_INSTALL_MIRROR or UV_PYTHON_DOWNLOADS_JSON_URL)")
FIX = ("or let uv reach a copy of it: a mirror (UV_PYTHON_INSTALL_MIRROR, or a downloads list of your own: "
       "UV_PYTHON_DOWNLOADS_JSON_URL) or a proxy (HTTPS_PROXY)")


@dataclass(frozen=True)
class DownloadPolicy:
    """Whether a missing Python may be downloaded, and which setting decided (shown when it may not)."""

    allowed: bool
    why: str


@dataclass(frozen=True)
class Build:
    """One CPython build uv's download list offers: its key (``cpython-3.10.13-linux-x86_64-gnu``) and URL."""

    key: str
    version: str
    url: str


def download_policy(flag: str | None = None, environ: Mapping[str, str] | None = None) -> DownloadPolicy:
    """``--python-downloads``, else ``MLOPS_PYTHON_DOWNLOADS``, else ``UV_PYTHON_DOWNLOADS``, else auto; a value
    none of them takes is :class:`BadInput` naming the setting (exit 2, before anything is built)."""
    env = os.environ if environ is None else environ
    if flag is not None:
        if flag not in CHOICES:
            raise BadInput(f"--python-downloads {flag!r}: choose one of {', '.join(CHOICES)}")
        return DownloadPolicy(flag == "auto", f"--python-downloads {flag}")
    ours = env.get(ENV_VAR, "").strip()
    if ours:
        if ours.lower() not in CHOICES:
            raise BadInput(f"{ENV_VAR}={ours!r}: choose one of {', '.join(CHOICES)}")
        return DownloadPolicy(ours.lower() == "auto", f"{ENV_VAR}={ours}")
    uv_value = env.get("UV_PYTHON_DOWNLOADS", "").strip()
    if uv_value:
        if uv_value.lower() not in _UV_ON + _UV_OFF:
            raise BadInput(f"UV_PYTHON_DOWNLOADS={uv_value!r}: not a value uv takes (automatic, manual, never)")
        return DownloadPolicy(uv_value.lower() in _UV_ON, f"UV_PYTHON_DOWNLOADS={uv_value}")
    return DownloadPolicy(True, "the default (auto)")


def pythons_dir(venv_root: Path | str) -> Path:
    """The toolkit's folder of uv-managed Pythons: ``UV_PYTHON_INSTALL_DIR``, else ``pythons`` beside the venv root
    (the one rule, so builds, replays and the doctor agree whatever the account)."""
    named = os.environ.get("UV_PYTHON_INSTALL_DIR", "").strip()
    if named:
        return Path(os.path.abspath(named))
    return Path(os.path.abspath(venv_root)).parent / FOLDER_NAME


def find_or_download(request: PythonRequest, *, folder: Path, policy: DownloadPolicy, explicit: Path | None = None,
                     echo: Echo) -> Interpreter:
    """The interpreter for ``request``: found (explicit, installed, managed on disk), else downloaded into
    ``folder`` when ``policy`` allows; else :class:`PythonNotFound` with the ways out."""
    try:
        return interpreters.find_python(request, explicit=explicit, managed=folder)
    except NoMatchingPython as missing:
        if not policy.allowed:
            raise PythonNotFound(f"{missing.what}, and downloads are off ({policy.why}); {missing.install_hint}, "
                                 f"{ALLOW}") from None
        return download(request, folder=folder, missing=missing, echo=echo)


# ------------------------------------------------------------------------------------------------ download


def download(request: PythonRequest, *, folder: Path, missing: NoMatchingPython, echo: Echo) -> Interpreter:
    """Download the build uv offers for ``request`` into ``folder`` (once, whoever else asks at the same time)."""
    env = uv_environment()
    build = offered_build(request, env, missing)
    with _download_lock(folder, build.key, echo):
        on_disk = _on_disk(request, folder)
        if on_disk is not None:
            echo(f"Python {on_disk.version_text} ({build.key}) is in {folder} now (downloaded by another run "
                 "meanwhile): reusing it")
            return on_disk
        started = time.monotonic()
        echo(f"Python {request.text!r} is not installed: downloading {build.key} through uv from "
             f"{redact(build.url)} into {folder} (once; later builds reuse it)")
        _install(build, folder, env, missing, echo)
    found = _on_disk(request, folder)
    if found is None or found.managed is None or found.managed.key != build.key:
        raise PythonNotFound(f"{missing.what}; uv installed {build.key} into {folder} but it does not run as "
                             f"Python {build.version}; remove {folder / build.key} and try again, {missing.install_hint}")
    echo(f"downloaded Python {found.version_text} ({build.key}, sha256 {found.managed.sha256 or 'unknown'}) in "
         f"{time.monotonic() - started:.1f}s: {found.path}")
    return dataclasses.replace(found, downloaded=True)


def uv_environment() -> dict[str, str]:
    """Our environment for uv's Python commands, without the settings this module decides itself."""
    return {k: v for k, v in os.environ.items() if k.upper() not in _UV_DROPPED}


def offered_build(request: PythonRequest, env: Mapping[str, str], missing: NoMatchingPython) -> Build:
    """The newest final CPython build of uv's download list that ``request`` accepts, for this platform."""
    result = _uv(["python", "list", _uv_request(request), "--only-downloads", "--output-format", "json"], env)
    if result.returncode != 0:
        raise PythonNotFound(f"{missing.what}, and uv could not read its list of Python downloads "
                             f"({uv_error(result)}); {missing.install_hint}, {FIX}")
    try:
        listed = json.loads(result.stdout or "[]")
        builds = [Build(str(d["key"]), str(d["version"]), str(d["url"])) for d in listed
                  if d.get("implementation") == "cpython" and d.get("variant", "default") == "default"
                  and d.get("os") == interpreters.uv_os() and d.get("url")]
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise PythonNotFound(f"{missing.what}, and uv's list of Python downloads was not understood ({exc}); "
                             f"{missing.install_hint}") from None
    for build in builds:
        if _VERSION.match(build.version) and request.accepts(_version_tuple(build.version)):
            return build
    source = _list_source(env)
    raise PythonNotFound(f"{missing.what}, and uv's download list ({source}) has no CPython build matching "
                         f"{request.text!r} for this platform; {missing.install_hint}, {FIX}")


def _install(build: Build, folder: Path, env: dict[str, str], missing: NoMatchingPython, echo: Echo) -> None:
    """``uv python install`` of exactly ``build`` (output streamed), then its download record, written last. The
    archive copy lives in ``.downloads/<build>`` (ours alone under the build's lock: a killed run's is cleared)."""
    own_cache = not env.get("UV_PYTHON_CACHE_DIR", "").strip()
    archives = folder / ".downloads" / build.key if own_cache else Path(env["UV_PYTHON_CACHE_DIR"])
    if own_cache:
        shutil.rmtree(archives, ignore_errors=True)
    try:
        result = _uv(["python", "install", "--no-bin", "--no-registry", *_reinstall(folder / build.key, echo),
                      "--install-dir", str(folder), build.key], {**env, "UV_PYTHON_CACHE_DIR": str(archives)},
                     echo=echo)
        if result.returncode != 0:
            raise PythonNotFound(f"{missing.what}, and downloading {build.key} through uv failed ({uv_error(result)});"
                                 f" {missing.install_hint}, {FIX}")
        _write_record(folder / build.key, build, _archive(archives, build))
    finally:
        if own_cache:
            shutil.rmtree(archives, ignore_errors=True)
            with contextlib.suppress(OSError):
                archives.parent.rmdir()  # .downloads, once no other download uses it


def _reinstall(target: Path, echo: Echo) -> list[str]:
    """``--reinstall`` for a build of ours whose interpreter no longer runs (uv would call it installed); a broken
    build the toolkit did not download is not touched: the user is asked to remove it."""
    if not target.exists():
        return []
    if not (target / interpreters.MANAGED_RECORD).is_file():
        raise PythonNotFound(f"{target} exists but its interpreter does not run, and the toolkit did not download it; "
                             "remove it (or run 'uv python install --reinstall') and try again")
    echo(f"{target} is the toolkit's download but its interpreter does not run: installing it again")
    return ["--reinstall"]


def _archive(archives: Path, build: Build) -> Path | None:
    """The archive uv kept in ``UV_PYTHON_CACHE_DIR``: ``<first 9 hex of the published sha256, or none>-<file>``."""
    name = build.url.rsplit("/", 1)[-1].replace("%2B", "-")
    found = sorted(archives.glob(f"*-{name}")) if archives.is_dir() else []
    return found[0] if found else None


def _write_record(target: Path, build: Build, archive: Path | None) -> None:
    if not target.is_dir():
        return
    sha256 = paths.file_sha256(archive)[0] if archive is not None else None
    verified = archive is not None and sha256 is not None and not archive.name.startswith("none-") \
        and sha256.startswith(archive.name.split("-", 1)[0])
    record = {"key": build.key, "url": redact(build.url), "sha256": sha256, "verified": verified,
              "downloaded_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "by": "mlops_kit"}
    paths.write_json_atomic(target / interpreters.MANAGED_RECORD, record)


@contextlib.contextmanager
def _download_lock(folder: Path, key: str, echo: Echo) -> Iterator[None]:
    """Hold ``<folder>/.locks/<key>.lock``; say so when another process holds it."""
    locks = folder / ".locks"
    try:
        locks.mkdir(parents=True, exist_ok=True)
        lock = filelock.FileLock(str(locks / f"{key}.lock"))
        try:
            lock.acquire(blocking=False)
        except filelock.Timeout:
            echo(f"waiting for another run downloading {key} into {folder}")
            lock.acquire(timeout=LOCK_TIMEOUT)
    except filelock.Timeout:
        raise PythonNotFound(f"gave up after {LOCK_TIMEOUT:.0f}s waiting for another download of {key} "
                             f"(lock {locks / (key + '.lock')})") from None
    except OSError as exc:
        raise PythonNotFound(f"cannot use the folder of managed Pythons {folder} ({exc.strerror or exc}); make it "
                             "writable for this account or set UV_PYTHON_INSTALL_DIR") from None
    try:
        yield
    finally:
        lock.release()


# ------------------------------------------------------------------------------------------------ helpers


def _uv(args: list[str], env: Mapping[str, str], *, echo: Echo | None = None) -> proc.Result:
    """Run uv (no shell; output streamed to ``echo`` when given, else captured); a uv that cannot start, or a
    listing that hangs, is a result like any failure."""
    cmd = [uv_bin(), *args]
    if echo is None:
        try:
            return proc.run(cmd, env=env, check=False, timeout=_LIST_TIMEOUT)
        except proc.CommandError as exc:  # timed out
            return exc.result
    # each line marked as uv's: its own "error: ..." lines are not the toolkit's one error line
    return proc.run(cmd, env=env, check=False, stream=True, echo=lambda line: echo(f"uv: {line.rstrip()}"))


def uv_error(result: proc.Result) -> str:
    """uv's error and its causes as one line (``error: ...`` then ``cause: ...`` lines; a hash mismatch's
    expected/computed values joined), credentials in URLs masked."""
    text = _ANSI.sub("", result.stderr or result.stdout or "")
    lines, keep = [], False
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith(("error:", "cause:")):
            keep = True
            lines.append(line.split(":", 1)[1].strip())
        elif keep and line and not line.startswith(("hint:", "warning:")):
            lines[-1] += f" {line}"
    message = ": ".join(lines) or next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()),
                                       f"exit code {result.returncode}")
    message = re.sub(r"Expected: (\w+) Computed: (\w+)", r"expected \1, computed \2", " ".join(message.split()))
    return redact(message if len(message) <= 400 else message[:397] + "...")


def _uv_request(request: PythonRequest) -> str:
    """uv's request syntax for a CPython: ``cpython@3.10``, ``cpython@3.10.13``, ``cpython>=3.10,<3.13``."""
    text = request.text.replace(" ", "")
    return f"cpython@{text}" if re.match(r"^\d", text) else f"cpython{text}"


def _version_tuple(text: str) -> tuple[int, int, int]:
    major, minor, patch = (int(part) for part in text.split("."))
    return major, minor, patch


def _on_disk(request: PythonRequest, folder: Path) -> Interpreter | None:
    """A managed build in ``folder`` satisfying ``request`` now (another run may have just downloaded one)."""
    try:
        return interpreters.find_python(request, managed=folder)
    except NoMatchingPython:
        return None


def _list_source(env: Mapping[str, str]) -> str:
    named = env.get("UV_PYTHON_DOWNLOADS_JSON_URL", "").strip()
    return f"UV_PYTHON_DOWNLOADS_JSON_URL={redact(named)}" if named else f"the one built into uv {_uv_version()}"


def _uv_version() -> str:
    try:
        out = proc.run([uv_bin(), "--version"], check=False, timeout=30).stdout.split()
    except proc.CommandError:
        return ""
    return out[1] if len(out) > 1 else ""

