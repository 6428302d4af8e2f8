"""A local stand-in for the python-build-standalone host, driving uv's real download code offline.

CI cannot reach the host uv downloads Pythons from, so this packages pyenv's CPythons as python-build-standalone
``install_only`` archives (a top folder ``python/`` holding ``bin/``, ``lib/``, ``include/``) and writes a
downloads list naming them (uv's ``download-metadata.json`` format), for ``UV_PYTHON_DOWNLOADS_JSON_URL``. uv then
installs them exactly as it installs a real download: sha256 checked while extracting, ``BUILD`` file, sysconfig
patched, minor-version link.

The archives really work once extracted anywhere: pyenv builds a shared ``libpython`` and links its executable with
an absolute RUNPATH into its own ``versions/<v>/lib``; the archive's ``bin/python3.X`` gets python-build-standalone's
``$ORIGIN/../lib`` instead (the ELF string rewritten in place, NUL-padded: it is shorter), so the extracted Python
loads its own libpython, not pyenv's. ``_sysconfigdata_*.py`` gets pyenv's prefix replaced by ``/install``, the
placeholder python-build-standalone ships and uv rewrites to the real folder at install. Left out: site-packages
(uv seeds venvs itself), ``test/``, ``config-3.X-*`` (the static library) and optimized ``.pyc`` files.

Archives are built once and kept in ``.cache/managed-python-archives`` (git-ignored), keyed by version, by the pyenv
build's identity and by :data:`BUILDER`; a test session only writes its downloads list.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from helpers import REPO_ROOT, TOOLKIT_PYTHON, WINDOWS, pyenv_pythons
from mlops_kit.core.paths import file_sha256

BUILDER = "2"  # bump when the archive layout below changes: cached archives are rebuilt
BUILD_TAG = "mlopskit2"  # the archives' "release" (uv writes it to the installation's BUILD file)
ARCHIVES = REPO_ROOT / ".cache" / "managed-python-archives"
MIRRORED = ("3.10", "3.11", "3.12")  # the example's stage Pythons


@dataclass(frozen=True)
class Mirror:
    """The session's fake download host: ``json_url`` for UV_PYTHON_DOWNLOADS_JSON_URL; per minor, uv's key of the
    build it offers, the archive and its sha256."""

    json_url: str
    json_file: Path
    keys: dict[str, str]
    archives: dict[str, Path]
    sha256: dict[str, str]

    def version(self, minor: str) -> str:
        return self.keys[minor].split("-")[1]


def key_for(version: str) -> str:
    return f"cpython-{version}-linux-x86_64-gnu"


def build_archive(prefix: Path, dest: Path) -> Path:
    """``dest/cpython-<v>-<tag>-x86_64-unknown-linux-gnu-install_only.tar.gz`` from the pyenv CPython ``prefix``."""
    version = prefix.name
    minor = ".".join(version.split(".")[:2])
    stamp = (prefix / "bin" / f"python{minor}").stat().st_mtime_ns
    name = f"cpython-{version}-{BUILD_TAG}-{stamp}-b{BUILDER}-x86_64-unknown-linux-gnu-install_only.tar.gz"
    target = dest / name
    if target.is_file():
        return target
    dest.mkdir(parents=True, exist_ok=True)
    partial = dest / f".{name}.{os.getpid()}.tmp"
    with tarfile.open(partial, "w:gz", compresslevel=1) as tar:
        _add_stdlib(tar, prefix / "lib" / f"python{minor}", f"python/lib/python{minor}", str(prefix))
        for lib in sorted((prefix / "lib").glob("libpython*")):
            tar.add(lib, f"python/lib/{lib.name}", recursive=False)
        tar.add(prefix / "include", "python/include")
        _add_bytes(tar, f"python/bin/python{minor}", _relocatable(prefix, minor), 0o755)
        for alias in ("python3", "python"):
            _add_link(tar, f"python/bin/{alias}", f"python{minor}")
    os.replace(partial, target)
    return target


def _add_stdlib(tar: tarfile.TarFile, lib: Path, arcname: str, old_prefix: str) -> None:
    for root, dirs, files in os.walk(lib):
        rel = Path(root).relative_to(lib)
        if rel == Path("."):
            dirs[:] = [d for d in dirs if d not in ("test", "site-packages") and not d.startswith("config-")]
        for name in sorted(files):
            if ".opt-" in name or (rel == Path(".") and name.startswith("_sysconfigdata_")):
                continue
            tar.add(Path(root) / name, f"{arcname}/{(rel / name).as_posix()}", recursive=False)
    for data in sorted(lib.glob("_sysconfigdata_*.py")):  # pyenv's prefix -> the placeholder uv rewrites
        text = data.read_text(encoding="utf-8").replace(old_prefix, "/install")
        _add_bytes(tar, f"{arcname}/{data.name}", text.encode("utf-8"), 0o644)
    folder = tarfile.TarInfo(f"{arcname}/site-packages")
    folder.type, folder.mode = tarfile.DIRTYPE, 0o755
    tar.addfile(folder)


def _relocatable(prefix: Path, minor: str) -> bytes:
    """The executable with its RUNPATH pointed at ``$ORIGIN/../lib`` (a static build has none: left as is)."""
    data = (prefix / "bin" / f"python{minor}").read_bytes()
    old = str(prefix / "lib").encode() + b"\0"
    new = b"$ORIGIN/../lib"
    if data.count(old) == 1:
        data = data.replace(old, new + b"\0" * (len(old) - len(new)))
    return data


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), mode, int(time.time())
    tar.addfile(info, io.BytesIO(data))


def _add_link(tar: tarfile.TarFile, name: str, target: str) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = tarfile.SYMTYPE, target, 0o777
    tar.addfile(info)


def sha256_of(path: Path) -> str:
    """The toolkit's own reader's digest."""
    return file_sha256(path)[0]


def write_downloads_json(path: Path, archives: dict[str, Path], *, sha256: dict[str, str | None] | None = None,
                         urls: dict[str, str] | None = None) -> Path:
    """uv's downloads list naming ``archives`` ({"3.10.13": archive}); ``sha256``/``urls`` override entries."""
    entries = {}
    for version, archive in archives.items():
        major, minor, patch = (int(p) for p in version.split("."))
        entries[key_for(version)] = {
            "name": "cpython", "arch": {"family": "x86_64", "variant": None}, "os": "linux", "libc": "gnu",
            "major": major, "minor": minor, "patch": patch, "prerelease": "",
            "url": (urls or {}).get(version, archive.resolve().as_uri()),
            "sha256": (sha256 or {}).get(version, sha256_of(archive)), "variant": None, "build": BUILD_TAG,
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries, indent=1), encoding="utf-8")
    return path


