"""Shared pieces for the lock tests (tests/envs/test_lockfile.py, test_resolution.py, test_locked_install.py and
tests/test_create_venv.py): small specs, hand-written locks, venvs, and one real lock per Python minor.

Hand-written locks carry made-up hashes (no network). The real locks (the ``locked`` fixture, a pytest plugin
registered in conftest) resolve a small spec (six, an old packaging, plus the ipykernel/pip every venv gets) with
uv once per session; a test never edits them in place, it copies them (:func:`copy_stage`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import UV_CACHE
from mlops_kit.envs import build, installers, lockfile, resolution
from mlops_kit.envs.interpreters import inspect_interpreter
from mlops_kit.envs.spec import StageSpec, load_spec

MINORS = ("3.10", "3.12")
OLD_PACKAGING = "24.2"  # pinned in the first lock; a re-lock must keep it although newer ones exist
FAKE = "0" * 64


def write_spec(folder: Path, stem: str, python: str, packages: list[str]) -> StageSpec:
    folder.mkdir(parents=True, exist_ok=True)
    lines = "".join(f"  - {p}\n" for p in packages)
    path = folder / f"{stem}.yaml"
    path.write_text(f'stage: {stem}\npython_version: "{python}"\nvenv_name: {stem}_venv\npackages:\n{lines}'
                    f'kernel_display_name: "{stem}"\n', encoding="utf-8")
    return load_spec(path)


def fake_lock(spec: StageSpec, body: str, **header: str) -> Path:
    """A lock in the real format, sealed, with made-up pins (no network): ``header`` overrides fields."""
    fields = {"lock-format": lockfile.LOCK_FORMAT, "spec-hash": spec.content_hash(), "python": "3.12",
              "python-request": spec.python.text, "added": "ipykernel pip", "uv": "0.13.9", "toolkit": "0.1.0",
              "index": "https://pypi.org/simple", "resolved-at": "2025-01-01T00:00:00+00:00",
              "command": lockfile.refresh_command(spec.source), **header}
    text = "# mlops_kit lock\n" + "".join(f"# {k}: {v}\n" for k, v in fields.items() if v) + "\n" + body
    path = lockfile.lock_path(spec.source)
    path.write_text(lockfile.seal(text), encoding="utf-8")
    return path


def reseal(lock: Path) -> None:
    """Seal ``lock`` again after a test edited it: a lock that is whole as far as the digest can tell, as a buggy
    writer (or a resolver mistake) would leave it, for the rules checked beyond the seal."""
    lock.write_text(lockfile.seal(lock.read_text(encoding="utf-8")), encoding="utf-8")


def pin(name: str, version: str, marker: str = "", hashes: int = 2) -> str:
    lines = [f"{name}=={version}" + (f" ; {marker}" if marker else "") + " \\"]
    lines += [f"    --hash=sha256:{i:064x}" + (" \\" if i < hashes - 1 else "") for i in range(hashes)]
    return "\n".join(lines) + "\n    # via -r spec.yaml\n"


def make_venv(base: Path, where: Path, *, seed: bool = False) -> Path:
    """A new empty venv made with ``uv venv`` (``seed``: with pip, setuptools and wheel). Returns its folder."""
    subprocess.run([installers.uv_bin(), "venv", "-q", *(["--seed"] if seed else []), "--python", str(base),
                    str(where)], check=True, capture_output=True)
    return where


def freeze(venv: Path, installer: str = "uv") -> str:
    return installers.freeze(venv, installer=installer, env=dict(os.environ))


def copy_stage(spec: StageSpec, folder: Path) -> StageSpec:
    """The spec and its lock copied into ``folder`` (tests change them there, never the shared originals)."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(spec.source, folder / spec.source.name)
    shutil.copyfile(lockfile.lock_path(spec.source), lockfile.lock_path(folder / spec.source.name))
    return load_spec(folder / spec.source.name)


def flip_hashes(lock: Path, name: str) -> None:
    """Change the first hex digit of every hash of ``name`` (whichever file uv picks, it no longer matches)."""
    out, inside = [], False
    for line in lock.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.startswith(" "):
            inside = line.startswith(f"{name}==")
        if inside and "--hash=sha256:" in line:
            head, digest = line.split("--hash=sha256:")
            line = f"{head}--hash=sha256:{'1' if digest[0] == '0' else '0'}{digest[1:]}"
        out.append(line)
    lock.write_text("".join(out), encoding="utf-8")


def drop_package(lock: Path, name: str) -> None:
    """Delete ``name``'s blocks (each requirement line and the indented lines after it) from ``lock``."""
    out, inside = [], False
    for line in lock.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.startswith(" "):
            inside = line.startswith(f"{name}==")
        if not inside:
            out.append(line)
    lock.write_text("".join(out), encoding="utf-8")


def duplicate_package(lock: Path, name: str) -> None:
    """Repeat ``name``'s first block right after it: the same pin twice, hashes valid."""
    lines = lock.read_text(encoding="utf-8").splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{name}=="))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" ")), len(lines))
    lock.write_text("".join(lines[:end] + lines[start:end] + lines[end:]), encoding="utf-8")


IDNA_3_20 = (  # a real release with its real hashes (uv pip compile --generate-hashes): installable from PyPI
    "idna==3.20 \\\n"
    "    --hash=sha256:a7db850025b95ded1eae8a46181a1a6c56c92c96f0e2b005d9ff8dc0210cab44 \\\n"
    "    --hash=sha256:ab7ae7122974553370f0bdb919e1a960b2cd1bc1ef0276416d896db81c14582c\n"
    "    # via -r spec.yaml\n"
)


def append_to(lock: Path, text: str) -> None:
    with lock.open("a", encoding="utf-8") as out:
        out.write(text)


@pytest.fixture(scope="session")
def locked(tmp_path_factory: pytest.TempPathFactory, pythons: dict[str, Path]) -> Iterator[dict[str, StageSpec]]:
    """One real lock per Python minor of a small spec with an old packaging pinned (resolved once per session)."""
    missing = [m for m in MINORS if m not in pythons]
    assert not missing, f"pyenv Pythons {missing} needed"
    folder = tmp_path_factory.mktemp("locked")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UV_CACHE_DIR", str(UV_CACHE))
        specs = {}
        for minor in MINORS:
            spec = write_spec(folder, f"s{minor.replace('.', '')}", minor, ["six", f"packaging=={OLD_PACKAGING}"])
            resolution.write_lock(spec, echo=lambda _m: None)
            specs[minor] = spec
        yield specs


@pytest.fixture(scope="session")
def pip_cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pip-cache")


@pytest.fixture()
def pip_cache(pip_cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One pip cache for this module's pip installs (each test has its own HOME: pip would download again), and
    no byte-compiling (pip's PIP_NO_COMPILE=0 means --no-compile): CPU time a CI machine need not spend here."""
    monkeypatch.setenv("PIP_CACHE_DIR", str(pip_cache_dir))
    monkeypatch.setenv("PIP_NO_COMPILE", "0")
    return pip_cache_dir


def build_env(spec: StageSpec, base: Path, root: Path, **kw: object) -> build.EnvResult:
    """``build.ensure_env`` as create_venv.py calls it (no kernel registered; quiet unless ``echo`` is given)."""
    found = inspect_interpreter(base, source="pyenv")
    assert found is not None, base
    options: dict = {"kernel_scope": "none", "echo": lambda _m: None, **kw}
    return build.ensure_env(spec, venv_root=root, interpreter=found, **options)


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error: ")]
