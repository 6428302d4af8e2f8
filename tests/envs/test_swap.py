"""mlops_kit.envs.swap: rebuilding a venv that is in use. Real venvs and a real kernel on Linux; Windows' refusal to
move a folder whose files are held open is an ``OSError`` with ``winerror`` 32 at the one rename (the seam)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import make_spec
from mlops_kit.core import paths
from mlops_kit.core.errors import EXIT_ENV_BUILD, EnvBuildError
from mlops_kit.envs import audit, build, kernel, swap
from mlops_kit.envs.interpreters import Interpreter, inspect_interpreter


def interp(path: Path) -> Interpreter:
    found = inspect_interpreter(path, source="pyenv")
    assert found is not None
    return found


def python_of(venv: Path, code: str) -> str:
    return subprocess.run([str(paths.venv_python(venv)), "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


@pytest.fixture()
def venv(tmp_path: Path, pythons: dict[str, Path]) -> tuple[Path, Interpreter]:
    """A real venv (uv, Python 3.12, six) built by the toolkit; returns (venv, interpreter)."""
    base = interp(pythons["3.12"])
    result = build.ensure_env(make_spec(tmp_path), venv_root=tmp_path / "venvs", interpreter=base,
                              kernel_scope="none", echo=lambda _line: None)
    return result.venv_dir, base


def held_by_windows(real_move):  # a stand-in for swap._move
    """Windows' answer to moving a folder one of whose files a process has open."""
    def move(source: Path, target: Path) -> None:
        if not source.name.startswith(swap.RETIRED_PREFIX):
            error = PermissionError(13, "The process cannot access the file because it is being used by another "
                                        "process", str(source))
            error.winerror = 32  # type: ignore[attr-defined] (set by Windows; absent from OSError on POSIX)
            raise error
        real_move(source, target)
    return move