def make_mirror(folder: Path) -> Mirror:
    """Archives of the pyenv CPythons of :data:`MIRRORED` (cached) and a downloads list in ``folder``."""
    found = pyenv_pythons()
    missing = [m for m in MIRRORED if m not in found]
    assert not missing, f"the fake download host needs pyenv CPythons {missing}"
    archives = {found[m].parent.parent.name: build_archive(found[m].parent.parent, ARCHIVES) for m in MIRRORED}
    listing = write_downloads_json(folder / "downloads.json", archives)
    keys = {".".join(v.split(".")[:2]): key_for(v) for v in archives}
    return Mirror(listing.resolve().as_uri(), listing, keys,
                  {".".join(v.split(".")[:2]): a for v, a in archives.items()},
                  {".".join(v.split(".")[:2]): sha256_of(a) for v, a in archives.items()})


@pytest.fixture(scope="session")
def python_mirror(tmp_path_factory: pytest.TempPathFactory) -> Mirror:
    """The session's fake download host (archives built once, then cached across sessions)."""
    if WINDOWS:
        pytest.skip("the archives are built from pyenv's Linux CPythons (ELF); Windows builds are faked in "
                    "tests/fakes/uv.py")
    return make_mirror(tmp_path_factory.mktemp("python-mirror"))


def tools_only_path(folder: Path, *tools: str) -> str:
    """A PATH folder with only ``tools`` (symlinks to this machine's, e.g. git) and no Python at all."""
    folder.mkdir(parents=True, exist_ok=True)
    for tool in tools:
        found = shutil.which(tool)
        if found and not (folder / tool).exists():
            (folder / tool).symlink_to(found)
    return str(folder)


def one_python_machine(tmp: Path, mirror: Mirror, **extra: str) -> dict[str, str]:
    """The environment of a machine whose only Python is the toolkit's, reachable as ``python`` only (as a GoCD
    agent's PATH has it): no pyenv, no ``python3.X`` on PATH, uv's downloads going to the fake host."""
    env = {k: v for k, v in os.environ.items()}
    env["PATH"] = os.pathsep.join([str(toolkit_view(tmp / "toolkit") / "bin"), tools_only_path(tmp / "tools", "git")])
    env["PYENV_ROOT"] = str(tmp / "no-pyenv")
    env["UV_PYTHON_DOWNLOADS_JSON_URL"] = mirror.json_url
    env.update(extra)
    return env


def toolkit_view(folder: Path) -> Path:
    """The toolkit's venv seen through a folder whose ``bin/`` holds only ``python``: ``pyvenv.cfg`` and ``lib``
    are the venv's own (symlinked), so ``folder/bin/python`` IS the toolkit's Python, with its packages. Discovery
    looks for ``python3.X``/``python3`` on a POSIX PATH, so this toolkit Python offers no stage Python."""
    venv = TOOLKIT_PYTHON.parent.parent
    (folder / "bin").mkdir(parents=True, exist_ok=True)
    for name in ("pyvenv.cfg", "lib"):
        if not (folder / name).exists():
            (folder / name).symlink_to(venv / name)
    python = folder / "bin" / "python"
    if not python.exists():
        python.symlink_to(Path(os.path.realpath(TOOLKIT_PYTHON)))
    for script in (venv / "bin").iterdir():  # uv, mlflow, jupyter, ...: the venv's scripts, not its python3.X
        if not script.name.startswith("python") and not (folder / "bin" / script.name).exists():
            (folder / "bin" / script.name).symlink_to(script)
    return folder


def managed_builds(folder: Path) -> list[str]:
    """The uv-managed builds installed in ``folder`` (patch folders only, not uv's minor-version links)."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("cpython-") and p.name.count(".") == 2
                  and not p.is_symlink())


def downloads_in(text: str) -> list[str]:
    """The builds a tool's output says it downloaded (our 'downloaded Python X (key, ...' lines)."""
    return [line.split("(")[1].split(",")[0] for line in text.splitlines() if "downloaded Python " in line]

