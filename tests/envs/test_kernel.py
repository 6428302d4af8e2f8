"""mlops_kit.envs.kernel: names, kernelspec content, and real kernels started through jupyter_client."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SCRIPTS, kernel_registered
from mlops_kit.core import paths
from mlops_kit.core.errors import BadInput
from mlops_kit.envs import build, kernel
from mlops_kit.envs.interpreters import inspect_interpreter
from mlops_kit.envs.spec import parse_spec


@pytest.mark.parametrize(("venv_name", "expected"), [
    ("ingest-venv", "ingest-venv"),
    ("Train_Py3.11", "train_py3.11"),
    ("python3", "venv-python3"),  # never shadow the default kernel
    ("Python", "venv-python"),
])
def test_kernel_name_for(venv_name: str, expected: str) -> None:
    assert kernel.kernel_name_for(venv_name) == expected


def test_kernelspec_posix(tmp_path: Path) -> None:
    venv = tmp_path / "v root" / "ingest"
    spec = kernel.kernelspec(venv, "Ingest (3.10)")
    assert spec["argv"] == [str(venv / "bin" / "python"), "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    assert spec["env"] == {"PATH": f"{venv / 'bin'}:${{PATH}}", "VIRTUAL_ENV": str(venv)}
    assert spec["display_name"] == "Ingest (3.10)" and spec["language"] == "python"


def test_kernelspec_windows_layout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(paths, "_PLATFORM", "win32")
    venv = tmp_path / "venvs" / "ingest"
    spec = kernel.kernelspec(venv, "Ingest")
    assert spec["argv"][0] == str(venv / "Scripts" / "python.exe")
    assert spec["env"]["PATH"] == f"{venv / 'Scripts'};${{PATH}}"


def test_kernelspec_relative_venv_becomes_absolute(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert kernel.kernelspec(Path("venvs/x"), "X")["argv"][0] == str(tmp_path / "venvs" / "x" / "bin" / "python")


def test_kernel_dir_scopes(isolated_home: Path) -> None:
    assert kernel.kernel_dir("k", "user") == isolated_home / "jupyter-data" / "kernels" / "k"
    assert kernel.kernel_dir("k", "sys-prefix") == Path(sys.prefix) / "share" / "jupyter" / "kernels" / "k"
    with pytest.raises(BadInput, match="--kernel-scope 'global'"):
        kernel.kernel_dir("k", "global")


def test_path_substitution_matches_jupyter_client(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """jupyter_client fills ${PATH} from the launcher's environment, keeping the caller's PATH after the venv."""
    import asyncio

    from jupyter_client.kernelspec import KernelSpec
    from jupyter_client.provisioning import LocalProvisioner

    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    spec = kernel.kernelspec(tmp_path / "venv", "X")
    provisioner = LocalProvisioner(kernel_id="k", kernel_spec=KernelSpec(**spec), parent=None)
    launch = asyncio.run(provisioner.pre_launch(env=dict(os.environ)))
    assert launch["env"]["PATH"] == f"{tmp_path / 'venv' / 'bin'}:/usr/bin:/bin"
    assert launch["env"]["VIRTUAL_ENV"] == str(tmp_path / "venv")


@pytest.fixture(scope="module")
def venvs_by_python(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real venvs (kernel not registered) on two Pythons, shared by this module's kernel tests."""
    from helpers import UV_CACHE, pyenv_pythons

    root = tmp_path_factory.mktemp("kernel venvs")
    out = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("UV_CACHE_DIR", str(UV_CACHE))
        for minor in ("3.8", "3.12"):
            folder = tmp_path_factory.mktemp(f"spec{minor}")
            text = (f"stage: k{minor.replace('.', '')}\npython_version: \"{minor}\"\nvenv_name: kv{minor}\n"
                    f"packages: [six]\nkernel_display_name: \"Kernel {minor}\"\n")
            (folder / "spec.yaml").write_text(text)
            spec = parse_spec(text, source=folder / "spec.yaml")
            base = inspect_interpreter(pyenv_pythons()[minor])
            assert base is not None
            out[minor] = build.ensure_env(spec, venv_root=root, interpreter=base, kernel_scope="none",
                                         echo=lambda _: None).venv_dir
    return out


