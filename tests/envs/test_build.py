"""mlops_kit.envs.build: layout, freeze/index inputs, and real venv builds with uv and pip on several pyenv Pythons."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from helpers import POSIX_SYMLINKS, kernel_registered, make_spec
from mlops_kit.core import paths
from mlops_kit.core.errors import BadInput, EnvBuildError
from mlops_kit.envs import audit, build, installers, kernel
from mlops_kit.envs.interpreters import Interpreter, inspect_interpreter

CONTRACT_KEYS = {"schema", "stage", "venv_name", "venv_path", "venv_python", "kernel_name", "kernel_display_name",
                 "python", "platform", "installer", "spec_hash", "cache_key", "created_at", "toolkit", "packages"}



def interp(path: Path) -> Interpreter:
    found = inspect_interpreter(path, source="pyenv")
    assert found is not None, path
    return found


class Recorder:
    """An ``echo`` that keeps every message (installer output included)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, line: str) -> None:
        self.lines.append(line)

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


def venv_run(venv: Path, code: str) -> str:
    return subprocess.run([str(paths.venv_python(venv)), "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


# ---------------------------------------------------------------------------------------------------- layout


def test_refuse_unowned(tmp_path: Path) -> None:
    build.refuse_unowned(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    build.refuse_unowned(tmp_path / "empty")
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "data.csv").write_text("precious")
    with pytest.raises(BadInput, match=r"theirs: exists but was not created by create_venv.py"):
        build.refuse_unowned(theirs)
    (theirs / build.MARKER).write_text("{}")
    build.refuse_unowned(theirs)


def test_venv_root_that_is_a_file_is_bad_input(tmp_path: Path, pythons: dict[str, Path]) -> None:
    (tmp_path / "root").write_text("not a folder")
    with pytest.raises(BadInput, match="cannot create or write the venv root.*set ML_VENV_ROOT"):
        build.ensure_env(make_spec(tmp_path), venv_root=tmp_path / "root", interpreter=interp(pythons["3.12"]))
    assert (tmp_path / "root").read_text() == "not a folder"


def test_a_service_account_whose_program_data_is_not_writable_is_told_to_set_ml_venv_root(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """LocalSystem (seam: win32 and the environment Windows gives the service) defaults to %ProgramData%; when that
    cannot be written, exit 2 names ML_VENV_ROOT and nothing is made."""
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    monkeypatch.setenv("USERPROFILE", "C:\\Windows\\system32\\config\\systemprofile")
    monkeypatch.setenv("ProgramData", str(tmp_path / "ProgramData"))
    (tmp_path / "ProgramData").write_text("a file where the folder should be")
    root = paths.venv_root()
    assert root == tmp_path / "ProgramData" / "mlops_kit" / "venvs"
    with pytest.raises(BadInput, match=r"default venv root of a LocalSystem account is not writable.*set ML_VENV_ROOT") \
            as info:
        build.check_venv_root(root)
    assert info.value.exit_code == 2 and "\n" not in str(info.value)
    (tmp_path / "ProgramData").unlink()
    build.check_venv_root(root)
    assert list(tmp_path.iterdir()) == []  # checked, nothing made


# ---------------------------------------------------------------------------------------------------- inputs


def test_ensure_env_bad_installer_or_scope(tmp_path: Path, pythons: dict[str, Path]) -> None:
    spec = make_spec(tmp_path)
    with pytest.raises(BadInput, match="--installer 'conda'"):
        build.ensure_env(spec, venv_root=tmp_path, interpreter=interp(pythons["3.12"]), installer="conda")
    with pytest.raises(BadInput, match="--kernel-scope 'global'"):
        build.ensure_env(spec, venv_root=tmp_path, interpreter=interp(pythons["3.12"]), kernel_scope="global")


# ---------------------------------------------------------------------------------------------------- real builds


@pytest.mark.slow
@pytest.mark.parametrize("minor", ["3.8", "newest"])
def test_build_on_real_pythons_audit_bundle(tmp_path: Path, pythons: dict[str, Path], minor: str) -> None:
    minor = max(pythons, key=lambda v: tuple(map(int, v.split(".")))) if minor == "newest" else minor
    base = interp(pythons[minor])
    spec = make_spec(tmp_path, packages=("six", "tomli"), python=minor)
    echo = Recorder()
    result = build.ensure_env(spec, venv_root=tmp_path / "venvs", interpreter=base, echo=echo)
    venv = tmp_path / "venvs" / "stage-venv"
    assert (result.action, result.venv_dir, result.python) == ("built", venv, paths.venv_python(venv))
    assert "building" in echo.text and "Installed" in echo.text  # installer output streamed through echo
    data = json.loads((venv / "audit" / "env.json").read_text())
    assert CONTRACT_KEYS <= set(data)
    assert data["python"]["version"] == base.version_text and data["installer"]["name"] == "uv"
    assert data["venv_python"] == str(paths.venv_python(venv)) and data["kernel_name"] == "stage-venv"
    assert data["toolkit"]["git_sha"] != "" and data["created_at"].endswith("+00:00")
    assert (venv / "audit" / "spec.yaml").read_text() == spec.text
    freeze = (venv / "audit" / "pip_freeze.txt").read_text()
    assert all(line.count("==") == 1 for line in freeze.splitlines() if line)
    assert {"six", "tomli", "ipykernel", "pip"} <= {line.split("==")[0] for line in freeze.splitlines()}
    assert venv_run(venv, "import sys; print('%d.%d.%d' % sys.version_info[:3])") == base.version_text
    assert "pip" in venv_run(venv, "import subprocess, sys; print(subprocess.check_output([sys.executable, '-m', "
                                   "'pip', '--version'], text=True))")
    assert (venv / build.MARKER).is_file() and audit.read_env(venv).cache_key == data["cache_key"]
    assert (tmp_path / "venvs" / ".gitignore").read_text().endswith("*\n")  # we made the root: git-ignored
    longest = max((str(p.relative_to(venv)) for p in venv.rglob("*") if p.is_file() and p.parent.name != "audit"),
                  key=len)
    assert len(data["longest_path"]["file"]) == len(longest)  # measured after the build, for a rebuild's budget


@pytest.fixture()
def built(tmp_path: Path, pythons: dict[str, Path]):
    """A real venv (uv, Python 3.12) built once for the test; returns (spec, interpreter, root)."""
    spec = make_spec(tmp_path)
    base = interp(pythons["3.12"])
    root = tmp_path / "venv root"
    build.ensure_env(spec, venv_root=root, interpreter=base, echo=Recorder())
    return spec, base, root


@pytest.mark.slow
def test_unchanged_spec_is_reused_without_install(built) -> None:
    spec, base, root = built
    before = (root / "stage-venv" / "audit" / "env.json").read_text()
    echo = Recorder()
    result = build.ensure_env(spec, venv_root=root, interpreter=base, echo=echo)
    assert result.action == "reused"
    assert echo.lines == [f"reusing {root / 'stage-venv'} (spec and interpreter unchanged)"]
    assert (root / "stage-venv" / "audit" / "env.json").read_text() == before


@pytest.mark.slow
def test_changed_packages_python_request_and_force_rebuild(built, tmp_path: Path) -> None:
    spec, base, root = built
    echo = Recorder()
    more = make_spec(tmp_path, packages=("six", "tomli"))
    result = build.ensure_env(more, venv_root=root, interpreter=base, echo=echo)
    assert (result.action, result.reason) == ("rebuilt", "package list changed (+tomli)")
    assert "rebuilding" in echo.lines[0] and "package list changed (+tomli)" in echo.lines[0]
    assert "tomli" in (root / "stage-venv" / "audit" / "pip_freeze.txt").read_text()
    request = make_spec(tmp_path, packages=("six", "tomli"), python=">=3.12,<3.13")
    result = build.ensure_env(request, venv_root=root, interpreter=base, echo=echo)
    assert result.reason == "Python request changed ('3.12' -> '>=3.12,<3.13')"
    result = build.ensure_env(request, venv_root=root, interpreter=base, force=True, echo=echo)
    assert (result.action, result.reason) == ("rebuilt", "--force given")


@pytest.mark.slow
def test_changed_interpreter_rebuilds(built, pythons: dict[str, Path], tmp_path: Path) -> None:
    spec, base, root = built
    wide = make_spec(tmp_path, python=">=3.11")
    build.ensure_env(wide, venv_root=root, interpreter=base, echo=Recorder())
    other = interp(pythons["3.11"])
    result = build.ensure_env(wide, venv_root=root, interpreter=other, echo=Recorder())
    assert result.action == "rebuilt" and "interpreter changed (3.12" in result.reason
    assert result.record.python.version == other.version_text


@pytest.mark.slow
@POSIX_SYMLINKS
def test_health_check_failure_rebuilds_with_reason(built) -> None:
    spec, base, root = built
    venv = root / "stage-venv"
    env_json = venv / "audit" / "env.json"
    data = json.loads(env_json.read_text())
    data["python"]["version"] = "3.12.0"
    env_json.write_text(json.dumps(data))
    assert "reports Python" in build.health_check(venv, audit.read_env(venv))
    result = build.ensure_env(spec, venv_root=root, interpreter=base, echo=Recorder())
    assert result.action == "rebuilt"
    assert result.reason == (f"health check failed: its interpreter reports Python {base.version_text}, "
                             "recorded 3.12.0 (base Python upgraded?)")
    python = paths.venv_python(venv)
    python.unlink()
    python.symlink_to(root / "removed-base" / "python3.12")  # the base Python was uninstalled
    result = build.ensure_env(spec, venv_root=root, interpreter=base, echo=Recorder())
    assert result.action == "rebuilt" and "is missing (base Python" in result.reason
    assert build.health_check(venv, result.record) is None


@pytest.mark.slow
def test_interpreter_that_cannot_start_rebuilds_instead_of_crashing(built) -> None:
    """A venv python replaced by a non-executable file (PermissionError on start): health check -> rebuild."""
    spec, base, root = built
    python = paths.venv_python(root / "stage-venv")
    python.unlink()
    python.write_text("not a program\n")
    python.chmod(0o644)
    assert "does not run" in build.health_check(root / "stage-venv", audit.read_env(root / "stage-venv"))
    result = build.ensure_env(spec, venv_root=root, interpreter=base, echo=Recorder())
    assert result.action == "rebuilt" and result.reason.startswith("health check failed: its interpreter")
    assert build.health_check(root / "stage-venv", result.record) is None


@pytest.mark.slow
def test_half_built_venv_is_rebuilt(built) -> None:
    spec, base, root = built
    (root / "stage-venv" / "audit" / "env.json").unlink()  # as if killed before the completion marker
    with pytest.raises(BadInput, match="not a venv built by create_venv.py"):
        audit.read_env(root / "stage-venv")
    result = build.ensure_env(spec, venv_root=root, interpreter=base, echo=Recorder())
    assert (result.action, result.reason) == ("rebuilt", "a previous build did not finish (no audit/env.json)")


@pytest.mark.slow
def test_failed_install_exit_4_leaves_incomplete_then_rebuilds(tmp_path: Path, pythons: dict[str, Path]) -> None:
    base = interp(pythons["3.12"])
    root = tmp_path / "venvs"
    bad = make_spec(tmp_path, packages=("six==0.0.0.1",))
    with pytest.raises(EnvBuildError, match="installing packages with uv failed.*marked incomplete") as info:
        build.ensure_env(bad, venv_root=root, interpreter=base, echo=Recorder())
    assert info.value.exit_code == 4 and "\n" not in str(info.value)
    venv = root / "stage-venv"
    assert (venv / build.MARKER).is_file() and not (venv / "audit" / "env.json").exists()
    result = build.ensure_env(make_spec(tmp_path), venv_root=root, interpreter=base, echo=Recorder())
    assert result.action == "rebuilt" and "did not finish" in result.reason


@pytest.mark.slow
def test_unrelated_folder_is_refused_and_untouched(tmp_path: Path, pythons: dict[str, Path]) -> None:
    theirs = tmp_path / "venvs" / "stage-venv"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(BadInput, match="not created by create_venv.py"):
        build.ensure_env(make_spec(tmp_path), venv_root=tmp_path / "venvs", interpreter=interp(pythons["3.12"]),
                        force=True)
    assert [p.name for p in theirs.iterdir()] == ["notes.txt"] and (theirs / "notes.txt").read_text() == "mine"


@pytest.mark.slow
def test_from_freeze_recreates_exact_versions_and_audit_copy(built, tmp_path: Path) -> None:
    spec, base, root = built
    frozen = (root / "stage-venv" / "audit" / "pip_freeze.txt").read_text().splitlines()
    freeze = tmp_path / "pip_freeze.txt"
    freeze.write_text("\n".join("six==1.16.0" if line.startswith("six==") else line for line in frozen) + "\n")
    result = build.ensure_env(spec, venv_root=root, interpreter=base, from_freeze=freeze, echo=Recorder(),
                             audit_dir=tmp_path / "artifacts" / "audit")
    assert result.action == "rebuilt" and result.reason == f"now built from the freeze file {freeze}"
    assert venv_run(root / "stage-venv", "import six; print(six.__version__)") == "1.16.0"
    rebuilt = (root / "stage-venv" / "audit" / "pip_freeze.txt").read_text().splitlines()
    assert sorted(rebuilt) == sorted(line for line in freeze.read_text().splitlines() if line)
    assert result.record.from_freeze.sha256 == installers.read_freeze(freeze).sha256
    copied = tmp_path / "artifacts" / "audit"
    assert sorted(p.name for p in copied.iterdir()) == ["env.json", "pip_freeze.txt", "spec.yaml"]
    assert json.loads((copied / "env.json").read_text())["cache_key"] == result.record.cache_key
    again = build.ensure_env(spec, venv_root=root, interpreter=base, from_freeze=freeze, echo=Recorder())
    assert again.action == "reused"
    echo = Recorder()
    wider = make_spec(tmp_path, packages=("six", "tomli"))
    build.ensure_env(wider, venv_root=root, interpreter=base, from_freeze=freeze, echo=echo)
    assert f"warning: {freeze} does not pin tomli from the spec" in echo.text


@pytest.mark.slow
def test_pip_installer_path(built, tmp_path: Path) -> None:
    spec, base, root = built
    echo = Recorder()
    result = build.ensure_env(spec, venv_root=root, interpreter=base, installer="pip", echo=echo)
    assert (result.action, result.reason) == ("rebuilt", "installer changed (uv -> pip)")
    assert result.record.installer.name == "pip" and result.record.installer.version[0].isdigit()
    freeze = result.record.freeze_file.read_text()
    assert "six==" in freeze and "ipykernel==" in freeze and "pip==" in freeze
    assert venv_run(root / "stage-venv", "import six, ipykernel; print('ok')") == "ok"


@pytest.mark.slow
def test_kernel_re_registered_on_cache_hit_and_scope_none(built) -> None:
    spec, base, root = built
    kdir = kernel.kernel_dir("stage-venv", "user")
    assert json.loads((kdir / "kernel.json").read_text())["argv"][0] == str(paths.venv_python(root / "stage-venv"))
    for child in kdir.iterdir():
        child.unlink()
    kdir.rmdir()
    echo = Recorder()
    result = build.ensure_env(spec, venv_root=root, interpreter=base, echo=echo)
    assert result.action == "reused" and "registering it" in echo.text
    assert (kdir / "kernel.json").is_file() and kernel_registered("stage-venv")
    none = build.ensure_env(spec, venv_root=root, interpreter=base, kernel_scope="none", echo=Recorder())
    assert none.kernel_dir is None


@pytest.mark.slow
@pytest.mark.parametrize("origin", ["spec", "environment"])
def test_index_settings_reach_uv_and_stay_out_of_messages(tmp_path: Path, pythons: dict[str, Path],
                                                          monkeypatch: pytest.MonkeyPatch, origin: str) -> None:
    """An unreachable index proves uv was given it (it never reads pip.ini); the URL's password is not shown
    (credentials only ever come from the environment: the spec refuses them)."""
    url = "http://user:s3cret@127.0.0.1:9/simple"
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    if origin == "spec":
        spec = make_spec(tmp_path, extra="index_url: \"http://127.0.0.1:9/simple\"\n")
    else:
        monkeypatch.setenv("PIP_INDEX_URL", url)
        spec = make_spec(tmp_path)
    echo = Recorder()
    with pytest.raises(EnvBuildError, match="creating the venv failed.*Connection refused") as info:
        build.ensure_env(spec, venv_root=tmp_path / "venvs", interpreter=interp(pythons["3.12"]), echo=echo)
    assert "127.0.0.1:9/simple" in echo.text  # uv's streamed output names the index it was given
    assert "s3cret" not in str(info.value) and "s3cret" not in echo.text
    assert not (tmp_path / "venvs" / "stage-venv" / "audit" / "env.json").exists()


# ------------------------------------------------------------------------------------- locks, order, freeze


def test_lock_that_cannot_be_taken_is_exit_4_naming_the_lock(tmp_path: Path, pythons: dict[str, Path]) -> None:
    lock = tmp_path / "venvs" / ".locks" / "stage-venv.lock"
    lock.mkdir(parents=True)  # the lock path is a folder (read-only .locks gives the same OSError for others)
    with pytest.raises(EnvBuildError, match="cannot take the build lock") as info:
        build.ensure_env(make_spec(tmp_path), venv_root=tmp_path / "venvs", interpreter=interp(pythons["3.12"]),
                        echo=Recorder())
    assert str(lock) in str(info.value) and info.value.exit_code == 4 and "\n" not in str(info.value)
    assert not (tmp_path / "venvs" / "stage-venv").exists()


@pytest.mark.slow
def test_kernel_re_registered_on_cache_hit_without_the_lock(built) -> None:
    """A machine-wide venv root the user cannot write to: the kernel still goes to the user's Jupyter dir."""
    spec, base, root = built
    kdir = kernel.kernel_dir("stage-venv", "user")
    paths.rmtree(kdir)
    lock = root / ".locks" / "stage-venv.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()  # taking the lock would now fail
    echo = Recorder()
    result = build.ensure_env(spec, venv_root=root, interpreter=base, echo=echo)
    assert result.action == "reused" and (kdir / "kernel.json").is_file()
    assert "missing or outdated in user scope: registering it" in echo.text


@pytest.mark.slow
def test_failed_post_build_check_registers_no_kernel(tmp_path: Path, pythons: dict[str, Path],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Health check right after the install: a broken result never gets a kernel, a freeze or env.json."""
    monkeypatch.setattr(build, "health_check", lambda venv_dir, record: "ipykernel can no longer be imported in it")
    with pytest.raises(EnvBuildError, match="built but unusable: ipykernel can no longer"):
        build.ensure_env(make_spec(tmp_path), venv_root=tmp_path / "venvs", interpreter=interp(pythons["3.12"]),
                        echo=Recorder())
    venv = tmp_path / "venvs" / "stage-venv"
    assert not (kernel.kernel_dir("stage-venv", "user") / "kernel.json").exists()
    assert not (venv / "audit" / "env.json").exists() and not (venv / "audit" / "pip_freeze.txt").exists()


@pytest.mark.slow
def test_from_freeze_of_the_venvs_own_audit_survives_a_failed_rebuild(built, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """A failed rebuild puts the previous venv back whole (issue 22): its freeze, its env.json, a working venv."""
    spec, base, root = built
    own = root / "stage-venv" / "audit" / "pip_freeze.txt"
    pins = own.read_text()
    before = audit.read_env(root / "stage-venv")
    monkeypatch.setenv("UV_HTTP_RETRIES", "0")
    monkeypatch.setenv("PIP_INDEX_URL", "http://127.0.0.1:9/simple")  # the rebuild fails once the old one moved
    with pytest.raises(EnvBuildError, match="failed.*the previous venv is put back as it was"):
        build.ensure_env(spec, venv_root=root, interpreter=base, from_freeze=own, echo=Recorder())
    assert own.read_text() == pins and audit.read_env(root / "stage-venv") == before
    assert build.health_check(root / "stage-venv", before) is None and not (root / "~stage-venv").exists()
    monkeypatch.delenv("PIP_INDEX_URL")
    result = build.ensure_env(spec, venv_root=root, interpreter=base, from_freeze=own, echo=Recorder())
    assert result.action == "rebuilt" and sorted(own.read_text().splitlines()) == sorted(pins.splitlines())
    assert build.health_check(root / "stage-venv", result.record) is None