@pytest.mark.slow
def test_a_venv_held_open_is_exit_4_naming_it_and_its_process_and_still_works(
        venv: tuple[Path, Interpreter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv_dir, base = venv
    before = (venv_dir / "audit" / "env.json").read_bytes()
    kernel_like = subprocess.Popen([str(paths.venv_python(venv_dir)), "-c", "import time; time.sleep(120)"])
    monkeypatch.setattr(swap, "_move", held_by_windows(swap._move))
    try:
        with pytest.raises(EnvBuildError) as info:
            build.ensure_env(make_spec(tmp_path, packages=("six", "tomli")), venv_root=venv_dir.parent,
                             interpreter=base, kernel_scope="none", echo=lambda _line: None)
    finally:
        kernel_like.kill()
        kernel_like.wait()
    message = str(info.value)
    assert info.value.exit_code == EXIT_ENV_BUILD == 4 and "\n" not in message
    assert message.startswith(f"{venv_dir} is in use and cannot be replaced now (The process cannot access the file")
    assert f"pid {kernel_like.pid} ({paths.venv_python(venv_dir)} -c" in message
    assert message.endswith("the venv is unchanged and still works")
    assert (venv_dir / "audit" / "env.json").read_bytes() == before and not swap.retired_path(venv_dir).exists()
    assert python_of(venv_dir, "import six; print(six.__name__)") == "six"  # the old venv still runs


@pytest.mark.slow
def test_rebuilding_under_a_running_kernel_on_linux(venv: tuple[Path, Interpreter], tmp_path: Path) -> None:
    """Linux lets the folder move: the running kernel keeps working, the new venv is used from then on."""
    from jupyter_client import KernelManager

    venv_dir, base = venv
    spec_dir = Path(os.environ["JUPYTER_DATA_DIR"]) / "kernels" / "swap-test"  # the test's own Jupyter folder
    spec_dir.mkdir(parents=True)
    (spec_dir / "kernel.json").write_text(json.dumps(kernel.kernelspec(venv_dir, "Swap test")))
    manager = KernelManager(kernel_name="swap-test")
    manager.start_kernel()
    client = manager.blocking_client()
    client.start_channels()
    out: list[str] = []

    def run(code: str) -> None:
        client.execute_interactive(code, timeout=120, output_hook=lambda msg: out.append(
            msg["content"].get("text", msg["content"].get("evalue", "")) if msg["msg_type"] in ("stream", "error")
            else ""))

    try:
        client.wait_for_ready(timeout=120)
        run("import six, sys; x = 41; print(sys.prefix)")
        result = build.ensure_env(make_spec(tmp_path, packages=("six", "tomli")), venv_root=venv_dir.parent,
                                  interpreter=base, kernel_scope="none", echo=lambda _line: None)
        assert result.action == "rebuilt" and not swap.retired_path(venv_dir).exists()
        run("print(x + 1, six.__name__)")
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    assert "".join(out).split() == [str(venv_dir), "42", "six"]
    assert python_of(venv_dir, "import tomli; print(tomli.__name__)") == "tomli"  # the new venv from now on


@pytest.mark.slow
@pytest.mark.parametrize("failure", [KeyboardInterrupt, EnvBuildError])
def test_an_interrupted_or_failed_rebuild_puts_the_old_venv_back(venv: tuple[Path, Interpreter], tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 failure: type[BaseException]) -> None:
    venv_dir, base = venv
    before = audit.read_env(venv_dir)

    def fail(*_args: object, **_kw: object) -> None:
        assert (venv_dir / build.MARKER).is_file() and swap.retired_path(venv_dir).is_dir()  # old one aside
        raise failure("stopped mid-install")

    monkeypatch.setattr(build, "_install", fail)
    with pytest.raises(failure):
        build.ensure_env(make_spec(tmp_path, packages=("six", "tomli")), venv_root=venv_dir.parent,
                         interpreter=base, kernel_scope="none", echo=lambda _line: None)
    assert audit.read_env(venv_dir) == before and not swap.retired_path(venv_dir).exists()
    assert build.health_check(venv_dir, before) is None


@pytest.mark.slow
def test_an_old_venv_that_cannot_be_deleted_yet_is_deleted_by_the_next_rebuild(
        venv: tuple[Path, Interpreter], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    venv_dir, base = venv
    real_rmtree = paths.rmtree
    monkeypatch.setattr(swap.paths, "rmtree", lambda path: (_ for _ in ()).throw(PermissionError(13, "in use")))
    build.ensure_env(make_spec(tmp_path, packages=("six", "tomli")), venv_root=venv_dir.parent, interpreter=base,
                     kernel_scope="none", echo=lambda _line: None)
    assert f"the previous venv {swap.retired_path(venv_dir)} could not be deleted yet" in capsys.readouterr().err
    assert (swap.retired_path(venv_dir) / build.MARKER).is_file()
    monkeypatch.setattr(swap.paths, "rmtree", real_rmtree)
    build.ensure_env(make_spec(tmp_path), venv_root=venv_dir.parent, interpreter=base, kernel_scope="none",
                     echo=lambda _line: None)
    assert not swap.retired_path(venv_dir).exists()


# --------------------------------------------------------------------------------------------- without a build


def test_a_leftover_that_is_not_ours_is_refused_untouched(tmp_path: Path) -> None:
    venv_dir = tmp_path / "stage-venv"
    (venv_dir).mkdir()
    (venv_dir / build.MARKER).write_text("{}")
    theirs = swap.retired_path(venv_dir)
    theirs.mkdir()
    (theirs / "notes.txt").write_text("mine")
    with pytest.raises(EnvBuildError, match=r"~stage-venv exists and was not left by create_venv.py"):
        swap.retire(venv_dir, marker=build.MARKER)
    assert (theirs / "notes.txt").read_text() == "mine" and (venv_dir / build.MARKER).is_file()


def test_another_failure_to_move_is_exit_4_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    venv_dir = tmp_path / "stage-venv"
    venv_dir.mkdir()
    monkeypatch.setattr(swap, "_move", lambda s, t: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(EnvBuildError, match="cannot move .* aside to rebuild it .No space left on device.; it is "
                                            "unchanged and still works"):
        swap.retire(venv_dir, marker=build.MARKER)


def test_holders_are_found_by_program_argument_or_folder(tmp_path: Path) -> None:
    folder = tmp_path / "venv"
    folder.mkdir()
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=folder)
    try:
        found = swap.holders(folder)
    finally:
        child.kill()
        child.wait()
    assert any(line.startswith(f"pid {child.pid} (") for line in found)
    assert swap.holders(tmp_path / "nobody-here") == []


def test_a_leftover_of_ours_is_cleared_and_a_linked_one_loses_only_its_link(tmp_path: Path) -> None:
    """Killed right after moving the old venv aside: no venv at the path, the old one at ~<name>."""
    venv_dir = tmp_path / "stage-venv"
    leftover = swap.retired_path(venv_dir)
    (leftover / "Lib").mkdir(parents=True)
    (leftover / build.MARKER).write_text("{}")
    swap.clear_leftover(leftover, build.MARKER)
    assert not leftover.exists()
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / build.MARKER).write_text("{}")
    leftover.symlink_to(target)  # a venv that was a link: the link goes, its target is not ours to empty
    swap.clear_leftover(leftover, build.MARKER)
    assert not os.path.lexists(leftover) and (target / build.MARKER).is_file()


def test_a_first_build_sweeps_only_a_leftover_of_ours(tmp_path: Path) -> None:
    """Not ours (no marker): left alone, and the first build goes on; ours: deleted."""
    venv_dir = tmp_path / "stage-venv"
    leftover = swap.retired_path(venv_dir)
    leftover.mkdir()
    (leftover / "notes.txt").write_text("mine")
    swap.sweep(leftover, build.MARKER)
    assert (leftover / "notes.txt").read_text() == "mine"
    (leftover / build.MARKER).write_text("{}")
    swap.sweep(leftover, build.MARKER)
    assert not leftover.exists()


def test_a_holder_is_shown_with_its_whole_program_path_and_its_arguments_cut() -> None:
    """The program's path is what says which venv is held: never cut (a deep Windows profile path is long); the
    arguments are, after 80 characters."""
    program = "C:\\Users\\svc_gocd\\AppData\\Local\\mlops_kit\\venvs\\" + "x" * 80 + "\\Scripts\\python.exe"
    assert swap._shown([program]) == program
    assert swap._shown([program, "-c", "pass"]) == program + " -c pass"
    shown = swap._shown([program, "-m", "ipykernel_launcher", "-f", "C:\\" + "k" * 200 + ".json"])
    assert shown.startswith(program + " -m ipykernel_launcher -f C:\\kkk") and shown.endswith("...")
    assert len(shown) == len(program) + 1 + 80
