"""Stage lock files (mlops_kit.envs.lockfile): real resolutions against the package index, real installs on two Pythons.

Fast tests use hand-written locks (fake hashes): parsing, malformed lines, freshness, markers, verification.
Slow tests resolve small specs (six, packaging, attrs + the ipykernel/pip every venv gets) with uv, build venvs
on Python 3.10 and 3.12 and compare their freeze with the lock; a lock is never edited in place, always copied.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name
from packaging.version import Version

from helpers import REPO_ROOT, UV_CACHE, run_script
from mlops_kit.core import paths
from mlops_kit.core.errors import BadInput, EnvBuildError
from mlops_kit.envs import audit, build, installers, lockfile
from mlops_kit.envs.installers import IndexSettings
from mlops_kit.envs.interpreters import inspect_interpreter
from mlops_kit.envs.spec import StageSpec, load_spec, parse_python_request

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
    """A lock in the real format with made-up pins (no network): ``header`` overrides fields."""
    fields = {"lock-format": "1", "spec-hash": spec.content_hash(), "python": "3.12",
              "python-request": spec.python.text, "added": "ipykernel pip", "uv": "0.13.9", "toolkit": "0.1.0",
              "index": "https://pypi.org/simple", "resolved-at": "2025-01-01T00:00:00+00:00",
              "command": lockfile.refresh_command(spec.source), **header}
    text = "# mlops_kit lock\n" + "".join(f"# {k}: {v}\n" for k, v in fields.items() if v) + "\n" + body
    path = lockfile.lock_path(spec.source)
    path.write_text(text, encoding="utf-8")
    return path


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
    """Delete ``name``'s block (its requirement line and the indented lines after it) from ``lock``."""
    out, inside = [], False
    for line in lock.read_text(encoding="utf-8").splitlines(keepends=True):
        if not line.startswith(" "):
            inside = line.startswith(f"{name}==")
        if not inside:
            out.append(line)
    lock.write_text("".join(out), encoding="utf-8")


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory, pythons: dict[str, Path]) -> Iterator[dict[str, StageSpec]]:
    """One real lock per Python minor of a small spec with an old packaging pinned (resolved once per module)."""
    missing = [m for m in MINORS if m not in pythons]
    assert not missing, f"pyenv Pythons {missing} needed"
    folder = tmp_path_factory.mktemp("locked")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UV_CACHE_DIR", str(UV_CACHE))
        specs = {}
        for minor in MINORS:
            spec = write_spec(folder, f"s{minor.replace('.', '')}", minor, ["six", f"packaging=={OLD_PACKAGING}"])
            lockfile.write_lock(spec, echo=lambda _m: None)
            specs[minor] = spec
        yield specs


@pytest.fixture(scope="module")
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


# ---------------------------------------------------------------------------------------------------- fast


def test_lock_path_and_the_python_a_lock_is_resolved_for() -> None:
    assert lockfile.lock_path(Path("specs/train.yaml")) == Path("specs/train.lock.txt")
    assert lockfile.spec_path_for(Path("specs/train.lock.txt")) == Path("specs/train.yaml")
    cases = {"3.12": "3.12", "3.10.13": "3.10", ">=3.10,<3.13": "3.10", "<3.13": "3.8", "~=3.11": "3.11",
             "==3.11.*": "3.11"}
    for text, minor in cases.items():
        assert lockfile.lock_python(parse_python_request(text)) == minor, text


