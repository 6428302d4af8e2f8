"""A fake ``uv`` for the Windows branch of managed Pythons, run for real on Linux.

Real uv on Linux only installs Linux builds, so the Windows layout is faked from uv's documented behaviour
(``crates/uv-python/src/managed.rs``, ``downloads.rs``, ``commands/python/list.rs``):

* ``uv python list <request> --only-downloads --output-format json``: a JSON list of ``{"key", "version", "url",
  "os", "variant", "implementation", ...}``, newest first; keys ``cpython-3.10.13-windows-x86_64-none``.
* ``uv python install --no-bin --no-registry --install-dir DIR KEY``: the archive (python-build-standalone's
  Windows ``install_only``: ``python.exe`` at the archive's top, ``Lib\\``, ``DLLs\\``, ``Scripts\\``, no ``bin``)
  extracted to ``DIR\\KEY``, a ``BUILD`` file with the release tag, the minor-version link ``DIR\\cpython-3.10-...``;
  with ``UV_PYTHON_CACHE_DIR`` set the archive is kept there as ``<sha256[:9]>-<file name>``. Here ``python.exe``
  is a symlink to a real pyenv interpreter, so verification runs for real. ``fail`` makes it exit 1 with uv's
  error lines for a download that failed.

Every call is logged (argv plus the UV_* variables it was given) for assertions.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

_SCRIPT = r'''#!{python}
"""Fake uv (see tests/fakes/uv.py)."""
import hashlib, json, os, sys
from pathlib import Path

CATALOG = {catalog!r}  # "3.10.13" -> real interpreter
LOG = {log!r}
FAIL = {fail!r}
TAG = "20260101"
ARCHIVE = b"fake python-build-standalone archive\n"


def key(version):
    return "cpython-" + version + "-windows-x86_64-none"


def url(version):
    return "https://mirror.example/cpython-" + version + "%2B" + TAG + "-x86_64-pc-windows-msvc-install_only.tar.gz"


def listing(request):
    wanted = request.split("@", 1)[1] if "@" in request else ""
    out = []
    for version in sorted(CATALOG, key=lambda v: tuple(map(int, v.split("."))), reverse=True):
        if wanted and version != wanted and not version.startswith(wanted + "."):
            continue
        out.append({{"key": key(version), "version": version, "url": url(version), "os": "windows",
                     "variant": "default", "implementation": "cpython", "arch": "x86_64", "libc": "none",
                     "path": None, "symlink": None}})
    print(json.dumps(out))
    return 0


def install(args):
    folder = Path(args[args.index("--install-dir") + 1])
    target = args[-1]
    version = target.split("-")[1]
    if FAIL:
        print("error: Failed to install " + target, file=sys.stderr)
        print("  cause: Failed to download `" + url(version) + "`", file=sys.stderr)
        print("  cause: client error (Connect)", file=sys.stderr)
        return 1
    cache = os.environ.get("UV_PYTHON_CACHE_DIR")
    if cache:
        Path(cache).mkdir(parents=True, exist_ok=True)
        name = url(version).rsplit("/", 1)[1].replace("%2B", "-")
        (Path(cache) / (hashlib.sha256(ARCHIVE).hexdigest()[:9] + "-" + name)).write_bytes(ARCHIVE)
    home = folder / target
    home.mkdir(parents=True, exist_ok=True)
    for sub in ("Lib", "DLLs", "Scripts"):
        (home / sub).mkdir(exist_ok=True)
    if not (home / "python.exe").exists():
        (home / "python.exe").symlink_to(CATALOG[version])
    (home / "BUILD").write_text(TAG)
    link = folder / ("cpython-" + ".".join(version.split(".")[:2]) + "-windows-x86_64-none")
    if not link.exists():
        link.symlink_to(home, target_is_directory=True)
    print("Installed Python " + version + " in 0.01s", file=sys.stderr)
    print(" + " + target, file=sys.stderr)
    return 0


with open(LOG, "a", encoding="utf-8") as fh:
    fh.write(json.dumps({{"argv": sys.argv[1:], "uv_env": {{k: v for k, v in os.environ.items()
                                                            if k.startswith("UV_")}}}}) + "\n")
args = sys.argv[1:]
if args[:2] == ["python", "list"]:
    sys.exit(listing(args[2]))
if args[:2] == ["python", "install"]:
    sys.exit(install(args))
if args == ["--version"]:
    print("uv 0.13.9 (fake)")
    sys.exit(0)
print("fake uv: not implemented: " + " ".join(args), file=sys.stderr)
sys.exit(2)
'''

ARCHIVE_SHA256 = hashlib.sha256(b"fake python-build-standalone archive\n").hexdigest()


def make_uv(path: Path, catalog: dict[str, str], log: Path, *, fail: bool = False) -> Path:
    """Write the fake uv at ``path``; ``catalog`` maps full versions to real interpreters."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_SCRIPT.format(python=sys.executable, catalog=catalog, log=os.fspath(log), fail=fail),
                    encoding="utf-8")
    path.chmod(0o755)
    return path


def calls(log: Path) -> list[dict]:
    """Every call: ``{"argv": [...], "uv_env": {UV_*: value}}``, in order."""
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