def run_in_kernel(name: str, code: str) -> str:
    """Start the registered kernel ``name`` with jupyter_client, run ``code``, return its stdout."""
    from jupyter_client.manager import start_new_kernel

    manager, client = start_new_kernel(kernel_name=name, startup_timeout=120)
    out: list[str] = []

    def hook(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            out.append(msg["content"]["text"])
        elif msg["msg_type"] == "error":
            out.append("ERROR " + msg["content"]["evalue"])

    try:
        client.execute_interactive(code, output_hook=hook, timeout=120)
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)
    return "".join(out)


@pytest.mark.slow
@pytest.mark.parametrize("minor", ["3.8", "3.12"])
def test_registered_kernel_runs_in_the_venv(venvs_by_python: dict[str, Path], minor: str, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch, isolated_home: Path) -> None:
    venv = venvs_by_python[minor]
    sentinel = tmp_path / "callers-bin"
    monkeypatch.setenv("PATH", f"{sentinel}{os.pathsep}{os.environ['PATH']}")
    name = kernel.kernel_name_for(venv.name)
    kdir = kernel.register_kernel(venv, name=name, display_name=f"Kernel {minor}", scope="user")
    assert kdir == isolated_home / "jupyter-data" / "kernels" / name
    assert kernel_registered(name)
    assert kernel.registered_for(venv, name=name, display_name=f"Kernel {minor}", scope="user")
    assert not kernel.registered_for(venv, name=name, display_name="Renamed", scope="user")
    assert json.loads((kdir / "kernel.json").read_text())["argv"][0] == str(venv / "bin" / "python")
    code = ("import os, shutil, sys\nprint(sys.executable)\nprint(sys.prefix)\n"
            "print(os.environ['PATH'])\nprint(shutil.which('pip'))\nprint(os.environ['VIRTUAL_ENV'])\n"
            "!pip --version\n")
    lines = run_in_kernel(name, code).splitlines()
    assert lines[0] == str(venv / "bin" / "python")
    assert Path(lines[1]).resolve() == venv.resolve()
    path = lines[2].split(os.pathsep)
    assert path[0] == str(venv / "bin") and str(sentinel) in path  # venv first, the caller's PATH kept
    assert lines[3] == str(venv / "bin" / "pip")
    assert lines[4] == str(venv)
    assert f"{venv}" in lines[5] and f"python {minor}" in lines[5]  # `!pip` is the venv's pip


@pytest.mark.slow
def test_sys_prefix_scope_goes_to_the_toolkit_prefix(venvs_by_python: dict[str, Path], tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernel.sys, "prefix", str(tmp_path / "toolkit prefix"))
    venv = venvs_by_python["3.12"]
    kdir = kernel.register_kernel(venv, name="kv-sys", display_name="Sys prefix", scope="sys-prefix")
    assert kdir == tmp_path / "toolkit prefix" / "share" / "jupyter" / "kernels" / "kv-sys"
    assert json.loads((kdir / "kernel.json").read_text())["env"]["VIRTUAL_ENV"] == str(venv)
    assert kernel.register_kernel(venv, name="kv-none", display_name="None", scope="none") is None


@pytest.mark.slow
def test_agents_registering_one_kernel_at_once_all_succeed(venvs_by_python: dict[str, Path], tmp_path: Path) -> None:
    """Six processes of one account find the kernel outdated and register it at the same moment (eight agents'
    rehearsals did: ``ipykernel install`` deletes and copies the folder, and two at once failed with
    FileExistsError): one registers, the others find it done."""
    venv = venvs_by_python["3.12"]
    code = ("import sys; from pathlib import Path; from mlops_kit.envs import kernel; "
            "kernel.register_kernel(Path(sys.argv[1]), name='kv-many', display_name='Many', scope='user')")
    env = {**os.environ, "JUPYTER_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": str(SCRIPTS)}
    subprocess.run([sys.executable, "-c", code.replace("'Many'", "'Old'"), str(venv)], env=env, check=True)
    running = [subprocess.Popen([sys.executable, "-c", code, str(venv)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True) for _ in range(6)]
    outputs = [(process.wait(timeout=300), process.communicate()[0]) for process in running]
    assert [code for code, _ in outputs] == [0] * 6, outputs
    spec = json.loads((tmp_path / "data" / "kernels" / "kv-many" / "kernel.json").read_text(encoding="utf-8"))
    assert spec["argv"][0] == str(paths.venv_python(venv)) and spec["display_name"] == "Many"