def test_a_lock_parses_into_pins_with_hashes(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    path = fake_lock(spec, pin("six", "1.17.0") + pin("colorama", "0.4.6", "sys_platform == 'win32'", 1))
    lock = lockfile.read_lock(path)
    assert [(p.name, p.version, p.marker, len(p.hashes)) for p in lock.pins] == [
        ("six", "1.17.0", None, 2), ("colorama", "0.4.6", "sys_platform == 'win32'", 1)]
    assert lock.spec_hash == spec.content_hash() and lock.python == "3.12" and len(lock.sha256) == 64
    assert lock.pins[1].line == lock.pins[0].line + 4


@pytest.mark.parametrize("bad, problem", [
    ("<<<<<<< HEAD\n", "expected 'name==version"),
    ("six>=1.16 \\\n    --hash=sha256:" + FAKE + "\n", "expected 'name==version"),
    ("--index-url https://pypi.org/simple\n", "expected 'name==version"),
    ("six==1.17.0\n", "no --hash follows"),
    ("six==1.17.0 \\\n    --hash=sha256:abc\n", "continuation line"),
    ("six==1.17.0 ; sys_platform = 'win32' \\\n    --hash=sha256:" + FAKE + "\n", "Expected"),
    ("six==1.17.0 \\\n    --hash=sha256:" + FAKE + " \\\n", "cut off"),
])
def test_a_malformed_line_is_bad_input_naming_file_and_line(tmp_path: Path, bad: str, problem: str) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    path = fake_lock(spec, pin("attrs", "25.1.0") + bad)
    with pytest.raises(BadInput) as info:
        lockfile.read_lock(path)
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message
    assert f"{path}: line " in message and problem in message, message
    line = int(message.split(": line ")[1].split(":")[0])
    assert path.read_text().splitlines()[line - 1].strip()[:10] in message  # the line it names is the bad one


def test_a_missing_header_field_or_an_unknown_format_is_bad_input(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    with pytest.raises(BadInput, match=r"header field 'spec-hash' missing.*--spec .*stage\.yaml --lock"):
        lockfile.read_lock(fake_lock(spec, pin("six", "1.17.0"), **{"spec-hash": ""}))
    with pytest.raises(BadInput, match="lock format '9'"):
        lockfile.read_lock(fake_lock(spec, pin("six", "1.17.0"), **{"lock-format": "9"}))
    with pytest.raises(BadInput, match="pins no packages"):
        lockfile.read_lock(fake_lock(spec, ""))


def test_a_stale_or_missing_lock_is_one_line_naming_spec_lock_and_command(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    lock = lockfile.lock_path(spec.source)
    command = f"python scripts/create_venv.py --spec {spec.source.as_posix()} --lock"
    with pytest.raises(BadInput) as info:
        lockfile.check_fresh(spec)
    assert str(info.value) == f"{spec.source}: no lock {lock}; create it with: {command}"
    fake_lock(spec, pin("six", "1.17.0"))
    assert lockfile.check_fresh(spec).path == lock
    changed = write_spec(tmp_path, "stage", "3.12", ["six", "attrs"])
    with pytest.raises(BadInput) as info:
        lockfile.check_fresh(changed)
    message = str(info.value)
    assert info.value.exit_code == 2 and "\n" not in message
    assert message.startswith(f"{spec.source}: stale lock {lock} (packages or index settings changed")
    assert message.endswith(f"refresh it with: {command}")
    with pytest.raises(BadInput, match=r"python_version changed from '3\.12' to '3\.11'"):
        lockfile.check_fresh(write_spec(tmp_path, "stage", "3.11", ["six", "attrs"]))


def test_check_fresh_takes_milliseconds_on_a_full_size_lock(tmp_path: Path) -> None:
    """A lock the size of the train stage's (about 50 pins, 1,200 lines): a generous ceiling, not a tight bound."""
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    body = "".join(pin(f"pkg{i}", f"1.{i}.0", "sys_platform == 'win32'" if i % 7 == 0 else "", hashes=22)
                   for i in range(50))
    fake_lock(spec, body)
    assert len(lockfile.lock_path(spec.source).read_text().splitlines()) > 1200
    times = []
    for _ in range(20):
        started = time.perf_counter()
        lockfile.check_fresh(load_spec(spec.source))  # the spec's own parse included, as --check-lock does it
        times.append(time.perf_counter() - started)
    print(f"check_fresh: median {statistics.median(times) * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
    assert statistics.median(times) < 0.1 and max(times) < 0.5


def test_pins_follow_the_markers_of_the_given_environment(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", ">=3.10,<3.13", ["ipykernel"])
    body = (pin("colorama", "0.4.6", "sys_platform == 'win32'") + pin("appnope", "1.0.0", "sys_platform == 'darwin'")
            + pin("ipykernel", "7.3.0", "python_full_version < '3.11'")
            + pin("ipykernel", "7.4.0", "python_full_version >= '3.11'") + pin("six", "1.17.0"))
    lock = lockfile.read_lock(fake_lock(spec, body, python="3.10"))
    windows_310 = {"sys_platform": "win32", "python_full_version": "3.10.11", "python_version": "3.10"}
    linux_312 = {"sys_platform": "linux", "python_full_version": "3.12.1", "python_version": "3.12"}
    assert lockfile.pins_for_this_platform(lock, windows_310) == {"colorama": "0.4.6", "ipykernel": "7.3.0",
                                                               "six": "1.17.0"}
    assert lockfile.pins_for_this_platform(lock, linux_312) == {"ipykernel": "7.4.0", "six": "1.17.0"}
    overlapping = lockfile.read_lock(fake_lock(spec, pin("six", "1.16.0") + pin("six", "1.17.0")))
    with pytest.raises(BadInput, match="six is pinned twice"):
        lockfile.pins_for_this_platform(overlapping)


def test_verify_installed_lists_every_difference() -> None:
    freeze = "six==1.16.0\nattrs==25.1.0\npip==25.0\nmypkg @ file:///tmp/mypkg\nPyYAML==6.0\n"
    pins = {"six": "1.17.0", "pip": "25.0", "packaging": "24.2", "mypkg": "1.0", "pyyaml": "6.0.0"}
    assert lockfile.verify_installed(freeze, pins) == [
        "not locked attrs==25.1.0", "mypkg: installed mypkg @ file:///tmp/mypkg, locked 1.0",
        "missing packaging==24.2", "six: installed 1.16.0, locked 1.17.0"]
    assert lockfile.verify_installed("six==1.17.0\n", {"six": "1.17.0"}) == []


def test_the_resolution_is_universal_hashed_and_never_downloads_a_python(tmp_path: Path) -> None:
    cmd = lockfile.compile_command("train.yaml", tmp_path / "out.txt", "3.12", upgrade_packages=["numpy", "pandas"])
    assert cmd[1:5] == ["pip", "compile", "train.yaml", "--output-file"]
    for flag in ("--universal", "--generate-hashes", "--no-header", "--no-config"):
        assert flag in cmd
    assert cmd[cmd.index("--python-version") + 1] == "3.12" and "--python" in cmd  # no interpreter hunt/download
    assert "--emit-index-url" not in cmd and "--upgrade" not in cmd
    assert cmd[-4:] == ["--upgrade-package", "numpy", "--upgrade-package", "pandas"]


def test_install_commands_require_hashes_and_keep_index_urls_off_the_command_line(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    lock, venv = tmp_path / "s.lock.txt", tmp_path / "venv"
    python = paths.venv_python(venv)
    uv_cmd = installers.locked_install_command(venv, lock, "uv")
    assert uv_cmd[1:] == ["pip", "sync", "--require-hashes", "--python", python, lock]
    assert installers.locked_install_command(venv, lock, "pip") == [
        python, "-m", "pip", "install", "--require-hashes", "--no-deps", "--no-input",
        "--disable-pip-version-check", "-r", lock]
    monkeypatch.setenv("UV_NO_VERIFY_HASHES", "1")
    monkeypatch.setenv("UV_RESOLUTION", "lowest")
    index = IndexSettings("https://u:tok@mirror/simple", ("https://x/simple",), "environment")
    env = installers.installer_env("pip", index)
    assert env["PIP_INDEX_URL"] == "https://u:tok@mirror/simple" and env["PIP_EXTRA_INDEX_URL"] == "https://x/simple"
    assert "UV_NO_VERIFY_HASHES" not in env and "UV_DEFAULT_INDEX" not in env
    assert "UV_RESOLUTION" not in lockfile._resolution_env(None) and "UV_RESOLUTION" in installers.installer_env(
        "uv", IndexSettings())


def test_the_hash_mismatch_is_found_however_long_the_installer_output() -> None:
    """uv lists every expected hash (dozens for numpy) after the mismatch line: proc keeps only a tail."""
    shown: list[str] = []
    uv_watch = lockfile._HashWatch(shown.append)
    for line in ["Resolved 50 packages\n", "error: Failed to download `numpy==2.5.5`\n",
                 "  cause: Hash mismatch for `numpy==2.5.5`\n", *[f"  sha256:{i:064x}\n" for i in range(60)]]:
        uv_watch(line)
    assert uv_watch.bad == ["numpy==2.5.5"] and len(shown) == 63 and not shown[0].endswith("\n")
    pip_watch = lockfile._HashWatch(lambda _l: None)
    for line in ["Collecting six==1.17.0 from https://x/six.whl\n",
                 "ERROR: THESE PACKAGES DO NOT MATCH THE HASHES FROM THE REQUIREMENTS FILE. ...\n",
                 "    six==1.17.0 from https://x/six-1.17.0-py2.py3-none-any.whl (from -r s.lock.txt (line 9)):\n",
                 "        Expected sha256 00\n", "             Got        47\n"]:
        pip_watch(line)
    assert pip_watch.bad == ["six==1.17.0"]


def test_an_unreachable_index_with_credentials_writes_nothing_and_leaks_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    index = IndexSettings("https://user:s3cret@127.0.0.1:9/simple", (), "environment")
    with pytest.raises(EnvBuildError) as info:
        lockfile.write_lock(spec, index=index, echo=lambda _m: None)
    assert "s3cret" not in str(info.value) and "resolving for Python 3.12 failed" in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stage.yaml"]


# ---------------------------------------------------------------------------------------------------- slow


@pytest.mark.slow
@pytest.mark.parametrize("minor", MINORS)
def test_lock_then_build_gives_a_venv_whose_freeze_is_the_lock(
        minor: str, locked: dict[str, StageSpec], pythons: dict[str, Path], tmp_path: Path) -> None:
    """Through the env builder: exactly the lock, recorded in env.json and copied into the audit bundle; the same
    lock reuses the venv."""
    spec = copy_stage(locked[minor], tmp_path / "specs")
    lock = lockfile.check_fresh(spec)
    assert lock.python == minor and lock.header["index"] == "https://pypi.org/simple"
    lines: list[str] = []
    result = build_env(spec, pythons[minor], tmp_path / "venvs", echo=lines.append)
    record = result.record
    assert result.action == "built" and not any("unpinned" in line for line in lines)
    pins = lockfile.pins_for_this_platform(lock, lockfile.marker_environment(result.python))
    frozen = dict(line.split("==") for line in record.freeze_file.read_text().split())
    assert {canonicalize_name(n): v for n, v in frozen.items()} == pins
    assert pins["packaging"] == OLD_PACKAGING and {"six", "pip", "ipykernel", "ipython"} <= set(pins)
    assert (record.lock.sha256, record.lock.python, record.lock.pins, record.lock.verified, record.lock.removed) == (
        lock.sha256, minor, len(pins), True, [])
    assert record.lock.path == str(lock.path) and record.lock_file.read_bytes() == lock.path.read_bytes()
    assert json.loads(record.env_file.read_text())["lock"]["sha256"] == lock.sha256
    subprocess.run([str(result.python), "-c", "import ipykernel, six, pip"], check=True)
    started = time.perf_counter()
    again = build_env(spec, pythons[minor], tmp_path / "venvs")
    print(f"reuse of a locked venv: {time.perf_counter() - started:.3f}s")
    assert again.action == "reused" and again.record == record


@pytest.mark.slow
def test_a_changed_lock_rebuilds_and_an_explicit_freeze_file_wins_over_the_lock(
        locked: dict[str, StageSpec], pythons: dict[str, Path], tmp_path: Path) -> None:
    spec = copy_stage(locked["3.12"], tmp_path / "specs")
    first = build_env(spec, pythons["3.12"], tmp_path / "venvs")
    path = lockfile.lock_path(spec.source)
    path.write_text(path.read_text() + "# reviewed\n")  # other bytes, same pins: still fresh, another lock
    second = build_env(spec, pythons["3.12"], tmp_path / "venvs")
    assert (second.action, second.reason) == ("rebuilt", f"lock changed ({path})")
    assert second.record.lock.sha256 == lockfile.read_lock(path).sha256 != first.record.lock.sha256
    lines: list[str] = []
    frozen = build_env(spec, pythons["3.12"], tmp_path / "venvs", from_freeze=second.record.freeze_file,
                   echo=lines.append)
    assert frozen.action == "rebuilt" and "no longer installed from a lock" in frozen.reason
    assert f"--from-freeze {second.record.freeze_file} wins over the lock {path}: installing the freeze file's " \
           "pins" in lines
    assert frozen.record.lock is None and frozen.record.from_freeze is not None
    assert not frozen.record.lock_file.exists() and audit.LOCK_TXT not in [p.name for p in frozen.record.bundle]


@pytest.mark.slow
def test_a_seeded_venv_loses_what_is_not_locked_but_keeps_pip(
        locked: dict[str, StageSpec], pythons: dict[str, Path], tmp_path: Path) -> None:
    """``uv venv --seed`` puts setuptools and wheel in a 3.10 venv; ``uv pip sync`` keeps seed packages, so the
    toolkit removes them itself; pip is in the lock and stays (``%pip`` in Jupyter)."""
    venv = make_venv(pythons["3.10"], tmp_path / "venv", seed=True)
    done = lockfile.install_from_lock(locked["3.10"], venv, echo=lambda _m: None)
    assert {"setuptools", "wheel"} <= set(done.removed) and "pip" in done.pins
    assert lockfile.verify_installed(done.freeze, done.pins) == []


@pytest.mark.slow
def test_the_pip_fallback_refuses_a_flipped_hash_then_installs_exactly_the_lock(
        locked: dict[str, StageSpec], pythons: dict[str, Path], tmp_path: Path, pip_cache: Path) -> None:
    """``--installer pip`` (its venv made by ``python -m venv``: pip and, on 3.10, setuptools in it): ``pip install
    --require-hashes --no-deps``. A flipped hash installs nothing (exit 4); the good lock installs, setuptools is
    removed (not locked), the freeze verified. One venv for both (``python -m venv`` is the slow part); the uv
    path is shown through create_venv.py below."""
    stage = copy_stage(locked["3.10"], tmp_path / "stage")
    lock = lockfile.lock_path(stage.source)
    good = lock.read_bytes()
    flip_hashes(lock, "six")
    venv = tmp_path / "venv"
    subprocess.run([str(pythons["3.10"]), "-m", "venv", str(venv)], check=True, capture_output=True)
    before = freeze(venv, "pip")
    with pytest.raises(EnvBuildError) as info:
        lockfile.install_from_lock(stage, venv, installer="pip", echo=lambda _m: None)
    message = str(info.value)
    assert info.value.exit_code == 4 and "\n" not in message
    assert message.startswith(f"{lock}: hash mismatch for six==1.17.0"), message
    assert freeze(venv, "pip") == before  # nothing installed from the tampered lock
    lock.write_bytes(good)
    done = lockfile.install_from_lock(stage, venv, installer="pip", echo=lambda _m: None)
    assert "setuptools" in done.removed and done.pins["packaging"] == OLD_PACKAGING
    assert lockfile.verify_installed(freeze(venv, "pip"), done.pins) == []


@pytest.mark.slow
def test_the_lock_carries_windows_only_dependencies_and_installs_for_windows(
        locked: dict[str, StageSpec], tmp_path: Path) -> None:
    lock = lockfile.read_lock(lockfile.lock_path(locked["3.12"].source))
    colorama = [p for p in lock.pins if p.name == "colorama"]
    assert colorama and colorama[0].marker == "sys_platform == 'win32'" and colorama[0].hashes
    assert "colorama" not in lockfile.pins_for_this_platform(lock, {"sys_platform": "linux"})
    result = subprocess.run([installers.uv_bin(), "pip", "install", "--dry-run", "--python-platform", "windows",
                             "--python-version", "3.12", "--require-hashes", "--target", str(tmp_path / "target"),
                             "-r", str(lock.path)], check=False, capture_output=True, text=True)
    assert result.returncode == 0 and "colorama==" in result.stderr, result.stderr
    for platform_name in lockfile.PLATFORMS:
        lockfile.check_installable(lock.path, platform_name, "3.12")


@pytest.mark.slow
def test_the_platform_check_catches_a_lock_missing_a_windows_dependency(
        locked: dict[str, StageSpec], tmp_path: Path) -> None:
    stage = copy_stage(locked["3.12"], tmp_path)
    path = lockfile.lock_path(stage.source)
    drop_package(path, "colorama")
    assert "colorama" not in path.read_text() and lockfile.read_lock(path)
    lockfile.check_installable(path, "linux", "3.12")
    with pytest.raises(EnvBuildError, match="does not install on windows .*colorama"):
        lockfile.check_installable(path, "windows", "3.12")


@pytest.mark.slow
def test_relock_keeps_other_pins_and_upgrade_package_moves_only_that_one(
        locked: dict[str, StageSpec], tmp_path: Path) -> None:
    first = copy_stage(locked["3.12"], tmp_path)
    before = lockfile.pins_for_this_platform(lockfile.read_lock(lockfile.lock_path(first.source)))
    spec = write_spec(tmp_path, first.source.stem, "3.12", ["six", "packaging", "attrs"])  # unpin, add one
    messages: list[str] = []
    lock = lockfile.write_lock(spec, check_platforms=(), echo=messages.append)  # platform checks: tested above
    after = lockfile.pins_for_this_platform(lock)
    assert after.pop("attrs") and after == before  # packaging stays at the old pin although newer ones exist
    assert messages[-1].startswith(f"{lock.path}: updated: +attrs ")
    upgraded = lockfile.pins_for_this_platform(lockfile.write_lock(spec, upgrade_packages=["packaging"],
                                                             check_platforms=(), echo=lambda _m: None))
    assert Version(upgraded.pop("packaging")) > Version(OLD_PACKAGING)
    assert {k: v for k, v in after.items() if k != "packaging"} == {k: v for k, v in upgraded.items()
                                                                    if k != "attrs"}
    data = lock.path.read_bytes()
    lockfile.write_lock(spec, check_platforms=(), echo=messages.append)
    assert lock.path.read_bytes() == data and "unchanged" in messages[-1]  # no churn in git
    assert lockfile.check_fresh(spec)


@pytest.mark.slow
def test_a_stale_lock_or_an_older_python_installs_nothing(
        locked: dict[str, StageSpec], pythons: dict[str, Path], tmp_path: Path) -> None:
    stage = copy_stage(locked["3.12"], tmp_path / "stage")
    venv = make_venv(pythons["3.12"], tmp_path / "venv")
    changed = write_spec(tmp_path / "stage", stage.source.stem, "3.12", ["six", "attrs"])
    with pytest.raises(BadInput) as info:
        lockfile.install_from_lock(changed, venv, echo=lambda _m: None)
    assert info.value.exit_code == 2 and "stale lock" in str(info.value) and "--lock" in str(info.value)
    assert freeze(venv) == ""
    old = make_venv(pythons["3.10"], tmp_path / "venv310")
    with pytest.raises(BadInput, match=r"resolved for Python 3\.12 and later, the venv has Python 3\.10"):
        lockfile.install_from_lock(stage, old, echo=lambda _m: None)
    assert freeze(old) == ""


@pytest.mark.slow
def test_index_credentials_reach_neither_the_lock_nor_its_header(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "stage", "3.12", ["six"])
    index = IndexSettings("https://user:s3cret@pypi.org/simple", (), "environment")
    lock = lockfile.write_lock(spec, index=index, check_platforms=(), echo=lambda _m: None)
    assert "s3cret" not in lock.path.read_text() and lock.header["index"] == "https://***@pypi.org/simple"


# ---------------------------------------------------------------------------------------------------- create_venv.py


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


def test_the_example_specs_committed_locks_are_fresh_and_carry_windows_dependencies() -> None:
    """What CI and pre-commit run: milliseconds per spec, no network."""
    started = time.perf_counter()
    done = run_script("create_venv.py", "--spec", str(REPO_ROOT / "specs"), "--check-lock", cwd=REPO_ROOT)
    elapsed = time.perf_counter() - started
    print(f"create_venv.py --check-lock specs/ (3 specs, whole process): {elapsed:.2f}s")
    assert done.returncode == 0 and error_lines(done.stderr) == [] and done.stdout == "", done.stderr
    specs = sorted((REPO_ROOT / "specs").glob("*.yaml"))
    assert len(specs) == 3 and done.stderr.count(": fresh (") == 3
    for path in specs:
        lock = lockfile.read_lock(lockfile.lock_path(path))
        assert lock.header["spec"] == f"specs/{path.name}" and lock.header["checked-on"] == "windows linux macos"
        colorama = [pin for pin in lock.pins if pin.name == "colorama"]
        assert colorama and "sys_platform == 'win32'" in colorama[0].marker and colorama[0].hashes


@pytest.mark.slow
def test_lock_several_specs_one_failing_keeps_its_old_lock_and_check_lock_lists_each_stale_one(
        locked: dict[str, StageSpec], tmp_path: Path) -> None:
    folder = tmp_path / "specs"
    grows = copy_stage(locked["3.12"], folder)  # a.yaml gets attrs: re-locked, keeping the other pins
    grows = write_spec(folder, grows.source.stem, "3.12", ["six", f"packaging=={OLD_PACKAGING}", "attrs"])
    broken = write_spec(folder, "broken", "3.12", ["six==0.0.999"])  # cannot resolve; has an old (stale) lock
    shutil.copyfile(lockfile.lock_path(grows.source), lockfile.lock_path(broken.source))
    write_spec(folder, "unlocked", "3.12", ["six"])
    broken_lock = lockfile.lock_path(broken.source).read_bytes()

    before = run_script("create_venv.py", "--spec", str(folder), "--check-lock")
    assert before.returncode == 2 and len(error_lines(before.stderr)) == 3, before.stderr
    assert "no lock" in before.stderr and before.stderr.count("stale lock") == 2

    done = run_script("create_venv.py", "--lock", "--spec", str(grows.source), "--spec", str(broken.source))
    assert done.returncode == 4 and done.stdout == "", done.stderr
    [line] = error_lines(done.stderr)
    assert line.startswith(f"error: {broken.source}: resolving for Python 3.12 failed"), line
    assert "nothing was written" in line
    assert f"{lockfile.lock_path(grows.source)}: updated: +attrs " in done.stderr
    assert lockfile.lock_path(broken.source).read_bytes() == broken_lock
    pins = lockfile.pins_for_this_platform(lockfile.check_fresh(grows))
    assert pins["packaging"] == OLD_PACKAGING and "attrs" in pins
    assert sorted(p.name for p in folder.iterdir()) == [  # no temp file left behind
        "broken.lock.txt", "broken.yaml", f"{grows.source.stem}.lock.txt", grows.source.name, "unlocked.yaml"]

    after = run_script("create_venv.py", "--spec", str(folder), "--check-lock", "--quiet")
    assert after.returncode == 2 and after.stdout == ""
    named = [line.split(": ")[1] for line in error_lines(after.stderr)]
    assert named == [str(broken.source), str(folder / "unlocked.yaml")]


@pytest.mark.slow
def test_create_venv_installs_the_lock_stale_is_exit_2_and_a_flipped_hash_exit_4_until_fixed(
        locked: dict[str, StageSpec], tmp_path: Path) -> None:
    good = copy_stage(locked["3.12"], tmp_path / "specs")
    stale = copy_stage(locked["3.12"], tmp_path / "other")
    stale.source.write_text(stale.source.read_text().replace("  - six\n", "  - six\n  - attrs\n"))
    root, audit_dir = tmp_path / "venvs", tmp_path / "artifacts" / "audit"
    args = ["--venv-root", str(root), "--kernel-scope", "none"]

    refused = run_script("create_venv.py", "--spec", str(good.source), "--spec", str(stale.source), *args)
    assert refused.returncode == 2 and refused.stdout == ""
    assert error_lines(refused.stderr) == [
        f"error: {stale.source}: stale lock {lockfile.lock_path(stale.source)} (packages or index settings changed since "
        f"it was locked at {lockfile.read_lock(lockfile.lock_path(stale.source)).header['resolved-at']}); refresh it with: "
        f"python scripts/create_venv.py --spec {stale.source.as_posix()} --lock"]
    assert not root.exists()  # nothing built, not even the good spec's venv

    first = run_script("create_venv.py", "--spec", str(good.source), "--audit-dir", str(audit_dir), *args)
    assert first.returncode == 0, first.stderr
    venv = Path(first.stdout.strip())
    lock = lockfile.lock_path(good.source)
    assert f"from {lock} with uv (hashes required)" in first.stderr and "unpinned" not in first.stderr
    assert (audit_dir / audit.LOCK_TXT).read_bytes() == lock.read_bytes()
    assert json.loads((audit_dir / "env.json").read_text())["lock"]["verified"] is True
    again = run_script("create_venv.py", "--spec", str(good.source), *args)
    assert again.returncode == 0 and again.stderr.strip() == f"reusing {venv} (spec and interpreter unchanged)"

    committed = lock.read_bytes()
    flip_hashes(lock, "six")
    tampered = run_script("create_venv.py", "--spec", str(good.source), *args)
    assert tampered.returncode == 4 and tampered.stdout == ""
    line = tampered.stderr.strip().splitlines()[-1]  # ours; uv's own streamed output has "error:" lines too
    assert line.startswith(f"error: {lock}: hash mismatch for six==") and "marked incomplete" in line, line
    assert (venv / ".mlops_kit").is_file() and not (venv / "audit" / "env.json").exists()  # never used
    lock.write_bytes(committed)
    fixed = run_script("create_venv.py", "--spec", str(good.source), *args)
    assert fixed.returncode == 0 and "a previous build did not finish" in fixed.stderr, fixed.stderr
    assert audit.read_env(venv).lock.sha256 == lockfile.read_lock(lock).sha256
